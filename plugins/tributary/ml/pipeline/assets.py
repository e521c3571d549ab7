"""Where pipeline data lives, and the Airflow Assets of the stored datasets.

Folders (``TRIBUTARY_DATA_DIR``, default ``<project>/data``; it must be shared by all workers)::

    landing/                         files dropped for ``kind: files`` sources (TRIBUTARY_LANDING_DIR)
    datasets/<name>/ds=YYYY-MM-DD/   the stored Parquet dataset, hive-partitioned by logical date
    _work/<name>/<ds>/<run>/         per-run staging between tasks (removed after store)

Assets (URIs do not depend on the deployment, so other DAGs can name them literally):

* ``tributary://datasets/<name>`` (name ``ml_dataset_<name>_parquet``): the Parquet dataset;
* ``tributary://warehouse/public/<table>`` (name ``<table>``, by default ``ml_dataset_<name>``): the table.

Every event carries ``extra = {"partition": "YYYY-MM-DD", "rows": n, "path" or "table": ...}``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from airflow.sdk import Asset

_PROJECT = Path(__file__).resolve().parents[4]


def data_dir() -> Path:
    return Path(os.environ.get("TRIBUTARY_DATA_DIR") or _PROJECT / "data")


def landing_dir() -> Path:
    return Path(os.environ.get("TRIBUTARY_LANDING_DIR") or data_dir() / "landing")


def dataset_dir(name: str) -> Path:
    return data_dir() / "datasets" / name


def partition_dir(name: str, partition: str) -> Path:
    return dataset_dir(name) / f"ds={partition}"


def work_root(name: str) -> Path:
    return data_dir() / "_work" / name


def run_slug(run_id: str) -> str:
    """A run id as a folder name (``manual__2026-01-02T00:00:00+00:00`` has ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_") or "run"


def work_dir(name: str, partition: str, run_id: str) -> Path:
    return work_root(name) / partition / run_slug(run_id)


def parquet_asset_uri(name: str) -> str:
    return f"tributary://datasets/{name}"


def table_asset_uri(table: str) -> str:
    return f"tributary://warehouse/public/{table}"


def parquet_asset(name: str) -> Asset:
    """The stored Parquet dataset of pipeline ``name``."""
    return Asset(name=f"ml_dataset_{name}_parquet", uri=parquet_asset_uri(name))


def table_asset(table: str) -> Asset:
    """A warehouse table written by a pipeline (``ml_dataset_<name>`` unless the spec names another)."""
    return Asset(name=table, uri=table_asset_uri(table))
