"""End to end: the run command starts real Airflow processes; everything goes through REST API v2.

One deployment per session on free ports, with a temporary AIRFLOW_HOME, its own warehouse
database, and alerts routed to a local webhook sink. Tests run in file order (the analysis test
reads the events that the drill tests recorded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
import requests

from tributary.cli.env import PROJECT_ROOT, free_port
from tributary.platform.hook import AirflowApiClient
from tributary.storage.embedded import WarehouseLocation, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.devnet]
DAG_IDS = ("integration_health", "error_analysis", "platform_alert_drill", "ml_pipeline_iris",
           "ml_pipeline_iris_analysis", "ml_pipeline_breast_cancer", "ml_train_register", "ml_deploy",
           "ml_batch_score", "bitcoin_settlement", "bitcoin_block_watch", "identity_verification",
           "dwn_data_replication", "did_issuance",
           "evm_contract_execution", "stacks_contract_execution")
# Unpaused by the fixture; the lifecycle DAGs only by the chain test (a pipeline unpaused also gets
# its latest scheduled run, which would load the machine while the other tests run).
UNPAUSED = DAG_IDS[:5]


@dataclass
class Deployment:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    reports_dir: Path
    warehouse: WarehouseLocation
    sink: object
    bitcoin_port: int = 0
    dwn_ports: tuple[int, int] = (0, 0)

    def client(self, user: str) -> AirflowApiClient:
        return AirflowApiClient(self.base_url, user, user)

    def bitcoin(self, method: str, *params: object, wallet: str | None = None) -> object:
        """Call the deployment's bitcoin devnet directly (its cookie, like bitcoin-cli would)."""
        cookie = self.log_path.parent / "tributary" / "bitcoin" / "regtest" / ".cookie"
        user, _, password = cookie.read_text().strip().partition(":")
        url = f"http://127.0.0.1:{self.bitcoin_port}" + (f"/wallet/{wallet}" if wallet else "/")
        answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                               auth=(user, password), timeout=30).json()
        assert answer.get("error") is None, answer
        return answer["result"]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _wait_for(predicate, timeout: float, what: str, deployment_log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; run log:\n{deployment_log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, warehouse: WarehouseLocation,
            session_sink) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("airflow-home")
    reports = tmp_path_factory.mktemp("reports")
    sink = session_sink
    port, bitcoin_port, dwn_ports = free_port(), free_port(), (free_port(), free_port())
    database = f"tributary_e2e_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))]:
        env.pop(key)  # the deployment computes its own Airflow settings
    env.pop("AIRFLOW_HOME", None)
    env.update({
        "TRIBUTARY_WAREHOUSE_DB": database,
        "TRIBUTARY_REPORTS_DIR": str(reports),
        "TRIBUTARY_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "AIRFLOW_CONN_E2E_ALERT_SINK": json.dumps({"conn_type": "tributary_webhook", "host": sink.url,
                                                    "extra": {"format": "json"}}),
        "AIRFLOW_VAR_TRIBUTARY_ALERTING": json.dumps({
            "min_severity": "warning", "alert_on": ["failure"],
            "notifiers": [{"type": "log"}, {"type": "webhook", "conn_id": "e2e_alert_sink"}]}),
    })
    log_path = home / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tributary.cli.run", "--home", str(home), "--port", str(port),
             "--log-server-ports", str(free_port()), str(free_port()), "--bitcoin-port", str(bitcoin_port),
             "--stacks-port", str(free_port()), "--evm-port", str(free_port()),
             "--did-ports", str(free_port()), str(free_port()), "--dwn-ports", *map(str, dwn_ports)],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    location = WarehouseLocation(warehouse.host, warehouse.port, warehouse.login, database, warehouse.kind)
    deployment = Deployment(f"http://127.0.0.1:{port}", process, log_path, reports, location, sink, bitcoin_port,
                            dwn_ports)
    try:
        _wait_for(lambda: "Tributary is up" in log_path.read_text(errors="replace") or process.poll() is not None,
                  240, "the run command to report healthy", log_path)
        assert process.poll() is None, f"run command exited early:\n{deployment.log_tail()}"
        ops = deployment.client("ops")

        def registered() -> bool:
            return all(ops.request("GET", f"/api/v2/dags/{d}").status_code == 200 for d in DAG_IDS)

        _wait_for(registered, 180, "the DAGs to be parsed", log_path)
        for dag_id in UNPAUSED:
            ops.unpause(dag_id)
        yield deployment
    finally:
        _stop(process, log_path)
        drop_database(location)


