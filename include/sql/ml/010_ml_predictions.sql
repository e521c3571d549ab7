-- Batch predictions of a registered model (ml_batch_score). A partition is (model, dataset, score
-- date): a re-run deletes and re-copies it in one transaction, so a date never holds two sets.
CREATE TABLE IF NOT EXISTS ml_predictions (
    model_name     text NOT NULL,
    dataset        text NOT NULL,
    score_date     date NOT NULL,
    row_key        text NOT NULL,
    model_version  integer NOT NULL,
    prediction     text NOT NULL,
    dag_id         text NOT NULL,
    run_id         text NOT NULL,
    scored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, dataset, score_date, row_key)
);
CREATE INDEX IF NOT EXISTS ml_predictions_version_idx ON ml_predictions (model_name, model_version);
