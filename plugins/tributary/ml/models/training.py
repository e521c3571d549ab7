"""Train one grid point: a scikit-learn pipeline (impute, scale / one-hot, estimator) logged to MLflow.

``expand_grid`` turns the ``grid`` param into one dict per combination (one mapped task each).
``train_candidate`` fits the pipeline on the training part of the source, scores it by
cross-validation (used to pick the best grid point) and on the holdout (used by the gate), and logs
everything to one MLflow run, nested under the DAG run's parent run:

* params: estimator, hyperparameters, source, split, sizes;
* metrics: ``cv_<metric>_mean`` / ``cv_<metric>_std`` and ``holdout_<metric>``;
* the model (skops format) with its signature, an input example and explicit ``pip_requirements``
  (inferring them costs seconds per model);
* artifacts: ``metrics.json`` and ``confusion_matrix.png`` (holdout).

A retried task finds the finished run of the same (DAG run, candidate) and returns it instead of
training again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tributary.core.errors import PermanentError
from tributary.ml import SYSTEM
from tributary.ml.models.datasets import DatasetSource, LabelledData, fingerprint, split_spec

SEED = 42
ESTIMATORS = ("logistic_regression", "random_forest", "hist_gradient_boosting")
# Types skops must trust to load our pipelines (numpy dtypes and the tree ensembles' internals);
# everything else in them is on skops' default allow-list.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
TAG_DAG_RUN = "tributary.dag_run_id"
TAG_CANDIDATE = "tributary.candidate_key"
TAG_ROLE = "tributary.role"


def _estimator(name: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, random_state=SEED)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=50, random_state=SEED, n_jobs=1)
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=SEED)
    raise PermanentError(f"unknown estimator {name!r}; one of {list(ESTIMATORS)}", system=SYSTEM,
                         reason="config:estimator")


def expand_grid(estimator: str, grid: Mapping[str, Sequence[Any]], max_points: int) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order; names are checked against the estimator."""
    known = set(_estimator(estimator).get_params())
    unknown = sorted(set(grid) - known)
    if unknown:
        raise PermanentError(f"{estimator} has no hyperparameter(s) {unknown}", system=SYSTEM,
                             reason="config:grid")
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise PermanentError(f"grid[{name!r}] must be a non-empty list", system=SYSTEM, reason="config:grid")
    names = sorted(grid)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]
    if len(points) > max_points:
        raise PermanentError(f"the grid has {len(points)} points, more than max_grid_points={max_points}",
                             system=SYSTEM, reason="config:grid")
    return points or [{}]


def build_pipeline(estimator: str, hyperparams: Mapping[str, Any], numeric: list[str],
                   categorical: list[str]) -> Any:
    """Preprocessing (median impute + scale; most-frequent impute + one-hot) and the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if numeric:
        parts.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                           ("scale", StandardScaler())]), numeric))
    if categorical:
        parts.append(("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                               ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical))
    model = _estimator(estimator)
    try:
        model.set_params(**hyperparams)
    except (ValueError, TypeError) as exc:
        raise PermanentError(f"{estimator}: bad hyperparameters {dict(hyperparams)}: {exc}", system=SYSTEM,
                             reason="config:grid") from exc
    return Pipeline([("preprocess", ColumnTransformer(parts)), ("model", model)])


def pip_requirements() -> list[str]:
    """What the served model needs, pinned to what trained it (never inferred: that costs seconds)."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy")]