def _stop(process: subprocess.Popen, log_path: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"run command did not stop on SIGTERM:\n{log_path.read_text()[-2000:]}") from None


def _trigger_and_wait(client: AirflowApiClient, dag_id: str, conf: dict, timeout: float = 240) -> tuple[str, str]:
    response = client.trigger(dag_id, conf)
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    return run_id, client.wait_for_run(dag_id, run_id, timeout=timeout)


def test_the_api_requires_a_jwt(airflow: Deployment) -> None:
    assert requests.get(f"{airflow.base_url}/api/v2/dags", timeout=10).status_code == 401
    bad = requests.post(f"{airflow.base_url}/auth/token", json={"username": "ops", "password": "wrong"}, timeout=10)
    assert bad.status_code == 401


def test_a_viewer_can_read_but_gets_403_when_triggering(airflow: Deployment) -> None:
    viewer = airflow.client("viewer")
    assert viewer.request("GET", "/api/v2/dags/integration_health").status_code == 200
    response = viewer.trigger("integration_health", {})
    assert response.status_code == 403


@pytest.mark.parametrize(("dag_id", "conf", "fragment"), [
    ("error_analysis", {"window_days": "abc"}, "window_days"),
    ("error_analysis", {"window_days": 0}, "window_days"),
    ("integration_health", {"connections": "tributary_warehouse"}, "connections"),
    ("platform_alert_drill", {"error_class": "catastrophic"}, "error_class"),
])
def test_malformed_conf_is_rejected_before_any_task_runs(airflow: Deployment, dag_id: str, conf: dict,
                                                         fragment: str) -> None:
    ops = airflow.client("ops")

    def manual_runs() -> int:  # the fixture unpaused the DAG: its scheduler may add a scheduled run meanwhile
        runs = ops.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
        return sum(1 for run in runs if run.get("run_type") == "manual")

    before = manual_runs()
    response = ops.trigger(dag_id, conf)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert fragment in detail and "Invalid input for param" in detail
    assert manual_runs() == before


