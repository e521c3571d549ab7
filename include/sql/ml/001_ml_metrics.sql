-- Per-task ML metrics (pipeline rows in/out/quarantined, durations, data-quality score, model
-- metrics). One row per (dag, run, task, map index, metric): a retried task overwrites its values.
CREATE TABLE IF NOT EXISTS ml_metrics (
    dag_id       text NOT NULL,
    run_id       text NOT NULL,
    task_id      text NOT NULL,
    map_index    integer NOT NULL DEFAULT -1,
    metric       text NOT NULL,
    value        double precision NOT NULL,
    tags         jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, run_id, task_id, map_index, metric)
);
CREATE INDEX IF NOT EXISTS ml_metrics_metric_idx ON ml_metrics (metric, recorded_at);
