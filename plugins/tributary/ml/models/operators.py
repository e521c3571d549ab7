"""Airflow operators of the model lifecycle (``ml_train_register``, ``ml_deploy``, ``ml_batch_score``).

Each operator is a thin shell over the package's logic: it renders its ``template_fields`` (the DAGs
render params as native objects, so ``source`` arrives as a dict), runs one step, records model
metrics in ``ml_metrics`` (and MLflow, where the step logs to a run), and turns every failure into
its class with ``core.failfast.raise_classified`` (MLflow errors are translated first).

Lineage: ``get_openlineage_facets_on_complete`` reports what the step read and wrote, so the chain
is complete from the dataset through the MLflow run and the registered version to the predictions
table:

* dataset     as ``DatasetSource.lineage()`` names it (``file`` / ``postgres://host:port`` / ``sklearn``);
* model       namespace = the MLflow tracking URI (credentials removed), name ``models/<name>/<version>``
              (a trained, not yet registered model: ``runs/<run_id>/model``);
* predictions namespace ``postgres://host:port``, name ``<database>.public.ml_predictions``;
* endpoint    namespace = the endpoint URL, name ``invocations``.

Heavy libraries are imported inside ``execute`` only; DAG files import this module at parse time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseOperator, Context

from tributary.core.failfast import classified, raise_classified
from tributary.ml import SYSTEM
from tributary.ml.models import ALIAS_CHALLENGER, ALIAS_CHAMPION
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

Lineage = tuple[str, str]  # (namespace, name)
P = ParamSpec("P")
R = TypeVar("R")


def model_namespace(tracking_uri: str) -> str:
    """The tracking URI without credentials: the OpenLineage namespace of registered models."""
    parts = urlsplit(tracking_uri)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return tracking_uri


def warehouse_table(conn_id: str, table: str) -> Lineage:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return f"postgres://{conn.host}:{conn.port or 5432}", f"{conn.schema}.public.{table}"


class ModelLifecycleOperator(BaseOperator):
    """Base: classification of failures, ``ml_metrics`` recording and lineage bookkeeping."""

    ui_color = "#e8f0fe"

    def __init__(self, *, model_name: str, mlflow_conn_id: str = "tributary_mlflow",
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self._lineage_inputs: list[Lineage] = []
        self._lineage_outputs: list[Lineage] = []
        self._model_namespace = "mlflow"  # the tracking URI once connected

    def execute(self, context: Context) -> Any:
        from tributary.ml.models.registry import translate_error

        try:
            return self.perform(context)
        except Exception as exc:
            raise_classified(translate_error(exc), SYSTEM)

    def perform(self, context: Context) -> Any:
        raise NotImplementedError

    def connect(self) -> tuple[Any, Any]:
        from tributary.ml.models.registry import connect

        hook, client = connect(self.mlflow_conn_id)
        self._model_namespace = model_namespace(hook.tracking_uri)
        return hook, client

    def model_lineage(self, name: str) -> Lineage:
        return self._model_namespace, name

    def record(self, context: Context, metrics: Mapping[str, float | int], **tags: Any) -> None:
        from tributary.ml.metrics import record_task_metrics

        record_task_metrics(context, metrics, tags={"model_name": self.model_name, **tags},
                            warehouse_conn_id=self.warehouse_conn_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        return OperatorLineage(inputs=[Dataset(namespace=ns, name=name) for ns, name in self._lineage_inputs],
                               outputs=[Dataset(namespace=ns, name=name) for ns, name in self._lineage_outputs])


def _translate_mlflow_error(exc: Exception) -> BaseException:
    from tributary.ml.models.registry import translate_error

    return translate_error(exc)


# For ``@task`` callables that use MLflow: translate MLflow errors, then classify (like ``execute``).
classified_mlflow = classified(SYSTEM, translate=_translate_mlflow_error)


def _dag_run_id(context: Context) -> str:
    return str(context["run_id"])


# ------------------------------------------------------------------------------------------ training
class TrainCandidateOperator(ModelLifecycleOperator):
    """Train, cross-validate and log one grid point (one mapped task per point; see ``training``).

    :param model_name: registered model (and MLflow experiment) name.
    :param source: ``DatasetSource`` spec (dict) of the labelled training data.
    :param estimator: one of ``training.ESTIMATORS``.
    :param hyperparams: the estimator's hyperparameters for this grid point.
    :param parent_run_id: the DAG run's parent MLflow run (from ``open_training_run``).
    :param cv_folds: stratified cross-validation folds on the training part.
    Returns the ``training.Candidate`` as a dict.
    """

    template_fields: Sequence[str] = ("model_name", "source", "estimator", "hyperparams", "parent_run_id",
                                      "cv_folds")

    def __init__(self, *, source: Any, estimator: str, hyperparams: Any, parent_run_id: Any = None,
                 cv_folds: Any = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.estimator = estimator
        self.hyperparams = hyperparams
        self.parent_run_id = parent_run_id
        self.cv_folds = cv_folds

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.ml.models.datasets import LabelledData, source_from_spec
        from tributary.ml.models.training import train_candidate

        source = source_from_spec(self.source)
        self._lineage_inputs = [source.lineage()]
        hook, client = self.connect()
        experiment_id = hook.ensure_experiment(self.model_name)
        candidate = train_candidate(client, experiment_id, model_name=self.model_name,
                                    data=LabelledData.load(source), estimator=self.estimator,
                                    hyperparams=dict(self.hyperparams or {}), dag_run_id=_dag_run_id(context),
                                    parent_run_id=self.parent_run_id, cv_folds=int(self.cv_folds))
        self._lineage_outputs = [self.model_lineage(f"runs/{candidate.run_id}/model")]
        self.record(context, {**{f"cv_{k}": v for k, v in candidate.cv.items()},
                              **{f"holdout_{k}": v for k, v in candidate.holdout.items()}},
                    mlflow_run_id=candidate.run_id, estimator=self.estimator, hyperparams=candidate.hyperparams)
        log.info("%s %s: cv %s, holdout %s (run %s)", self.estimator, candidate.hyperparams, candidate.cv,
                 candidate.holdout, candidate.run_id)
        return candidate.to_dict()


class GateRegisterOperator(ModelLifecycleOperator):
    """Pick the best grid point, gate it, register it and set its alias (see ``evaluation``/``registry``).

    The best candidate is the one with the highest mean cross-validation ``gate_metric``. The gate
    compares its holdout metrics with ``thresholds`` and with the current champion scored on the
    same holdout. ``champion``: first model ever; ``challenger``: beat the champion; ``rejected``:
    recorded (parent run, ``ml_metrics``, XCom), not registered, and not an error.

    :param candidates: the mapped ``TrainCandidateOperator`` results.
    :param gate_metric: the metric that ranks candidates and decides "beats the champion".
    :param thresholds: metric -> minimum holdout value.
    :param min_improvement: how much the candidate must exceed the champion by.
    Returns ``{"decision": {...}, "version": str | None, "candidate_run_id": str}``.
    """

    template_fields: Sequence[str] = ("model_name", "source", "candidates", "parent_run_id", "gate_metric",
                                      "thresholds", "min_improvement")

    def __init__(self, *, source: Any, candidates: Any, parent_run_id: Any = None, gate_metric: Any = "f1_macro",
                 thresholds: Any = None, min_improvement: Any = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.candidates = candidates
        self.parent_run_id = parent_run_id
        self.gate_metric = gate_metric
        self.thresholds = thresholds
        self.min_improvement = min_improvement

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.ml.models import registry
        from tributary.ml.models.datasets import LabelledData, source_from_spec, split_spec
        from tributary.ml.models.evaluation import GateDecision, check_metric_names, decide, select_best
        from tributary.ml.models.training import Candidate

        metric, thresholds = str(self.gate_metric), {k: float(v) for k, v in dict(self.thresholds or {}).items()}
        check_metric_names(metric, thresholds)
        source = source_from_spec(self.source)
        best = Candidate.from_dict(select_best(list(self.candidates or []), metric))
        _, client = self.connect()
        self._lineage_inputs = [source.lineage(), self.model_lineage(f"runs/{best.run_id}/model")]

        recorded = client.search_model_versions(f"name = '{self.model_name}' and run_id = '{best.run_id}'")
        if recorded and "tributary.gate.detail" in (recorded[0].tags or {}):
            decision = GateDecision.from_dict(json.loads(recorded[0].tags["tributary.gate.detail"]))
            version: str | None = str(recorded[0].version)
            log.info("gate already decided for run %s: %s (v%s)", best.run_id, decision.outcome, version)
        else:
            champion = registry.aliases(client, self.model_name).get(ALIAS_CHAMPION)
            champion_metrics, champion_error = None, None
            if champion is not None:
                data = LabelledData.load(source)
                self._lineage_inputs.append(self.model_lineage(f"models/{self.model_name}/{champion}"))
                try:
                    champion_metrics = registry.holdout_metrics(self.model_name, champion, data.holdout(),
                                                                data.features, source.target or "target")
                except Exception as exc:  # a champion that cannot score this holdout is not comparable
                    champion_error = f"{type(exc).__name__}: {exc}"
            decision = decide(best.holdout, metric=metric, thresholds=thresholds, champion=champion_metrics,
                              champion_version=champion, champion_error=champion_error,
                              min_improvement=float(self.min_improvement))
            version = None
            if decision.registers:
                version = registry.register(client, self.model_name, model_uri=best.model_uri, run_id=best.run_id,
                                            model_id=best.model_id, tags={
                    registry.TAG_GATE: decision.outcome,
                    "tributary.gate.detail": json.dumps(decision.to_dict()),
                    registry.TAG_GATE_METRIC: metric,
                    registry.TAG_MIN_IMPROVEMENT: float(self.min_improvement),
                    registry.TAG_SOURCE: json.dumps(source.to_spec(), sort_keys=True),
                    registry.TAG_SPLIT: json.dumps(split_spec(), sort_keys=True),
                    registry.TAG_LABELS: json.dumps(best.labels),
                    "tributary.estimator": best.estimator,
                    "tributary.hyperparams": json.dumps(best.hyperparams, sort_keys=True),
                    "tributary.dag_run_id": _dag_run_id(context),
                })
        if version is not None:
            alias = ALIAS_CHAMPION if decision.outcome == "champion" else ALIAS_CHALLENGER
            registry.set_alias(client, self.model_name, alias, version)
            self._lineage_outputs = [self.model_lineage(f"models/{self.model_name}/{version}")]
        self._log_to_parent_run(client, decision, version)
        metrics: dict[str, float] = {"gate_passed": int(decision.registers), "model_version": int(version or 0)}
        metrics.update({f"gate_candidate_{k}": v for k, v in decision.candidate.items()})
        metrics.update({f"gate_champion_{k}": v for k, v in (decision.champion or {}).items()})
        self.record(context, metrics, outcome=decision.outcome, mlflow_run_id=best.run_id)
        log.info("gate for %s: %s (%s) -> version %s", self.model_name, decision.outcome,
                 "; ".join(decision.reasons), version)
        return {"decision": decision.to_dict(), "version": version, "candidate_run_id": best.run_id}

    def _log_to_parent_run(self, client: Any, decision: Any, version: str | None) -> None:
        if not self.parent_run_id:
            return
        run_id = str(self.parent_run_id)
        for name, value in decision.candidate.items():
            client.log_metric(run_id, f"gate_candidate_{name}", value)
        for name, value in (decision.champion or {}).items():
            client.log_metric(run_id, f"gate_champion_{name}", value)
        client.set_tag(run_id, "tributary.gate.decision", decision.outcome)
        client.set_tag(run_id, "tributary.gate.version", version or "")
        client.log_dict(run_id, {**decision.to_dict(), "version": version}, "gate_decision.json")
        client.set_terminated(run_id, "FINISHED")


# ------------------------------------------------------------------------------------------ deploy
class PromoteChallengerOperator(ModelLifecycleOperator):
    """Move ``champion`` to the challenger if it still beats the champion (see ``registry.promote``).

    Returns ``registry.Promotion`` as a dict; ``promoted`` false (nothing to promote, or the
    challenger lost) is a normal outcome.
    """

    template_fields: Sequence[str] = ("model_name",)

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.ml.models import registry

        _, client = self.connect()
        challenger = registry.aliases(client, self.model_name).get(ALIAS_CHALLENGER)
        if challenger:
            self._lineage_inputs = [self.model_lineage(f"models/{self.model_name}/{challenger}")]
        promotion = registry.promote(client, self.model_name, _dag_run_id(context))
        if promotion.champion:
            self._lineage_outputs = [self.model_lineage(f"models/{self.model_name}/{promotion.champion}")]
        self.record(context, {"promoted": int(promotion.promoted), "champion_version": int(promotion.champion or 0)},
                    reason=promotion.reason)
        log.info("%s: %s", self.model_name, promotion.reason)
        return promotion.to_dict()


class StartEndpointOperator(ModelLifecycleOperator):
    """Serve the current champion version with MLflow's scoring server (see ``serving.start``).

    :param port: port on 127.0.0.1.
    :param promotion: the ``PromoteChallengerOperator`` result; a freshly promoted version whose
        server exits at start-up is rolled back before the task fails.
    :param startup_timeout: seconds to wait for ``/ping``.
    Returns the endpoint (url, version, pid, log path).
    """

    template_fields: Sequence[str] = ("model_name", "port", "promotion", "startup_timeout")

    def __init__(self, *, port: Any = 5001, promotion: Any = None, startup_timeout: Any = 180,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.port = port
        self.promotion = promotion
        self.startup_timeout = startup_timeout

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.core.errors import PermanentError
        from tributary.ml.models import registry, serving

        hook, client = self.connect()
        version = registry.require_champion(client, self.model_name)
        self._lineage_inputs = [self.model_lineage(f"models/{self.model_name}/{version}")]
        try:
            endpoint, reused = serving.start(
                self.model_name, version, port=int(self.port), startup_timeout=float(self.startup_timeout),
                env={"MLFLOW_TRACKING_URI": hook.tracking_uri, "MLFLOW_REGISTRY_URI": hook.registry_uri})
        except PermanentError as exc:
            if exc.reason == "serving:exited":
                promotion = registry.Promotion.from_dict(self.promotion)
                restored = registry.rollback(client, self.model_name, promotion, f"endpoint failed to start: {exc}")
                if restored:
                    raise PermanentError(f"{exc}\nchampion rolled back to v{restored}", system=SYSTEM,
                                         reason="serving:exited") from exc
            raise
        self._lineage_outputs = [(endpoint.url, "invocations")]
        log.info("%s v%s serving at %s/invocations (%s)", self.model_name, version, endpoint.url,
                 "reused" if reused else "started")
        return {**endpoint.to_dict(), "reused": reused}


class SmokeTestOperator(ModelLifecycleOperator):
    """Real requests against the endpoint; on failure roll the promotion back, stop it, and fail.

    Rows come from the holdout of the served version's own source (its ``tributary.source`` tag);
    the expected labels are those it was trained on. A failure is recorded (version tags,
    ``ml_metrics``), ``champion`` is re-pointed to the previous version when this deploy run
    promoted the served one, the endpoint is stopped, and the task fails with a permanent error so
    the alert fires.

    :param endpoint: the ``StartEndpointOperator`` result.
    :param promotion: the ``PromoteChallengerOperator`` result.
    :param rows: rows in the batch request (and up to ``single_requests`` single-row requests).
    :param latency_budget_ms: maximum 95th-percentile request latency.
    """

    template_fields: Sequence[str] = ("model_name", "endpoint", "promotion", "rows", "latency_budget_ms",
                                      "single_requests")

    def __init__(self, *, endpoint: Any, promotion: Any = None, rows: Any = 20, latency_budget_ms: Any = 500,
                 single_requests: Any = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.promotion = promotion
        self.rows = rows
        self.latency_budget_ms = latency_budget_ms
        self.single_requests = single_requests

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.core.errors import PermanentError
        from tributary.ml.models import registry, serving
        from tributary.ml.models.datasets import LabelledData, source_from_spec

        endpoint = serving.Endpoint.from_dict(self.endpoint)
        _, client = self.connect()
        self._lineage_inputs = [(endpoint.url, "invocations"),
                                self.model_lineage(f"models/{self.model_name}/{endpoint.version}")]
        tags = registry.version_tags(client, self.model_name, endpoint.version)
        data = LabelledData.load(source_from_spec(json.loads(tags[registry.TAG_SOURCE])))
        sample = data.holdout().head(int(self.rows))[data.features]
        labels = json.loads(tags.get(registry.TAG_LABELS, "[]"))
        result = serving.smoke_test(endpoint.url, sample, expected_labels=labels,
                                    latency_budget_ms=float(self.latency_budget_ms),
                                    single_requests=int(self.single_requests))
        for key, value in {"tributary.smoke.status": "passed" if result.passed else "failed",
                           "tributary.smoke.latency_p95_ms": round(result.latency_ms["p95"], 2),
                           "tributary.smoke.dag_run_id": _dag_run_id(context)}.items():
            client.set_model_version_tag(self.model_name, endpoint.version, key, str(value))
        self.record(context, {"smoke_passed": int(result.passed), "smoke_rows": result.rows,
                              "smoke_requests": result.requests,
                              **{f"smoke_latency_{k}_ms": v for k, v in result.latency_ms.items()}},
                    model_version=endpoint.version, failures=result.failures)
        if result.passed:
            log.info("smoke test of %s v%s passed: %s", self.model_name, endpoint.version, result.to_dict())
            return result.to_dict()

        reason = "; ".join(result.failures)
        restored = registry.rollback(client, self.model_name, registry.Promotion.from_dict(self.promotion),
                                     f"smoke test failed: {reason}")
        serving.stop(self.model_name)
        where = f"champion rolled back to v{restored}" if restored else "nothing promoted by this run to roll back"
        raise PermanentError(f"smoke test of {self.model_name} v{endpoint.version} failed ({reason}); {where}; "
                             "endpoint stopped", system=SYSTEM, reason="smoke_test_failed")


class StopEndpointOperator(ModelLifecycleOperator):
    """Stop the model's endpoint unless ``keep_running`` (the DAG uses it as a teardown task)."""

    template_fields: Sequence[str] = ("model_name", "keep_running")

    def __init__(self, *, keep_running: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_running = keep_running

    def perform(self, context: Context) -> dict[str, Any]:
        from tributary.ml.models import serving

        running = serving.current(self.model_name)
        if running is not None and _truthy(self.keep_running):
            log.info("leaving %s v%s running at %s/invocations (pid %d)", self.model_name, running.version,
                     running.url, running.pid)
            return {"stopped": False, "url": running.url, "version": running.version}
        return {"stopped": serving.stop(self.model_name), "url": None, "version": None}


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in {"1", "true", "yes", "on"}


# ------------------------------------------------------------------------------------------ scoring
class BatchScoreOperator(ModelLifecycleOperator):
    """Score a dataset with ``models:/<name>@champion`` into ``ml_predictions`` (see ``scoring``).

    :param source: ``DatasetSource`` spec of the rows to score (a target column is ignored).
    :param score_date: the partition date (``YYYY-MM-DD``); empty: the logical date, else the run's date.
        A source with ``partition_column`` is filtered on it.
    :param batch_size: rows read, scored and copied at a time.
    Returns ``scoring.ScoreResult`` as a dict.
    """

    template_fields: Sequence[str] = ("model_name", "source", "score_date", "batch_size")

    def __init__(self, *, source: Any, score_date: Any = None, batch_size: Any = 10_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.score_date = score_date
        self.batch_size = batch_size

    def perform(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from tributary.ml.models import registry
        from tributary.ml.models.assets import triggering_partition
        from tributary.ml.models.datasets import source_from_spec
        from tributary.ml.models.scoring import TABLE, score_to_warehouse

        source = source_from_spec(self.source)
        day = resolve_score_date(self.score_date, context, partition=triggering_partition(context),
                                 newest=lambda: source.partitions()[-1:] or [None])
        if source.partition_column:
            source = source.with_filters(**{source.partition_column: day.isoformat()})
        _, client = self.connect()
        if getattr(context.get("dag_run"), "run_type", None) == "asset_triggered" and \
                registry.aliases(client, self.model_name).get(ALIAS_CHAMPION) is None:
            # New data arrived before any model passed the gate: nothing to score with, nothing wrong.
            raise AirflowSkipException(f"{self.model_name} has no champion yet; {source.name} {day} not scored")
        version = registry.require_champion(client, self.model_name)
        self.log.info("scoring %s %s with models:/%s@champion (version %s)", source.name, day, self.model_name,
                      version)
        self._lineage_inputs = [source.lineage(), self.model_lineage(f"models/{self.model_name}/{version}")]
        self._lineage_outputs = [warehouse_table(self.warehouse_conn_id, TABLE)]
        result = score_to_warehouse(model_name=self.model_name, model_version=version,
                                    model=registry.load_version(self.model_name, version), source=source,
                                    score_date=day, dag_id=str(context["ti"].dag_id), run_id=_dag_run_id(context),
                                    warehouse_conn_id=self.warehouse_conn_id, batch_size=int(self.batch_size))
        self.record(context, {"rows_scored": result.rows, "rows_replaced": result.replaced,
                              "model_version": int(version)}, dataset=result.dataset, score_date=result.score_date)
        return result.to_dict()


def resolve_score_date(value: Any, context: Mapping[str, Any], *, partition: str | None = None,
                       newest: Callable[[], list[str | None]] | None = None) -> date:
    """Which date to score, in this order: the explicit ``value``; the ``partition`` of the Asset event
    that triggered the run; the run's logical date; the ``newest`` stored partition (runs without a
    logical date, e.g. triggered by a new champion); the date the run was due."""
    from tributary.core.errors import PermanentError

    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if value not in (None, "", "None"):
        try:
            return date.fromisoformat(str(value))
        except ValueError as exc:
            raise PermanentError(f"score_date {value!r} is not YYYY-MM-DD", system=SYSTEM,
                                 reason="config:score_date") from exc
    if partition:
        return date.fromisoformat(str(partition)[:10])
    if context.get("logical_date") is not None:
        return context["logical_date"].date()
    stored = newest() if newest else [None]
    if stored and stored[0]:
        return date.fromisoformat(str(stored[0])[:10])
    run_after = getattr(context.get("dag_run"), "run_after", None)
    return run_after.date() if run_after is not None else datetime.now().date()