def test_integration_health_checks_every_connection_and_reports_through_rest(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    run_id, state = _trigger_and_wait(ops, "integration_health", {})
    assert state == "success", airflow.log_tail()
    report = ops.xcom("integration_health", run_id, "report")
    by_id = {r["conn_id"]: r for r in report["results"]}
    # those from airflow_settings.yaml (the bitcoin one is the devnet the run command started) and the
    # AIRFLOW_CONN_* sink: found without naming them
    assert {"tributary_warehouse", "tributary_airflow_api", "tributary_bitcoin", "e2e_alert_sink"} <= set(by_id)
    assert "chain regtest, height" in by_id["tributary_bitcoin"]["message"], by_id["tributary_bitcoin"]
    assert all(r["ok"] for r in report["results"]) and report["unhealthy"] == []
    checks = [t for t in ops.task_instances("integration_health", run_id) if t["task_id"] == "check_connection"]
    assert len(checks) == report["total"] and {t["state"] for t in checks} == {"success"}
    with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM integration_health WHERE run_id = %s AND ok", (run_id,))
        assert cur.fetchone()[0] == report["total"]


def test_the_connection_test_button_reaches_the_bitcoin_devnet(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    connection = ops.request("GET", "/api/v2/connections/tributary_bitcoin").json()
    assert connection["conn_type"] == "tributary_bitcoin"
    result = ops.request("POST", "/api/v2/connections/test", json=connection).json()
    assert result["status"] is True and "chain regtest, height" in result["message"], result
    wrong = {**connection, "extra": json.dumps({**json.loads(connection["extra"]), "network": "main"})}
    result = ops.request("POST", "/api/v2/connections/test", json=wrong).json()
    assert result["status"] is False and "regtest" in result["message"], result


def test_openlineage_events_are_emitted_for_the_tasks(airflow: Deployment) -> None:
    path = airflow.log_path.parent / "tributary" / "openlineage" / "events.jsonl"
    _wait_for(lambda: path.exists() and "integration_health.report" in path.read_text(), 60,
              "OpenLineage events", airflow.log_path)
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    jobs = {(e["job"]["namespace"], e["job"]["name"], e["eventType"]) for e in events}
    assert ("tributary", "integration_health.report", "COMPLETE") in jobs
    assert ("tributary", "integration_health.check_connection", "START") in jobs


def test_an_ml_pipeline_runs_end_to_end_with_lineage_and_its_asset_schedules_the_analysis(
        airflow: Deployment) -> None:
    ops = airflow.client("ops")
    run_id, state = _trigger_and_wait(ops, "ml_pipeline_iris", {"partition_date": "2026-03-10"})
    assert state == "success", airflow.log_tail()
    assert [t["state"] for t in ops.task_instances("ml_pipeline_iris", run_id)] == ["success"] * 4
    with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ml_dataset_iris WHERE ds = '2026-03-10'")
        stored = cur.fetchone()[0]
        cur.execute("SELECT metric FROM ml_metrics WHERE dag_id = 'ml_pipeline_iris' AND run_id = %s", (run_id,))
        metrics = {row[0] for row in cur.fetchall()}
    assert 140 <= stored <= 150  # iris has 150 rows, one exact duplicate
    assert {"rows_in", "rows_out"} <= metrics

    # The same metrics in the embedded MLflow store, one MLflow run for the DAG run.
    from mlflow import MlflowClient

    store = airflow.log_path.parent / "tributary" / "mlflow" / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("pipeline_iris")
    [mlflow_run] = client.search_runs([experiment.experiment_id], f"tags.airflow_run_id = '{run_id}'")
    assert mlflow_run.data.metrics["store.rows_out"] == stored

    # The stored Parquet Asset schedules the analysis DAG.
    def analysis_ran() -> bool:
        runs = ops.request("GET", "/api/v2/dags/ml_pipeline_iris_analysis/dagRuns").json()["dag_runs"]
        return any(r["state"] == "success" for r in runs)

    _wait_for(analysis_ran, 180, "the Asset-triggered analysis run", airflow.log_path)

    # OpenLineage: the store step reads its staging input and writes the table and the Parquet dataset.
    path = airflow.log_path.parent / "tributary" / "openlineage" / "events.jsonl"
    _wait_for(lambda: "ml_pipeline_iris.store" in path.read_text(), 60, "store lineage", airflow.log_path)
    completes = [e for e in map(json.loads, path.read_text().splitlines())
                 if e["job"]["name"] == "ml_pipeline_iris.store" and e["eventType"] == "COMPLETE"]
    outputs = {o["name"] for o in completes[-1]["outputs"]}
    assert any(name.endswith(".public.ml_dataset_iris") for name in outputs), outputs
    assert any("datasets/iris" in name for name in outputs), outputs
    collect = [e for e in map(json.loads, path.read_text().splitlines())
               if e["job"]["name"] == "ml_pipeline_iris.collect" and e["eventType"] == "COMPLETE"]
    assert any(i["name"].endswith("iris.csv") for i in collect[-1]["inputs"])


def test_a_stored_dataset_trains_registers_and_scores_a_champion_through_assets(airflow: Deployment) -> None:
    """pipeline --table Asset--> ml_train_register --champion Asset--> ml_batch_score, with no manual step."""
    ops = airflow.client("ops")
    for dag_id in ("ml_train_register", "ml_deploy", "ml_batch_score"):
        ops.unpause(dag_id)
    response = ops.trigger("ml_pipeline_breast_cancer", {"partition_date": "2030-01-01"})
    assert response.status_code == 200, response.text
    ops.unpause("ml_pipeline_breast_cancer")  # its latest scheduled date may run too; both feed the chain
    run_id = response.json()["dag_run_id"]
    assert ops.wait_for_run("ml_pipeline_breast_cancer", run_id, timeout=300) == "success", airflow.log_tail()

    def runs(dag_id: str) -> list[dict]:
        return ops.request("GET", f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]

    def scored() -> bool:
        failed = [r for d in ("ml_train_register", "ml_batch_score") for r in runs(d) if r["state"] == "failed"]
        assert not failed, f"{failed}\n{airflow.log_tail()}"
        with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ml_predictions WHERE model_name = 'tributary_breast_cancer'")
            return cur.fetchone()[0] > 0

    _wait_for(scored, 480, "the Asset-triggered training and scoring runs", airflow.log_path)
    chain = ("ml_pipeline_breast_cancer", "ml_train_register", "ml_batch_score")
    _wait_for(lambda: all(r["state"] in ("success", "failed") for d in chain for r in runs(d)), 300,
              "the chain's runs to finish", airflow.log_path)
    [training] = [r for r in runs("ml_train_register") if r["state"] == "success"][:1]
    assert training["run_type"] == "asset_triggered"
    source = ops.xcom("ml_train_register", training["dag_run_id"], "resolve_source")
    assert source["table"] == "public.ml_dataset_breast_cancer" and set(source["filters"]) == {"ds"}
    gate = ops.xcom("ml_train_register", training["dag_run_id"], "gate_and_register")
    assert gate["decision"]["outcome"] == "champion" and gate["version"] == "1"

    with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT score_date, count(*), min(model_version), max(model_version) FROM ml_predictions"
                    " WHERE model_name = 'tributary_breast_cancer' GROUP BY score_date")
        predictions = {str(row[0]): row[1:] for row in cur.fetchall()}
        cur.execute("SELECT ds, count(*) FROM ml_dataset_breast_cancer GROUP BY ds")
        stored = {str(row[0]): row[1] for row in cur.fetchall()}
    assert predictions, "no predictions stored"
    scoring = [r for r in runs("ml_batch_score") if r["run_type"] == "asset_triggered"]
    assert scoring and all(r["state"] == "success" for r in scoring), scoring  # before a champion: skipped
    for day, (count, low, high) in predictions.items():
        assert count == stored[day] and low == high == 1, (day, count, stored)  # every stored row, once


def _events(airflow: Deployment, run_id: str) -> list[tuple]:
    with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT kind, error_class, try_number, alert_status FROM error_events WHERE run_id = %s"
                    " ORDER BY try_number, kind", (run_id,))
        return cur.fetchall()


