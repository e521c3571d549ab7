"""Params shared by the REST-triggerable DAGs. Imported at DAG parse time: only ``airflow.sdk``."""

from __future__ import annotations

from airflow.sdk import Param

# An Airflow conn_id: what the Connections form and the REST API accept, and nothing a path or a
# shell could misread.
CONN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,250}$"


def conn_id_param(default: str, description: str | None = None, *, title: str | None = None) -> Param:
    """A typed ``conn_id`` param: a string Airflow accepts as a Connection id, defaulting to ``default``."""
    extra = {"title": title} if title else {}
    return Param(default, type="string", pattern=CONN_ID_PATTERN,
                 description=description or f"Airflow Connection to use (default {default}).", **extra)
