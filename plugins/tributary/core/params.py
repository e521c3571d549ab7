"""Params shared by the REST-triggerable DAGs. Imported at DAG parse time: only ``airflow.sdk``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

# An Airflow conn_id: what the Connections form and the REST API accept, and nothing a path or a
# shell could misread.
CONN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,250}$"
# Marks a (possibly nested) param schema whose value chooses a Connection: tributary.core.conn_policy
# checks every such value against the DAG's allow-list before a task runs. JSON schema validators
# and the Trigger form ignore unknown keywords.
CONNECTION_MARKER = "x-tributary-connection"


def conn_id_schema(default: str) -> dict[str, Any]:
    """JSON schema of a Connection id nested in an object param (e.g. a data source's ``conn_id``)."""
    return {"type": "string", "pattern": CONN_ID_PATTERN, "default": default, CONNECTION_MARKER: True}


def conn_id_param(default: str, description: str | None = None, *, title: str | None = None) -> Param:
    """A typed ``conn_id`` param: a string Airflow accepts as a Connection id, defaulting to ``default``.

    A run may choose only the Connections the DAG is allowed to use (``core.conn_policy``)."""
    extra: dict[str, Any] = {"title": title} if title else {}
    extra[CONNECTION_MARKER] = True
    return Param(default, type="string", pattern=CONN_ID_PATTERN,
                 description=description or f"Airflow Connection to use (default {default}).", **extra)
