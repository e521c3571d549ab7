-- DWN replication (dags/web5/dwn_data_replication.py): one checkpoint row per (tenant, protocol,
-- source, target), written after every batch, and one row per run with its counts and lag.
CREATE TABLE IF NOT EXISTS dwn_replication_state (
    tenant          text NOT NULL,
    protocol        text NOT NULL,
    source          text NOT NULL,           -- source DWN URL
    target          text NOT NULL,           -- target DWN URL
    -- the source event-log cursor {messageCid, value} the current pass started from (null: the beginning)
    cursor          jsonb,
    -- last message CID applied in the current pass (null when the pass is complete)
    resume_after    text,
    -- newest source messageTimestamp replicated: lower bound of the bulk RecordsQuery prefetch
    source_timestamp text,
    last_run        text,                    -- dag_run_id (or caller tag) of the last writer
    last_batch_at   timestamptz,
    written         bigint NOT NULL DEFAULT 0,   -- totals over all runs
    deleted         bigint NOT NULL DEFAULT 0,
    skipped         bigint NOT NULL DEFAULT 0,   -- conflicts lost to newest-wins, already present, gone
    rejected        bigint NOT NULL DEFAULT 0,   -- failed signature verification (never written)
    lag_seconds     double precision,            -- now - messageTimestamp of the newest replicated message
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, protocol, source, target)
);

CREATE TABLE IF NOT EXISTS dwn_replication_runs (
    run_id          text NOT NULL,
    tenant          text NOT NULL,
    protocol        text NOT NULL,
    source          text NOT NULL,
    target          text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    batches         integer NOT NULL DEFAULT 0,
    scanned         integer NOT NULL DEFAULT 0,
    written         integer NOT NULL DEFAULT 0,
    deleted         integer NOT NULL DEFAULT 0,
    skipped         integer NOT NULL DEFAULT 0,
    rejected        integer NOT NULL DEFAULT 0,
    lag_seconds     double precision,
    error           text,
    PRIMARY KEY (run_id, tenant, protocol, source, target)
);

CREATE INDEX IF NOT EXISTS dwn_replication_runs_tenant ON dwn_replication_runs (tenant, started_at DESC);
