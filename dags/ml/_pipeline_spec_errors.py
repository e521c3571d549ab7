"""
### ML pipeline spec errors (no DAG)

Companion of `ml_pipelines.py`: raises an Airflow DAG import error listing every broken pipeline
spec in `include/pipelines/` with its file and field, and defines no DAG. Airflow marks all DAGs of
a file that raised as broken, so the error is raised here and not in `ml_pipelines.py`: a bad spec
shows up in the UI's import errors while every other pipeline keeps being scheduled.
"""

from __future__ import annotations

from tributary.ml.pipeline.factory import raise_for_broken_specs

raise_for_broken_specs()
