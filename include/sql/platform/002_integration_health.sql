-- One row per connection test made by the integration_health DAG.
CREATE TABLE IF NOT EXISTS integration_health (
    run_id       text NOT NULL,
    conn_id      text NOT NULL,
    conn_type    text NOT NULL,
    ok           boolean NOT NULL,
    error_class  text,
    message      text NOT NULL,
    latency_ms   double precision NOT NULL,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, conn_id)
);
CREATE INDEX IF NOT EXISTS integration_health_checked_idx ON integration_health (checked_at);
