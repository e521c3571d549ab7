"""ml_deploy's operators: promotion, a real MLflow scoring server, the smoke test and the rollback.

One model for the module: v1 (weak) is champion, v2 (strong) is challenger. ``deployed`` promotes v2
and starts one real endpoint, which the tests below share (starting MLflow's server costs seconds).
"""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest

from tributary.ml.models import ALIAS_CHALLENGER, ALIAS_CHAMPION, ALIAS_PREVIOUS

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def deployed(lifecycle) -> Any:
    from tributary.ml.models import serving
    from tributary.ml.models.operators import PromoteChallengerOperator, StartEndpointOperator

    name = lifecycle.unique_name("deploy")
    assert lifecycle.train_and_gate(name, "weak", lifecycle.crippled_grid).result["version"] == "1"
    assert lifecycle.train_and_gate(name, "strong", lifecycle.good_grid).result["decision"]["outcome"] == "challenger"

    promote = PromoteChallengerOperator(task_id="promote", model_name=name)
    promotion = promote.execute(lifecycle.context("promote", "deploy-1", dag_id="ml_deploy"))
    serve = StartEndpointOperator(task_id="serve", model_name=name, port=_free_port(), promotion=promotion,
                                  startup_timeout=240)
    endpoint = serve.execute(lifecycle.context("serve", "deploy-1", dag_id="ml_deploy"))
    yield SimpleNamespace(name=name, promote=promote, promotion=promotion, serve=serve, endpoint=endpoint)
    serving.stop(name)


def test_promotion_moves_champion_to_the_challenger_and_records_the_previous_one(lifecycle, client,
                                                                                 deployed) -> None:
    from tributary.ml.models.operators import PromoteChallengerOperator
    from tributary.ml.models.registry import aliases, version_tags

    assert deployed.promotion["promoted"] is True
    assert (deployed.promotion["champion"], deployed.promotion["previous"]) == ("2", "1")
    assert "beats champion v1" in deployed.promotion["reason"]
    tags = version_tags(client, deployed.name, "2")
    assert tags["tributary.deploy.previous_champion"] == "1"
    assert tags["tributary.deploy.promoted_by"] == "deploy-1"
    lineage = deployed.promote.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [f"models/{deployed.name}/2"]
    assert [d.name for d in lineage.outputs] == [f"models/{deployed.name}/2"]

    # a retry of the same deploy run sees its own promotion and changes nothing
    again = PromoteChallengerOperator(task_id="promote", model_name=deployed.name).execute(
        lifecycle.context("promote", "deploy-1", dag_id="ml_deploy"))
    assert (again["promoted"], again["champion"], again["previous"]) == (True, "2", "1")
    current = aliases(client, deployed.name)
    assert current[ALIAS_CHAMPION] == "2"
    assert current[ALIAS_PREVIOUS] == "1"
    assert ALIAS_CHALLENGER not in current


def test_the_endpoint_answers_real_mlflow_scoring_requests(lifecycle, deployed) -> None:
    import requests
    from sklearn.datasets import load_breast_cancer

    from tributary.ml.models.operators import StartEndpointOperator

    url = deployed.endpoint["url"]
    assert deployed.endpoint["version"] == "2"
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    rows = load_breast_cancer(as_frame=True).data.head(4)
    split = requests.post(f"{url}/invocations", json={"dataframe_split": rows.to_dict(orient="split")},
                          timeout=30)
    assert split.status_code == 200
    assert len(split.json()["predictions"]) == 4
    assert set(split.json()["predictions"]) <= {0, 1}
    records = requests.post(f"{url}/invocations", json={"dataframe_records": rows.head(2).to_dict(orient="records")},
                            timeout=30)
    assert records.json()["predictions"] == split.json()["predictions"][:2]
    bad = requests.post(f"{url}/invocations", json={"rows": []}, timeout=30)
    assert bad.status_code == 400
    assert deployed.serve.get_openlineage_facets_on_complete(None).outputs[0].namespace == url

    # serving the same version again (a retry) reuses the running process
    again = StartEndpointOperator(task_id="serve", model_name=deployed.name, port=deployed.endpoint["port"],
                                  promotion=deployed.promotion).execute(
        lifecycle.context("serve", "deploy-1", dag_id="ml_deploy"))
    assert again["reused"] is True
    assert again["pid"] == deployed.endpoint["pid"]