def candidate_key(dag_run_id: str, estimator: str, hyperparams: Mapping[str, Any]) -> str:
    text = json.dumps({"run": dag_run_id, "estimator": estimator, "hyperparams": hyperparams}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Candidate:
    """One trained grid point, as the gate needs it (and as XCom carries it)."""

    run_id: str
    model_uri: str
    model_id: str
    estimator: str
    hyperparams: dict[str, Any]
    cv: dict[str, float]
    holdout: dict[str, float]
    labels: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Candidate:
        return cls(**{k: value[k] for k in cls.__dataclass_fields__})


def open_training_run(client: Any, experiment_id: str, dag_run_id: str, *, model_name: str,
                      source: DatasetSource, estimator: str, grid: Mapping[str, Any]) -> str:
    """The parent MLflow run of one DAG run (created once; a retry finds it)."""
    existing = client.search_runs([experiment_id], filter_string=(
        f"tags.`{TAG_DAG_RUN}` = '{_quote(dag_run_id)}' and tags.`{TAG_ROLE}` = 'training'"), max_results=1)
    if existing:
        return str(existing[0].info.run_id)
    run = client.create_run(experiment_id, run_name=f"train {dag_run_id}", tags={
        TAG_DAG_RUN: dag_run_id, TAG_ROLE: "training", "tributary.model_name": model_name})
    for key, value in {"estimator": estimator, "grid": json.dumps(dict(grid), sort_keys=True),
                       "source": json.dumps(source.to_spec(), sort_keys=True),
                       "split": json.dumps(split_spec(), sort_keys=True)}.items():
        client.log_param(run.info.run_id, key, value[:6000])
    return str(run.info.run_id)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _confusion_figure(matrix: Any, labels: list[Any]) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 4), dpi=100)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
             xlabel="predicted", ylabel="true", title="holdout confusion matrix")
    for (row, col), value in _enumerate2d(matrix):
        axes.text(col, row, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black")
    figure.tight_layout()
    return figure


def _enumerate2d(matrix: Any) -> list[tuple[tuple[int, int], int]]:
    return [((r, c), int(matrix[r][c])) for r in range(len(matrix)) for c in range(len(matrix[r]))]


def train_candidate(
    client: Any,
    experiment_id: str,
    *,
    model_name: str,
    data: LabelledData,
    estimator: str,
    hyperparams: Mapping[str, Any],
    dag_run_id: str,
    parent_run_id: str | None = None,
    cv_folds: int = 3,
) -> Candidate:
    """Fit, cross-validate, score the holdout and log one grid point (see the module docstring)."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from tributary.ml.models.evaluation import METRICS, SCORERS, classification_metrics
    from tributary.ml.models.registry import quiet_model_io

    hyperparams = dict(hyperparams)
    key = candidate_key(dag_run_id, estimator, hyperparams)
    done = client.search_runs([experiment_id], filter_string=(
        f"tags.`{TAG_CANDIDATE}` = '{key}' and attributes.status = 'FINISHED'"), max_results=1)
    if done and "tributary.candidate" in done[0].data.tags:
        return Candidate.from_dict(json.loads(done[0].data.tags["tributary.candidate"]))

    train, holdout = data.train(), data.holdout()
    x_train, y_train = data.xy(train)
    x_holdout, y_holdout = data.xy(holdout)
    numeric = [c for c in data.features if pd.api.types.is_numeric_dtype(x_train[c])]
    categorical = [c for c in data.features if c not in numeric]

    pipeline = build_pipeline(estimator, hyperparams, numeric, categorical)
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=SEED)
    scores = cross_validate(pipeline, x_train, y_train, cv=folds, scoring=SCORERS, n_jobs=1)
    cv = {}
    for metric in METRICS:
        cv[f"{metric}_mean"] = float(scores[f"test_{metric}"].mean())
        cv[f"{metric}_std"] = float(scores[f"test_{metric}"].std())
    pipeline.fit(x_train, y_train)
    predicted = pipeline.predict(x_holdout)
    holdout_metrics = classification_metrics(y_holdout, predicted)
    labels = sorted(pd.unique(y_train).tolist())

    tags = {TAG_DAG_RUN: dag_run_id, TAG_CANDIDATE: key, TAG_ROLE: "candidate",
            "tributary.model_name": model_name}
    with mlflow.start_run(experiment_id=experiment_id, parent_run_id=parent_run_id, tags=tags,
                          run_name=f"{estimator} {json.dumps(hyperparams, sort_keys=True)}"[:250]) as run:
        mlflow.log_params({"estimator": estimator, "source": data.source.name, "cv_folds": cv_folds,
                           "n_train": len(train), "n_holdout": len(holdout),
                           "holdout_fingerprint": fingerprint(holdout[data.source.key]),
                           "split_salt": split_spec()["salt"], "holdout_percent": split_spec()["holdout_percent"],
                           **{f"model.{k}": v for k, v in hyperparams.items()}})
        mlflow.log_metrics({f"cv_{k}": v for k, v in cv.items()})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in holdout_metrics.items()})
        mlflow.log_input(mlflow.data.from_pandas(train, name=data.source.name, targets=data.source.target),
                         context="training")
        with quiet_model_io():
            signature = infer_signature(x_train, pipeline.predict(x_train.head(50)))
            info = mlflow.sklearn.log_model(
                pipeline, name="model", signature=signature, input_example=x_holdout.head(3),
                pip_requirements=pip_requirements(), skops_trusted_types=SKOPS_TRUSTED_TYPES,
            )
        matrix = confusion_matrix(y_holdout, predicted, labels=labels)
        mlflow.log_dict({"cv": cv, "holdout": holdout_metrics, "labels": labels, "hyperparams": hyperparams,
                         "confusion_matrix": matrix.tolist()}, "metrics.json")
        mlflow.log_figure(_confusion_figure(matrix, labels), "confusion_matrix.png")
        candidate = Candidate(run_id=run.info.run_id, model_uri=info.model_uri, model_id=info.model_id,
                              estimator=estimator, hyperparams=hyperparams, cv=cv, holdout=holdout_metrics,
                              labels=labels)
        mlflow.set_tag("tributary.candidate", json.dumps(candidate.to_dict(), default=str))
    return candidate
