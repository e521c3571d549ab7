"""Integration health: find the configured Connections and test each one.

Discovery lists Connections through Airflow's REST API (tasks have no metadata-DB access in
Airflow 3) plus ``AIRFLOW_CONN_*`` environment Connections, and keeps every one whose hook can be
tested. A Connection opts out with ``{"health_check": false}`` in its extra.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit

from tributary.core.errors import PermanentError, classify
from tributary.core.hooks import TributaryHook
from tributary.core.masking import mask_text
from tributary.platform import SYSTEM
from tributary.storage import WAREHOUSE_CONN_ID


def _opted_out(extra: Any) -> bool:
    if isinstance(extra, str) and extra.strip():
        try:
            extra = json.loads(extra)
        except ValueError:
            return False
    return isinstance(extra, Mapping) and extra.get("health_check") is False


def env_connections(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Connections defined as ``AIRFLOW_CONN_<ID>`` (URI or JSON)."""
    found = []
    for key, value in environ.items():
        if not key.startswith("AIRFLOW_CONN_") or not value:
            continue
        conn_id = key.removeprefix("AIRFLOW_CONN_").lower()
        if value.lstrip().startswith("{"):
            try:
                doc = json.loads(value)
            except ValueError:
                continue
            conn_type, extra = doc.get("conn_type"), doc.get("extra")
        else:
            conn_type, extra = urlsplit(value).scheme.replace("-", "_"), None
        if conn_type:
            found.append({"connection_id": conn_id, "conn_type": conn_type, "extra": extra})
    return found


def checkable_types() -> set[str]:
    """Connection types whose hook can be tested (as the provider registry declares)."""
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    return {conn_type for conn_type, info in ProvidersManagerTaskRuntime().hooks.items()
            if info is not None and info.connection_testable}


def select_connections(candidates: Iterable[Mapping[str, Any]], testable: set[str]) -> list[dict[str, str]]:
    chosen: dict[str, dict[str, str]] = {}
    for conn in candidates:
        conn_id, conn_type = conn["connection_id"], conn.get("conn_type") or ""
        if conn_type in testable and not _opted_out(conn.get("extra")):
            chosen.setdefault(conn_id, {"conn_id": conn_id, "conn_type": conn_type})
    return sorted(chosen.values(), key=lambda c: c["conn_id"])


def discover(api_conn_id: str = "tributary_airflow_api") -> list[dict[str, str]]:
    from tributary.platform.hook import AirflowApiHook

    hook = AirflowApiHook(api_conn_id)
    listed = hook.read(hook.get_conn().list_connections, "list_connections")
    return select_connections([*listed, *env_connections(os.environ)], checkable_types())


def _exercise(hook: Any) -> str:
    """Run the hook's check and let a failure surface as the original exception, for classify()."""
    if isinstance(hook, TributaryHook):
        return hook.probe()
    get_records = getattr(hook, "get_records", None)
    if callable(get_records) and hasattr(hook, "get_conn"):  # SQL hooks: a real round trip
        with closing(hook.get_conn()) as conn, closing(conn.cursor()) as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        return "SQL round trip ok"
    ok, message = hook.test_connection()
    if not ok:
        raise PermanentError(message, reason="test_connection")
    return str(message)


def check_connection(conn_id: str, conn_type: str) -> tuple[dict[str, Any], BaseException | None]:
    """Test one Connection; returns the result row and the exception (if it failed)."""
    from airflow.sdk import BaseHook

    started = time.perf_counter()
    error: BaseException | None = None
    try:
        hook = BaseHook.get_connection(conn_id).get_hook()
        message = _exercise(hook)
    except Exception as exc:
        error = exc
        message = mask_text(f"{type(exc).__name__}: {exc}")
    return ({
        "conn_id": conn_id,
        "conn_type": conn_type,
        "ok": error is None,
        "error_class": str(classify(error).error_class) if error else None,
        "message": message[:500],
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }, error)


def render_table(results: list[Mapping[str, Any]]) -> str:
    header = ("connection", "type", "status", "class", "ms", "message")
    rows = [(r["conn_id"], r["conn_type"], "OK" if r["ok"] else "FAIL", r.get("error_class") or "-",
             f"{r['latency_ms']:.0f}", r["message"]) for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*map(str, row)) for row in rows]
    return "\n".join(lines)


def restrict(found: list[dict[str, str]], only: list[str]) -> list[dict[str, str]]:
    """Keep the requested Connection ids; asking for one that is not configured is an error."""
    if not only:
        return found
    known = {c["conn_id"] for c in found}
    unknown = sorted(set(only) - known)
    if unknown:
        raise PermanentError(f"not configured or not testable: {', '.join(unknown)}", reason="unknown_conn_id")
    return [c for c in found if c["conn_id"] in set(only)]


def publish_report(run_id: str, results: list[Mapping[str, Any]],
                   warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict[str, Any]:
    """Log the table, store the rows (idempotent per run and Connection), return the summary."""
    import logging

    from tributary.storage.warehouse import WarehouseHook

    results = sorted((dict(r) for r in results if r), key=lambda r: r["conn_id"])
    logging.getLogger(__name__).info("integration health (%d connections):\n%s", len(results),
                                     render_table(results))
    with WarehouseHook(warehouse_conn_id).session() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO integration_health (run_id, conn_id, conn_type, ok, error_class, message,"
            " latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, conn_id) DO UPDATE"
            " SET ok = EXCLUDED.ok, error_class = EXCLUDED.error_class, message = EXCLUDED.message,"
            " latency_ms = EXCLUDED.latency_ms, checked_at = now()",
            [(run_id, r["conn_id"], r["conn_type"], r["ok"], r["error_class"], r["message"],
              r["latency_ms"]) for r in results],
        )
    unhealthy = [r["conn_id"] for r in results if not r["ok"]]
    return {"total": len(results), "healthy": len(results) - len(unhealthy), "unhealthy": unhealthy,
            "results": results}


def raise_if_unhealthy(summary: Mapping[str, Any]) -> None:
    """Fail the report so the run's state tells the truth; each unhealthy Connection was already
    classified and alerted by its own check task."""
    unhealthy = summary["unhealthy"]
    if unhealthy:
        raise PermanentError(f"{len(unhealthy)} of {summary['total']} connections unhealthy: "
                             f"{', '.join(unhealthy)}", system=SYSTEM, reason="unhealthy_connections")
