"""Shared fixtures: an isolated AIRFLOW_HOME, a real PostgreSQL warehouse, local HTTP/SMTP sinks.

PostgreSQL: the server on 127.0.0.1:5432 when one answers (CI machines run one), otherwise a
private cluster started with pgserver. Each test session gets its own database, dropped at the end.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Before anything imports Airflow: a private AIRFLOW_HOME, no examples, no lineage transport.
_HOME = Path(tempfile.mkdtemp(prefix="tributary-test-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
os.environ["TRIBUTARY_STATE_DIR"] = str(_HOME / "tributary")
os.environ["TRIBUTARY_REPORTS_DIR"] = str(_HOME / "reports")
os.environ.pop("AIRFLOW_VAR_TRIBUTARY_ALERTING", None)
os.environ.pop("TRIBUTARY_ALERTING", None)

import pytest  # noqa: E402

from tributary.storage.embedded import WarehouseLocation, drop_database, provision, stop_embedded  # noqa: E402

# --------------------------------------------------------------------------- what each test needs
# Every test says what it needs with one of these markers (registered in pyproject.toml), so that
# `pytest -m unit` is a fast run that needs nothing but this process. Collection fails otherwise.
NEEDS = ("unit", "postgres", "devnet", "e2e")
# Fixtures that reach outside the process. ``warehouse`` sits under every PostgreSQL fixture (pg, pg3,
# evm_env, lifecycle_env, private_dag_bundle, ...); the others start a chain, a Web5 peer or a devnet tool.
POSTGRES_FIXTURES = frozenset({"warehouse"})
DEVNET_FIXTURES = frozenset({"regtest_node", "private_node", "devnet", "devnet_process", "anvil", "stacks_devnet",
                             "reference", "did_devnet", "dwn_peers", "dwn_server"})


def marker_problems(item: pytest.Item) -> list[str]:
    """Why ``item``'s need markers are missing or disagree with the fixtures it requests (empty if fine)."""
    marks = {mark.name for mark in item.iter_markers()} & set(NEEDS)
    if not marks:
        return [f"{item.nodeid}: no marker says what it needs; add one of {', '.join(NEEDS)} (pytestmark or decorator)"]
    fixtures = set(getattr(item, "fixturenames", ()))
    problems = []
    if "unit" in marks and len(marks) > 1:
        others = ", ".join(sorted(marks - {"unit"}))
        problems.append(f"{item.nodeid}: marked unit and {others}, but unit means it needs nothing")
    for needed, found in (("postgres", fixtures & POSTGRES_FIXTURES), ("devnet", fixtures & DEVNET_FIXTURES)):
        if found and needed not in marks:
            problems.append(f"{item.nodeid}: uses {', '.join(sorted(found))} (itself or through a fixture) "
                            f"but is not marked {needed}")
    return problems


@pytest.hookimpl(tryfirst=True)  # before -m deselects: a run of one group still checks every collected test
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = [problem for item in items for problem in marker_problems(item)]
    if problems:
        raise pytest.UsageError("tests whose markers are missing or wrong:\n  " + "\n  ".join(problems))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure() -> None:
    # The run is over and the process exits: without this, the interpreter's last garbage collections
    # walk every object left (~850k after a unit run: Airflow, MLflow, pandas...), 5 s of a 55 s run.
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _stop_private_postgres() -> Iterator[None]:
    """Stop pgserver clusters while pytest's logging is still open (not from an atexit hook)."""
    yield
    stop_embedded()


@pytest.fixture(scope="session")
def warehouse() -> Iterator[WarehouseLocation]:
    """A fresh warehouse database, exposed to hooks as the ``tributary_warehouse`` Connection."""
    name = f"tributary_test_{uuid.uuid4().hex[:8]}"
    location = provision(_HOME / "tributary", database=name)
    previous = {k: os.environ.get(k) for k in location.connection_env()}
    os.environ.update(location.connection_env())
    yield location
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    drop_database(location)


@pytest.fixture
def pg(warehouse: WarehouseLocation) -> Iterator[Any]:
    """A psycopg2 connection to the test warehouse, schema applied."""
    import psycopg2

    from tributary.storage.warehouse import apply_migrations

    conn = psycopg2.connect(warehouse.dsn())
    apply_migrations(conn)
    yield conn
    conn.rollback()
    conn.close()


class HttpSink:
    """A local HTTP server that records requests; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sink.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                self.send_response(sink.status if self.command == "POST" else 405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_HEAD = do_GET = _answer

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        # A short poll: shutdown() waits for the serving loop to notice, 0.5 s per sink by default.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def posted_json(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def session_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture
def webhook_conn(http_sink: HttpSink, monkeypatch: pytest.MonkeyPatch) -> str:
    """``tributary_alert_webhook`` pointing at the local sink (an AIRFLOW_CONN_* Connection)."""
    monkeypatch.setenv("AIRFLOW_CONN_TRIBUTARY_ALERT_WEBHOOK",
                       json.dumps({"conn_type": "tributary_webhook", "host": http_sink.url,
                                   "password": "sink-token-123", "extra": {"format": "json"}}))
    return "tributary_alert_webhook"


# --------------------------------------------------------------------------- dag.test(): metadata DB and bundles
_BUNDLE_KEY = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
PROJECT_DAGS = Path(__file__).resolve().parents[1] / "dags"


def _bundle_config(name: str, folder: Path) -> str:
    return json.dumps([{"name": name, "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(folder), "refresh_interval": 0}}])


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata DB in the tests' AIRFLOW_HOME (once per session)."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def project_dags(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``dag.test()`` syncs the DAG's bundle to the metadata DB: make the project's dags/ folder that bundle."""
    monkeypatch.setenv(_BUNDLE_KEY, _bundle_config("tributary-project-dags", PROJECT_DAGS))
    return PROJECT_DAGS


@pytest.fixture(scope="module")
def private_dag_bundle(warehouse: WarehouseLocation) -> Iterator[Any]:
    """``private_dag_bundle(*dag_files)``: a fresh metadata DB and a DAG bundle holding copies of just those
    files, for this module (other teams' DAG files stay out of its runs); restored afterwards."""
    import shutil

    from airflow.utils import db

    saved = os.environ.get(_BUNDLE_KEY)
    folders: list[Path] = []

    def make(*dag_files: Path) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="tributary-test-dags-"))
        folders.append(folder)
        for path in dag_files:
            shutil.copy(path, folder / Path(path).name)
        os.environ[_BUNDLE_KEY] = _bundle_config(f"tests-{uuid.uuid4().hex[:8]}", folder)
        db.resetdb()
        return folder

    yield make
    if saved is None:
        os.environ.pop(_BUNDLE_KEY, None)
    else:
        os.environ[_BUNDLE_KEY] = saved
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