def test_a_passing_smoke_test_is_recorded_on_the_version(lifecycle, client, deployed, pg) -> None:
    from tributary.ml.models.operators import SmokeTestOperator
    from tributary.ml.models.registry import version_tags

    result = SmokeTestOperator(task_id="smoke_test", model_name=deployed.name, endpoint=deployed.endpoint,
                               promotion=deployed.promotion, rows=15, latency_budget_ms=5000).execute(
        lifecycle.context("smoke_test", "deploy-1", dag_id="ml_deploy"))

    assert result["passed"] is True
    assert result["rows"] == 15
    assert result["requests"] == 2 + 1 + 10
    assert set(result["labels_seen"]) <= {"0", "1"}
    assert version_tags(client, deployed.name, "2")["tributary.smoke.status"] == "passed"
    with pg.cursor() as cur:
        cur.execute("SELECT value FROM ml_metrics WHERE run_id = 'deploy-1' AND metric = 'smoke_passed'")
        assert cur.fetchall() == [(1.0,)]


def test_the_teardown_leaves_the_endpoint_running_only_when_asked(lifecycle, deployed) -> None:
    from tributary.ml.models import serving
    from tributary.ml.models.operators import StopEndpointOperator

    kept = StopEndpointOperator(task_id="stop_endpoint", model_name=deployed.name, keep_running=True).execute(
        lifecycle.context("stop_endpoint", "deploy-1", dag_id="ml_deploy"))
    assert kept == {"stopped": False, "url": deployed.endpoint["url"], "version": "2"}
    assert serving.current(deployed.name).pid == deployed.endpoint["pid"]
    assert serving.ping(deployed.endpoint["url"])


def test_a_failing_smoke_test_rolls_the_champion_back_stops_the_endpoint_and_fails(lifecycle, client,
                                                                                   deployed) -> None:
    from tributary.core.errors import ErrorClass, classify
    from tributary.core.failfast import ClassifiedFailure
    from tributary.ml.models import serving
    from tributary.ml.models.operators import SmokeTestOperator, StopEndpointOperator
    from tributary.ml.models.registry import aliases, version_tags

    impossible = SmokeTestOperator(task_id="smoke_test", model_name=deployed.name, endpoint=deployed.endpoint,
                                   promotion=deployed.promotion, rows=5, latency_budget_ms=0.001)
    with pytest.raises(ClassifiedFailure) as failure:
        impossible.execute(lifecycle.context("smoke_test", "deploy-1", dag_id="ml_deploy"))

    assert classify(failure.value).error_class is ErrorClass.PERMANENT
    assert classify(failure.value).reason == "smoke_test_failed"
    assert "champion rolled back to v1" in str(failure.value)
    assert aliases(client, deployed.name) == {ALIAS_CHAMPION: "1"}  # v1 had no predecessor
    tags = version_tags(client, deployed.name, "2")
    assert tags["tributary.deploy.status"] == "rolled_back"
    assert "p95 latency" in tags["tributary.deploy.reason"]
    assert tags["tributary.smoke.status"] == "failed"
    assert serving.current(deployed.name) is None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", deployed.endpoint["port"])) != 0

    # the teardown after it has nothing left to stop; a retried rollback changes nothing
    stopped = StopEndpointOperator(task_id="stop_endpoint", model_name=deployed.name, keep_running=False).execute(
        lifecycle.context("stop_endpoint", "deploy-1", dag_id="ml_deploy"))
    assert stopped["stopped"] is False
    from tributary.ml.models.registry import Promotion, rollback

    assert rollback(client, deployed.name, Promotion.from_dict(deployed.promotion), "retry") == "1"
    assert aliases(client, deployed.name) == {ALIAS_CHAMPION: "1"}


def test_a_challenger_that_no_longer_beats_the_champion_is_not_promoted(lifecycle, client) -> None:
    from tributary.ml.models.registry import aliases, promote, version_tags

    name = lifecycle.unique_name("stale")
    lifecycle.train_and_gate(name, "a", lifecycle.crippled_grid)
    lifecycle.train_and_gate(name, "b", lifecycle.good_grid)  # v2 challenger
    client.set_registered_model_alias(name, ALIAS_CHAMPION, "2")  # someone made v2 champion by hand ...
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, "1")  # ... and v1 is a stale challenger

    promotion = promote(client, name, "deploy-stale")

    assert promotion.promoted is False
    assert "not promoted" in promotion.reason
    assert aliases(client, name) == {ALIAS_CHAMPION: "2"}
    assert version_tags(client, name, "1")["tributary.deploy.status"] == "rejected"
