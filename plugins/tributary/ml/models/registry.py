"""MLflow Model Registry: versions, aliases, promotion and rollback (aliases only, never stages).

Aliases of a registered model:

* ``champion``           what serves and batch-scores (``models:/<name>@champion``);
* ``challenger``         passed the gate and beat the champion; waits for ``ml_deploy``;
* ``previous-champion``  the champion before the last promotion: where a rollback goes.

Rules:

* ``register`` is idempotent per MLflow run: a retried task finds the version it created.
* ``promote`` re-checks that the challenger still beats the *current* champion on the holdout (the
  champion may have changed since the gate ran), then moves ``previous-champion`` to the old
  champion, ``champion`` to the challenger and drops ``challenger``. The new champion's tags record
  ``tributary.deploy.previous_champion`` and the DAG run that promoted it, so a retry of the same
  run sees "already promoted" instead of promoting twice.
* ``rollback`` only undoes a promotion made by the same deploy run, and only while ``champion``
  still points at that version: ``champion`` goes back to the previous version and
  ``previous-champion`` to that version's own predecessor (or is removed).

MLflow errors are translated into the Tributary taxonomy by ``translate_error``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tributary.core.errors import PermanentError, TransientError
from tributary.ml import SYSTEM
from tributary.ml.models import ALIAS_CHALLENGER, ALIAS_CHAMPION, ALIAS_PREVIOUS

log = logging.getLogger(__name__)

TAG_SOURCE = "tributary.source"
TAG_SPLIT = "tributary.split"
TAG_LABELS = "tributary.labels"
TAG_GATE = "tributary.gate.decision"
TAG_GATE_METRIC = "tributary.gate.metric"
TAG_MIN_IMPROVEMENT = "tributary.gate.min_improvement"
TAG_DEPLOY_STATUS = "tributary.deploy.status"
TAG_DEPLOY_REASON = "tributary.deploy.reason"
TAG_PROMOTED_BY = "tributary.deploy.promoted_by"
TAG_PREVIOUS = "tributary.deploy.previous_champion"

# MLflow error codes (``MlflowException.error_code``) by what a retry can change.
_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST",
                    "ENDPOINT_NOT_FOUND", "FEATURE_DISABLED", "NOT_IMPLEMENTED"}
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED",
                    "ABORTED", "IO_ERROR"}


def translate_error(exc: BaseException) -> BaseException:
    """An ``MlflowException`` as a Tributary error of the right class; anything else unchanged."""
    if type(exc).__name__ not in {"MlflowException", "RestException", "MlflowTrackingException"}:
        return exc
    code = str(getattr(exc, "error_code", "") or "")
    message = f"MLflow {code}: {exc}"
    if code in _TRANSIENT_CODES:
        return TransientError(message, system=SYSTEM, reason=f"mlflow:{code}")
    if code in _PERMANENT_CODES:
        return PermanentError(message, system=SYSTEM, reason=f"mlflow:{code}")
    return TransientError(message, system=SYSTEM, reason=f"mlflow:{code or 'unknown'}")


def connect(conn_id: str = "tributary_mlflow") -> tuple[Any, Any]:
    """(``MlflowHook``, ``MlflowClient``) for the Connection; the fluent API points there too."""
    from tributary.ml.hook import MlflowHook

    # MLflow's usage telemetry calls out to the internet; our machines have no route there.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    hook = MlflowHook(conn_id)
    return hook, hook.get_conn()


@contextlib.contextmanager
def quiet_model_io() -> Iterator[None]:
    """Silence warnings that model (de)serialization triggers but that concern nobody here.

    skops looks up ufuncs by scanning every loaded module, which touches Airflow's deprecated
    import shims (one FutureWarning each); MLflow hints about integer columns of the label output.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The `airflow\.", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Hint: Inferred schema contains integer", category=UserWarning)
        yield


@contextlib.contextmanager
def trusted_models() -> Iterator[None]:
    """Allow MLflow to deserialize models: only ever around loads from our own registry."""
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        with quiet_model_io():
            yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def load_version(name: str, version: str) -> Any:
    import mlflow.pyfunc

    with trusted_models():
        return mlflow.pyfunc.load_model(version_uri(name, version))


def aliases(client: Any, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def version_tags(client: Any, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags or {})


def _set_tags(client: Any, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def register(client: Any, name: str, *, model_uri: str, run_id: str, model_id: str | None,
             tags: Mapping[str, Any]) -> str:
    """The version of ``run_id``'s model under ``name``, registering it once."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Registered by Tributary's ml_train_register DAG.")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = str(existing[0].version)
    else:
        created = client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id,
                                              tags={k: str(v) for k, v in tags.items()})
        version = str(created.version)
    _set_tags(client, name, version, tags)
    return version


def set_alias(client: Any, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, str(version))


def drop_alias(client: Any, name: str, alias: str) -> None:
    if alias in aliases(client, name):
        client.delete_registered_model_alias(name, alias)


# ---------------------------------------------------------------------- comparison on the holdout
def holdout_metrics(name: str, version: str, holdout: Any, features: list[str], target: str) -> dict[str, float]:
    from tributary.ml.models.evaluation import score_model

    return score_model(load_version(name, version), holdout, features, target)


def compare_on_holdout(client: Any, name: str, challenger: str, champion: str) -> tuple[bool, str]:
    """Does ``challenger`` still beat ``champion`` on the challenger's source and holdout?"""
    from tributary.ml.models.datasets import LabelledData, source_from_spec
    from tributary.ml.models.evaluation import decide

    tags = version_tags(client, name, challenger)
    if TAG_SOURCE not in tags:
        raise PermanentError(f"{name} v{challenger} has no {TAG_SOURCE} tag; was it registered by "
                             "ml_train_register?", system=SYSTEM, reason="untagged_version")
    data = LabelledData.load(source_from_spec(json.loads(tags[TAG_SOURCE])))
    holdout = data.holdout()
    metric = tags.get(TAG_GATE_METRIC, "f1_macro")
    target = data.source.target or "target"
    candidate = holdout_metrics(name, challenger, holdout, data.features, target)
    try:
        current: dict[str, float] | None = holdout_metrics(name, champion, holdout, data.features, target)
        error = None
    except Exception as exc:  # the champion cannot score this data: no like-for-like comparison
        current, error = None, f"{type(exc).__name__}: {exc}"
    decision = decide(candidate, metric=metric, thresholds={}, champion=current, champion_version=champion,
                      champion_error=error, min_improvement=float(tags.get(TAG_MIN_IMPROVEMENT, 0.0)))
    return decision.outcome == "challenger", "; ".join(decision.reasons)


# ---------------------------------------------------------------------- promotion and rollback
@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did; XCom carries it to the smoke test, which may roll it back."""

    promoted: bool
    champion: str | None
    previous: str | None
    reason: str
    dag_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> Promotion:
        value = value or {}
        return cls(promoted=bool(value.get("promoted")), champion=value.get("champion"),
                   previous=value.get("previous"), reason=str(value.get("reason", "")),
                   dag_run_id=str(value.get("dag_run_id", "")))


def promote(client: Any, name: str, dag_run_id: str,
            compare: Callable[[str, str], tuple[bool, str]] | None = None) -> Promotion:
    """Promote the challenger if it (still) beats the champion; see the module docstring."""
    compare = compare or (lambda challenger, champion: compare_on_holdout(client, name, challenger, champion))
    current = aliases(client, name)
    champion, challenger = current.get(ALIAS_CHAMPION), current.get(ALIAS_CHALLENGER)
    if champion is not None:
        tags = version_tags(client, name, champion)
        if tags.get(TAG_PROMOTED_BY) == dag_run_id:
            return Promotion(True, champion, tags.get(TAG_PREVIOUS) or None, "already promoted by this run",
                             dag_run_id)
    if challenger is None:
        return Promotion(False, champion, None, "no challenger to promote", dag_run_id)
    if challenger == champion:
        drop_alias(client, name, ALIAS_CHALLENGER)
        return Promotion(False, champion, None, "the challenger is already champion", dag_run_id)
    if champion is None:
        better, reason = True, "no champion yet"
    else:
        better, reason = compare(challenger, champion)
    if not better:
        _set_tags(client, name, challenger, {TAG_DEPLOY_STATUS: "rejected", TAG_DEPLOY_REASON: reason[:4000]})
        drop_alias(client, name, ALIAS_CHALLENGER)
        log.info("%s: challenger v%s not promoted: %s", name, challenger, reason)
        return Promotion(False, champion, None, f"challenger v{challenger} not promoted: {reason}", dag_run_id)
    _set_tags(client, name, challenger, {TAG_DEPLOY_STATUS: "promoted", TAG_DEPLOY_REASON: reason[:4000],
                                         TAG_PROMOTED_BY: dag_run_id, TAG_PREVIOUS: champion or ""})
    if champion is not None:
        set_alias(client, name, ALIAS_PREVIOUS, champion)
    set_alias(client, name, ALIAS_CHAMPION, challenger)
    drop_alias(client, name, ALIAS_CHALLENGER)
    log.info("%s: promoted v%s to champion (previous v%s): %s", name, challenger, champion, reason)
    return Promotion(True, challenger, champion, reason, dag_run_id)


def rollback(client: Any, name: str, promotion: Promotion, reason: str) -> str | None:
    """Undo ``promotion``: ``champion`` back to the previous version. Returns it, or None if nothing to undo."""
    if not promotion.promoted or not promotion.previous or not promotion.champion:
        return None
    current = aliases(client, name).get(ALIAS_CHAMPION)
    if current == promotion.previous:
        return promotion.previous  # a retry: already rolled back
    if current != promotion.champion:
        log.warning("%s: champion is v%s, not v%s promoted by this run; not rolling back", name, current,
                    promotion.champion)
        return None
    _set_tags(client, name, promotion.champion, {TAG_DEPLOY_STATUS: "rolled_back",
                                                 TAG_DEPLOY_REASON: reason[:4000]})
    set_alias(client, name, ALIAS_CHAMPION, promotion.previous)
    before_previous = version_tags(client, name, promotion.previous).get(TAG_PREVIOUS)
    if before_previous:
        set_alias(client, name, ALIAS_PREVIOUS, before_previous)
    else:
        drop_alias(client, name, ALIAS_PREVIOUS)
    log.warning("%s: rolled back champion v%s -> v%s: %s", name, promotion.champion, promotion.previous, reason)
    return promotion.previous


def require_champion(client: Any, name: str) -> str:
    version = aliases(client, name).get(ALIAS_CHAMPION)
    if version is None:
        raise PermanentError(f"registered model {name!r} has no {ALIAS_CHAMPION!r} alias yet; run "
                             "ml_train_register", system=SYSTEM, reason="no_champion")
    return version
