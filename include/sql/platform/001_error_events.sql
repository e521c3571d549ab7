-- Outcome events of task tries (failure / retry / success), written by tributary.core.callbacks.
-- event_id is derived from (dag, run, task, map index, try, kind): a callback that runs twice
-- writes one row.
CREATE TABLE IF NOT EXISTS error_events (
    event_id        uuid PRIMARY KEY,
    occurred_at     timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('failure', 'retry', 'success')),
    error_class     text CHECK (error_class IN ('transient', 'permanent', 'data', 'security')),
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    reason          text,
    system          text,
    dag_id          text NOT NULL,
    task_id         text,
    run_id          text,
    map_index       integer,
    try_number      integer,
    exception_type  text,
    message         text,
    alert_status    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS error_events_occurred_at_idx ON error_events (occurred_at);
CREATE INDEX IF NOT EXISTS error_events_class_idx ON error_events (error_class, occurred_at);
CREATE INDEX IF NOT EXISTS error_events_dag_idx ON error_events (dag_id, occurred_at);
