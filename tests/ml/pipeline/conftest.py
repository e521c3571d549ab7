"""Fixtures of the pipeline tests: data folders, specs written to disk, a JSON API, an Airflow context.

Everything is real: specs are YAML files checked by the real loader, suites run in Great
Expectations, rows land in the session's PostgreSQL warehouse, the JSON API is a local HTTP server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TRIBUTARY_DATA_DIR (landing, datasets, staging) for every test."""
    folder = tmp_path / "data"
    monkeypatch.setenv("TRIBUTARY_DATA_DIR", str(folder))
    monkeypatch.delenv("TRIBUTARY_LANDING_DIR", raising=False)
    return folder


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    monkeypatch.setenv("TRIBUTARY_REPORTS_DIR", str(folder))
    return folder


# --------------------------------------------------------------------------- specs on disk
SENSOR_SUITE = {
    "name": "sensors",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "sensor"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "sensor", "value_set": ["a", "b", "c"]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "reading", "min_value": 0,
                                                                   "max_value": 100}},
    ],
}


def _sensor_spec(name: str = "sensors", **overrides: Any) -> dict[str, Any]:
    """A spec with every column type, a natural key, missing values and features (sources vary per test)."""
    spec: dict[str, Any] = {
        "name": name,
        "description": "Sensor readings used by the pipeline tests.",
        "schedule": None,
        "source": {"kind": "files", "path": f"{name}/{{{{ partition }}}}/*.csv", "format": "csv"},
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "sensor", "type": "string"},
            {"name": "reading", "type": "float"},
            {"name": "day", "type": "date"},
            {"name": "ok", "type": "bool"},
        ],
        "key": ["id"],
        "validation": {"suite": "suite.json", "max_failure_rate": 0.5},
        "processing": {
            "batch_rows": 1000,
            "missing": {"default": "keep", "columns": {"reading": "mean", "ok": {"value": True}}},
            "features": [
                {"name": "reading_log", "op": "log1p", "column": "reading"},
                {"name": "reading_z", "op": "zscore", "column": "reading"},
                {"name": "sensor_name", "op": "map", "column": "sensor", "mapping": {"a": "alpha", "b": "beta"}},
            ],
        },
        "storage": {"table": f"ml_dataset_{name}"},
    }
    for key, value in overrides.items():
        if key != "source" and isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@pytest.fixture
def sensor_spec() -> Callable[..., dict[str, Any]]:
    """Build a spec document: ``sensor_spec(name, **top_level_overrides)``."""
    return _sensor_spec


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (and its suite) as YAML under ``tmp_path/pipelines``; returns the file."""

    def write(document: dict[str, Any] | str, file_name: str | None = None,
              suite: dict[str, Any] | None = None) -> Path:
        folder = tmp_path / "pipelines"
        folder.mkdir(exist_ok=True)
        (folder / "suite.json").write_text(json.dumps(suite or SENSOR_SUITE))
        name = file_name or (f"{document['name']}.yaml" if isinstance(document, dict) else "spec.yaml")
        path = folder / name
        path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
        return path

    return write


@pytest.fixture
def load(write_spec: Callable[..., Path]) -> Callable[..., Any]:
    """Write a spec and load it through the real checks; returns ``PipelineSpec``."""
    from tributary.ml.pipeline.specs import load_spec

    def _load(document: dict[str, Any], suite: dict[str, Any] | None = None) -> Any:
        return load_spec(write_spec(document, suite=suite))

    return _load


@pytest.fixture
def dataset_table(pg: Any) -> Iterator[Callable[[Any], str]]:
    """Create the warehouse table of a test spec, as its migration would (dropped afterwards)."""
    from tributary.ml.pipeline.specs import render_ddl

    created: list[str] = []

    def create(spec: Any) -> str:
        data = spec.as_dict() if hasattr(spec, "as_dict") else spec
        with pg.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {data['storage']['table']}")
            cur.execute(render_ddl(data))
        pg.commit()
        created.append(data["storage"]["table"])
        return data["storage"]["table"]

    yield create
    with pg.cursor() as cur:
        for table in created:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
    pg.commit()


# --------------------------------------------------------------------------- operator context
@pytest.fixture
def make_context() -> Callable[..., dict[str, Any]]:
    """What Airflow hands ``execute()``: ti, run id, logical date, params, outlet events."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    def context(task_id: str, *, dag_id: str = "ml_pipeline_test", run_id: str | None = None,
                logical_date: datetime = datetime(2026, 3, 1, tzinfo=UTC), params: dict[str, Any] | None = None,
                triggering_asset_events: dict[Any, Any] | None = None) -> dict[str, Any]:
        run_id = run_id or f"manual__{logical_date.isoformat()}"
        ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=1)
        return {"ti": ti, "run_id": run_id, "logical_date": logical_date, "ds": logical_date.strftime("%Y-%m-%d"),
                "data_interval_start": logical_date, "data_interval_end": logical_date + timedelta(days=1),
                "params": params or {}, "outlet_events": OutletEventAccessors(),
                "triggering_asset_events": triggering_asset_events or {}}

    return context


# --------------------------------------------------------------------------- a JSON API
class JsonApi:
    """Serves ``records`` page by page at ``/items`` with page, offset, cursor and Link-header paging."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.requests: list[str] = []
        self.fail_next: list[int] = []  # statuses to answer before serving normally
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests.append(self.path)
                if api.fail_next:
                    self._send(api.fail_next.pop(0), {"error": "injected"})
                    return
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/items/page":
                    size, page = int(query.get("per_page", 10)), int(query.get("page", 1))
                    self._send(200, {"data": api.records[(page - 1) * size: page * size], "page": page})
                elif parts.path == "/items/offset":
                    offset, limit = int(query.get("offset", 0)), int(query.get("limit", 10))
                    self._send(200, {"results": {"items": api.records[offset: offset + limit]}})
                elif parts.path == "/items/cursor":
                    start = int(query.get("cursor", 0))
                    end = start + 7
                    following = str(end) if end < len(api.records) else None
                    self._send(200, {"items": api.records[start:end], "meta": {"next": following}})
                elif parts.path == "/items/link":
                    start = int(query.get("from", 0))
                    end = start + 9
                    headers = {"Link": f'</items/link?from={end}>; rel="next"'} if end < len(api.records) else {}
                    self._send(200, api.records[start:end], headers)
                elif parts.path == "/items/secret":
                    if self.headers.get("Authorization") != "Bearer s3cret-token":
                        self._send(401, {"error": "unauthorized"})
                    else:
                        self._send(200, {"data": api.records})
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: shutdown() waits for the serving loop to notice (0.5 s per test by default).
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def json_api() -> Iterator[JsonApi]:
    records = [{"id": i, "sensor": "abc"[i % 3], "reading": i * 1.5, "day": "2026-03-01", "ok": i % 2 == 0}
               for i in range(1, 31)]
    api = JsonApi(records)
    yield api
    api.close()


# --------------------------------------------------------------------------- Airflow metadata DB
@pytest.fixture(scope="module")
def airflow_dags(private_dag_bundle: Any) -> Path:
    """A fresh metadata DB and a DAG bundle holding a copy of dags/ml/ml_pipelines.py (``dag.test()`` syncs
    the bundle that holds the DAG; a private one keeps other teams' DAG files out of these tests)."""
    return private_dag_bundle(ROOT / "dags" / "ml" / "ml_pipelines.py")
