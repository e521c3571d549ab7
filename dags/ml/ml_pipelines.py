"""
### ML data pipelines (generated from specs)

One DAG per pipeline spec in `include/pipelines/*.yaml` (or `TRIBUTARY_PIPELINES_DIR`):

* `ml_pipeline_<name>`: collect -> validate (Great Expectations, quarantine) -> process -> store
  (hive-partitioned Parquet + PostgreSQL table, both Airflow Assets);
* `ml_pipeline_<name>_analysis`: statistics and drift, scheduled on the stored Parquet Asset.

Specs are checked against a JSON schema when this file is parsed. A broken spec produces no DAG
here; `_pipeline_spec_errors.py` reports it as an import error naming the file and the field, so
the other pipelines keep running. See docs/ml-pipelines.md.
"""

from __future__ import annotations

from tributary.ml.pipeline.factory import build_dags

globals().update(build_dags())
