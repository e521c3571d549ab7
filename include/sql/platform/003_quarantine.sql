-- Records that failed validation, set aside with the reason (data-class errors).
-- Keyed by source, partition and the record's natural key: quarantining again on a re-run
-- replaces the row instead of adding a second one.
CREATE TABLE IF NOT EXISTS quarantine (
    source          text NOT NULL,
    partition_key   text NOT NULL DEFAULT '',
    record_key      text NOT NULL,
    reason          text NOT NULL,
    record          jsonb NOT NULL,
    dag_id          text,
    run_id          text,
    task_id         text,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, partition_key, record_key)
);
CREATE INDEX IF NOT EXISTS quarantine_at_idx ON quarantine (quarantined_at);
