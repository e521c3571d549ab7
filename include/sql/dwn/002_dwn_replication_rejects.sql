-- DWN replication rejects (tributary.dwn.replication): a source message that failed verification is
-- never written to the target, and the checkpoint moves past it so the rest of the log replicates.
-- It is recorded here with its reason and retried by every later run (read again from the source,
-- verified again) until it is written ('replicated'), gone from the source ('gone'), or a person
-- sets status 'dismissed'.
CREATE TABLE IF NOT EXISTS dwn_replication_rejects (
    tenant          text        NOT NULL,
    protocol        text        NOT NULL,
    source          text        NOT NULL,
    target          text        NOT NULL,
    message_cid     text        NOT NULL,
    record_id       text,                    -- RecordsWrite / RecordsDelete: the record it belongs to
    reason          text        NOT NULL,    -- classified reason (e.g. dwn:signature, dwn:data_cid)
    error           text        NOT NULL,    -- the verification error, masked
    status          text        NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'replicated', 'gone', 'dismissed')),
    attempts        integer     NOT NULL DEFAULT 1,  -- verifications that failed (first one included)
    first_run       text,                    -- dag_run_id that first rejected it
    last_run        text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_attempt    timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    PRIMARY KEY (tenant, protocol, source, target, message_cid)
);
CREATE INDEX IF NOT EXISTS dwn_replication_rejects_open
    ON dwn_replication_rejects (tenant, protocol, source, target, first_seen) WHERE status = 'open';

-- per run: rejects retried, and how many of them were written this time
ALTER TABLE dwn_replication_runs ADD COLUMN IF NOT EXISTS retried integer NOT NULL DEFAULT 0;
ALTER TABLE dwn_replication_runs ADD COLUMN IF NOT EXISTS recovered integer NOT NULL DEFAULT 0;
