"""OpenLineage dataset names for what the pipeline steps read and write.

Datasets travel between tasks (in the XCom manifest) as plain ``{"namespace", "name"}`` dicts and
become ``openlineage.client.event_v2.Dataset`` objects only in ``get_openlineage_facets_on_complete``.
Naming follows the OpenLineage conventions: files ``file`` + absolute path; PostgreSQL
``postgres://host:port`` + ``database.schema.table``; HTTP ``scheme://host[:port]`` + path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LineageRef = dict[str, str]


def ref(namespace: str, name: str) -> LineageRef:
    return {"namespace": namespace, "name": name}


def file_ref(path: Path | str) -> LineageRef:
    return ref("file", str(Path(path).resolve()))


def http_ref(url: str) -> LineageRef:
    parts = urlsplit(url)
    return ref(f"{parts.scheme}://{parts.netloc}", parts.path or "/")


def postgres_location(conn_id: str) -> tuple[str, str]:
    """(namespace, database) of a Postgres Connection, e.g. ``("postgres://127.0.0.1:5432", "tributary")``."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or "localhost"
    if host.startswith("/"):  # a socket directory (the embedded warehouse)
        host = "localhost"
    return f"postgres://{host}:{conn.port or 5432}", conn.schema or "postgres"


def postgres_ref(conn_id: str, table: str, schema: str = "public") -> LineageRef:
    namespace, database = postgres_location(conn_id)
    if "." in table:
        schema, table = table.split(".", 1)
    return ref(namespace, f"{database}.{schema}.{table}")


def sql_input_refs(conn_id: str, query: str) -> list[LineageRef]:
    """The tables a SELECT reads, found by the OpenLineage SQL parser (bind parameters blanked out)."""
    try:
        import openlineage_sql
    except ImportError:  # the parser ships with the OpenLineage provider; without it, no table lineage
        return []
    parsed = openlineage_sql.parse([re.sub(r"%\((\w+)\)s", "NULL", query)], dialect="postgres")
    namespace, database = postgres_location(conn_id)
    return [ref(namespace, f"{table.database or database}.{table.schema or 'public'}.{table.name}")
            for table in parsed.in_tables]


def unique(refs: Iterable[Mapping[str, Any]]) -> list[LineageRef]:
    seen: dict[tuple[str, str], LineageRef] = {}
    for item in refs:
        seen.setdefault((item["namespace"], item["name"]), {"namespace": item["namespace"], "name": item["name"]})
    return list(seen.values())


def to_operator_lineage(inputs: Iterable[Mapping[str, Any]], outputs: Iterable[Mapping[str, Any]]) -> Any:
    """``OperatorLineage`` of the OpenLineage provider for these refs."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset

    return OperatorLineage(
        inputs=[Dataset(namespace=r["namespace"], name=r["name"]) for r in unique(inputs)],
        outputs=[Dataset(namespace=r["namespace"], name=r["name"]) for r in unique(outputs)],
    )