def test_a_permanent_failure_runs_once_is_recorded_and_alerted(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    run_id, state = _trigger_and_wait(ops, "platform_alert_drill", {"error_class": "permanent",
                                                                    "message": "e2e token=abc123secret"})
    assert state == "failed"
    [ti] = ops.task_instances("platform_alert_drill", run_id)
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    events = _events(airflow, run_id)
    assert [(k, c, t) for k, c, t, _ in events] == [("failure", "permanent", 1)]
    assert events[0][3]["webhook"] == "sent"
    alerts = [a for a in airflow.sink.posted_json() if a["event"]["run_id"] == run_id]
    assert len(alerts) == 1
    assert alerts[0]["event"]["error_class"] == "permanent"
    assert "abc123secret" not in json.dumps(alerts[0])


def test_a_transient_failure_is_retried_with_backoff_then_alerted(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    run_id, state = _trigger_and_wait(ops, "platform_alert_drill", {"error_class": "transient"})
    assert state == "failed"
    [ti] = ops.task_instances("platform_alert_drill", run_id)
    assert ti["try_number"] == 3  # retries=2
    kinds = [(k, c, t) for k, c, t, _ in _events(airflow, run_id)]
    assert kinds == [("retry", "transient", 1), ("retry", "transient", 2), ("failure", "transient", 3)]
    assert len([a for a in airflow.sink.posted_json() if a["event"]["run_id"] == run_id]) == 1


def test_error_analysis_reports_the_recorded_failures(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    today = datetime.now(UTC).date().isoformat()
    run_id, state = _trigger_and_wait(ops, "error_analysis", {"day": today, "min_failures": 1})
    assert state == "success", airflow.log_tail()
    summary = ops.xcom("error_analysis", run_id, "analyze")
    assert summary["day"] == today
    assert summary["by_dag_today"]["platform_alert_drill"] >= 2
    assert {"permanent", "transient"} <= set(summary["by_class_today"])
    report = Path(summary["report"])
    assert report.parent.parent == airflow.reports_dir / "error_analysis"
    assert "platform_alert_drill" in report.read_text()
    assert Path(summary["chart"]).read_bytes().startswith(b"\x89PNG")


class _Miner:
    """Mines a devnet block every ``interval`` seconds while a test waits for confirmations."""

    def __init__(self, airflow: Deployment, interval: float = 1.0) -> None:
        import threading

        self.airflow, self.interval, self.stop = airflow, interval, threading.Event()
        self.address = airflow.bitcoin("getnewaddress", wallet="tributary")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.airflow.bitcoin("generatetoaddress", 1, self.address)

    def __enter__(self) -> _Miner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_a_settlement_triggered_over_rest_pays_once_and_reports_its_confirmation(airflow: Deployment) -> None:
    """REST trigger -> validate -> PSBT sign -> broadcast -> deferred wait in the real triggerer -> report."""
    ops = airflow.client("ops")
    ops.unpause("bitcoin_settlement")
    payee = airflow.bitcoin("createwallet", f"payee_{uuid.uuid4().hex[:6]}")["name"]
    address = airflow.bitcoin("getnewaddress", wallet=payee)
    conf = {"settlement_id": f"e2e-{uuid.uuid4().hex[:8]}", "payouts": [{"address": address, "amount_btc": "0.125"}],
            "fee_policy": {"fee_rate": 2, "max_fee_sats": 50000}, "confirmations": 2,
            "bump_after_minutes": None, "poll_interval_seconds": 0.5, "max_settlements": 1}
    bad = ops.trigger("bitcoin_settlement", {**conf, "payouts": [{"address": address, "amount_btc": "abc"}]})
    assert bad.status_code == 400, bad.text  # the typed param refuses it before any run exists
    with _Miner(airflow):
        run_id, state = _trigger_and_wait(ops, "bitcoin_settlement", conf, timeout=240)
        assert state == "success", airflow.log_tail()
        _, state = _trigger_and_wait(ops, "bitcoin_settlement", conf, timeout=240)  # same id: no second payment
        assert state == "success", airflow.log_tail()
    waits = [t for t in ops.task_instances("bitcoin_settlement", run_id)
             if t["task_id"].endswith("wait_for_confirmations")]
    assert waits and all(t["state"] == "success" for t in waits)
    report = ops.xcom("bitcoin_settlement", run_id, "report")
    [summary] = report if isinstance(report, list) else report["settlements"]
    assert summary["status"] == "confirmed" and summary["txid"], report
    assert airflow.bitcoin("getbalances", wallet=payee)["mine"]["trusted"] == 0.125  # paid exactly once
    with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, txid FROM btc_settlements WHERE id = %s", (conf["settlement_id"],))
        assert cur.fetchone() == ("confirmed", summary["txid"])


def test_the_block_watch_waits_in_the_triggerer_and_stores_the_new_block(airflow: Deployment) -> None:
    ops = airflow.client("ops")
    ops.unpause("bitcoin_block_watch")  # @continuous: one run at a time waits for the next tip
    try:
        def deferred() -> bool:
            runs = ops.request("GET", "/api/v2/dags/bitcoin_block_watch/dagRuns").json()["dag_runs"]
            return any(t["state"] == "deferred" for r in runs if r["state"] == "running"
                       for t in ops.task_instances("bitcoin_block_watch", r["dag_run_id"]))

        _wait_for(deferred, 120, "bitcoin_block_watch to defer", airflow.log_path)
        [block] = airflow.bitcoin("generatetoaddress", 1, airflow.bitcoin("getnewaddress", wallet="tributary"))

        def stored() -> bool:
            with psycopg2.connect(airflow.warehouse.dsn()) as conn, conn.cursor() as cur:
                cur.execute("SELECT tx_count FROM btc_block_stats WHERE hash = %s", (block,))
                return cur.fetchone() is not None

        _wait_for(stored, 120, "the new block's stats", airflow.log_path)
    finally:
        ops.request("PATCH", "/api/v2/dags/bitcoin_block_watch", json={"is_paused": True})


def test_a_presented_credential_is_verified_over_rest_and_a_tampered_one_is_refused(airflow: Deployment) -> None:
    from tributary.did.resolver import create_did
    from tributary.vc.vcjwt import create_credential, issue_vc

    ops = airflow.client("ops")
    ops.unpause("identity_verification")
    issuer, subject = create_did("key"), create_did("jwk", crv="secp256k1")
    token = issue_vc(issuer, create_credential(issuer.uri, {"id": subject.uri, "name": "Ada"},
                                               types=["EmploymentCredential"]))
    run_id, state = _trigger_and_wait(ops, "identity_verification", {"credential": token,
                                                                      "expected_issuer": issuer.uri})
    assert state == "success", airflow.log_tail()
    verdict = ops.xcom("identity_verification", run_id, "record_verdict")
    assert verdict["valid"] is True and verdict["issuer"] == issuer.uri and verdict["subject"] == subject.uri

    header, payload, signature = token.split(".")
    forged = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    run_id, state = _trigger_and_wait(ops, "identity_verification", {"credential": forged})
    assert state == "success", airflow.log_tail()  # a negative verdict is a result, not a failed run
    verdict = ops.xcom("identity_verification", run_id, "record_verdict")
    assert verdict["valid"] is False and verdict["reasons"], verdict
    bad = ops.trigger("identity_verification", {"credential": "not a jwt"})
    assert bad.status_code == 400, bad.text


def test_dwn_records_are_replicated_between_the_two_servers_over_rest(
        airflow: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.dwn import messages
    from tributary.dwn.hook import DwnHook

    protocol = f"https://tributary.example/protocols/e2e-{uuid.uuid4().hex[:6]}"
    tenant_key = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # airflow_settings default
    hooks = []
    for name, port in zip(("source", "target"), airflow.dwn_ports, strict=True):
        monkeypatch.setenv(f"AIRFLOW_CONN_E2E_DWN_{name.upper()}", json.dumps(
            {"conn_type": "tributary_dwn", "host": f"http://127.0.0.1:{port}", "password": tenant_key}))
        hooks.append(DwnHook(f"e2e_dwn_{name}"))
    source, target = hooks
    source.configure_protocol(messages.flat_protocol(protocol))
    written = [source.write_record(json.dumps({"note": i}).encode(), protocol=protocol, protocol_path="record")
               for i in range(12)]
    source.delete_record(written[0]["recordId"])

    ops = airflow.client("ops")
    ops.unpause("dwn_data_replication")
    run_id, state = _trigger_and_wait(ops, "dwn_data_replication", {"protocol": protocol, "batch_size": 5})
    assert state == "success", airflow.log_tail()
    result = ops.xcom("dwn_data_replication", run_id, "verify_convergence")
    assert result["verified"] is True, result
    replicated, _ = target.query_records({"protocol": protocol}, limit=100)
    assert sorted(r["recordId"] for r in replicated) == sorted(w["recordId"] for w in written[1:])


def test_a_did_issued_over_rest_is_stored_in_the_dwn_and_its_credential_verifies(airflow: Deployment) -> None:
    """did_issuance (did:dht subject, the deployment's did:web issuer, status list) -> identity_verification."""
    ops = airflow.client("ops")
    for dag_id in ("did_issuance", "identity_verification"):
        ops.unpause(dag_id)
    conf = {"request_id": f"e2e-{uuid.uuid4().hex[:8]}", "method": "dht", "claims": {"name": "Grace"},
            "with_status": True}
    run_id, state = _trigger_and_wait(ops, "did_issuance", conf)
    assert state == "success", airflow.log_tail()
    issued = ops.xcom("did_issuance", run_id, "record_request")
    assert issued["did"].startswith("did:dht:") and issued["issuer"].startswith("did:web:")
    assert issued["dwn_records"] and issued["replayed"] is False
    again, state = _trigger_and_wait(ops, "did_issuance", conf)  # the same request id: nothing new
    assert state == "success"
    replay = ops.xcom("did_issuance", again, "record_request")
    assert replay["replayed"] is True and replay["credential"] == issued["credential"]

    # The deployment resolves its own issuer (did:web over its HTTPS devnet) and the status list.
    run_id, state = _trigger_and_wait(ops, "identity_verification", {"credential": issued["credential"],
                                                                      "expected_subject": issued["did"]})
    assert state == "success", airflow.log_tail()
    verdict = ops.xcom("identity_verification", run_id, "record_verdict")
    assert verdict["valid"] is True, verdict


def test_contracts_deployed_and_called_over_rest_on_anvil_and_the_stacks_simnet(airflow: Deployment) -> None:
    """evm_contract_execution and stacks_contract_execution through the deployment's own devnets."""
    ops = airflow.client("ops")
    for dag_id in ("evm_contract_execution", "stacks_contract_execution"):
        ops.unpause(dag_id)

    def evm(conf: dict) -> dict:
        run_id, state = _trigger_and_wait(ops, "evm_contract_execution", conf)
        assert state == "success", airflow.log_tail()
        return ops.xcom("evm_contract_execution", run_id, "execute")

    deployed = evm({"contract": "Registry", "action": "deploy", "args": []})
    assert deployed["address"].startswith("0x")
    sent = evm({"contract": "Registry", "function": "increment", "args": [], "idempotency_key": uuid.uuid4().hex})
    assert sent["status"] == "confirmed" and sent["events"][0]["event"] == "Incremented", sent
    bad = ops.trigger("evm_contract_execution", {"contract": "Registry", "function": "record", "value_wei": "-1"})
    assert bad.status_code == 400, bad.text

    # The run command deployed the examples, so the DAG's defaults read `counter` on a fresh devnet;
    # a deploy over REST publishes the same source under a new name.
    run_id, state = _trigger_and_wait(ops, "stacks_contract_execution", {})
    assert state == "success", airflow.log_tail()
    request = f"e2e-{uuid.uuid4().hex[:8]}"
    contract = f"counter-{request}"
    run_id, state = _trigger_and_wait(ops, "stacks_contract_execution", {
        "action": "deploy", "contract": contract, "source_file": "counter.clar", "request_id": request})
    assert state == "success", airflow.log_tail()
    run_id, state = _trigger_and_wait(ops, "stacks_contract_execution", {
        "action": "call", "contract": contract, "function": "increment", "args": [{"type": "uint", "value": "3"}],
        "request_id": f"{request}-call"})
    assert state == "success", airflow.log_tail()
    outcome = ops.xcom("stacks_contract_execution", run_id, "await_confirmation")
    assert "(ok u3)" in json.dumps(outcome), outcome


def test_sigterm_stops_every_airflow_process(airflow: Deployment) -> None:
    home = str(airflow.log_path.parent)
    candidates = subprocess.run(["pgrep", "-f", "airflow (api-server|scheduler|dag-processor|triggerer)"],
                                capture_output=True, text=True).stdout.split()
    mine = [pid for pid in candidates if _env_home(pid) == home]
    assert len(mine) >= 4, "expected the four Airflow components of this deployment"
    _stop(airflow.process, airflow.log_path)
    assert airflow.process.returncode == 0, airflow.log_tail()
    assert [pid for pid in mine if Path(f"/proc/{pid}").exists()] == []


def _env_home(pid: str) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"AIRFLOW_HOME="):
            return item.split(b"=", 1)[1].decode()
    return None
