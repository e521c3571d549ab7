"""Data pipelines generated from YAML specs: collect -> validate -> process -> store -> analyze.

* ``specs``       the spec format (a JSON schema), loading and the checks that name the broken field
* ``assets``      where the data lives (``TRIBUTARY_DATA_DIR``) and the Airflow Assets of stored datasets
* ``sources``     landing files (CSV, JSON lines, Parquet), package files, HTTP JSON APIs, PostgreSQL
* ``staging``     run-scoped Parquet files that carry batches from one task to the next
* ``validation``  typing + a Great Expectations suite per batch, quarantine, the validation report
* ``processing``  typing, dedupe, missing values and features, in bounded batches
* ``storage``     the hive-partitioned Parquet dataset and the PostgreSQL table (COPY + upsert)
* ``analysis``    summary statistics and drift (PSI, KS) against the previous partition, with charts
* ``operators``   the Airflow operators of each step (metrics, lineage, error classification)
* ``factory``     builds the DAGs of every spec for ``dags/ml/ml_pipelines.py``

Only ``specs``, ``assets``, ``operators`` and ``factory`` are imported when a DAG file is parsed; they
import nothing heavy at module level.
"""
