"""MLflow tracking server and model registry, from a ``tributary_mlflow`` Connection.

Connection fields: ``host`` is the tracking URI (``http://mlflow:5000`` in production, or the
embedded default ``sqlite:////<project>/.local/airflow/tributary/mlflow/mlflow.db``); ``login`` /
``password`` optional basic-auth or token. Extra: ``registry_uri`` (defaults to the tracking URI),
``artifact_location`` (artifact root for experiments this project creates), ``timeout``.
"""

from __future__ import annotations

import os
from typing import Any

from tributary.core.errors import PermanentError
from tributary.core.hooks import TributaryHook
from tributary.ml import SYSTEM


class MlflowHook(TributaryHook):
    default_conn_name = "tributary_mlflow"
    conn_type = "tributary_mlflow"
    hook_name = "Tributary: MLflow"
    system = SYSTEM

    @property
    def tracking_uri(self) -> str:
        uri = (self.connection.host or "").strip()
        if not uri:
            raise PermanentError(f"connection {self.conn_id!r}: host (tracking URI) is empty",
                                 system=self.system, reason="config:tracking_uri")
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
        return uri

    @property
    def registry_uri(self) -> str:
        return str(self.extra.get("registry_uri") or self.tracking_uri)

    @property
    def artifact_location(self) -> str | None:
        location = self.extra.get("artifact_location")
        return str(location) if location else None

    def configure_environment(self) -> None:
        """Point the ``mlflow`` fluent API (used by ``mlflow.sklearn.log_model`` & co) at this server."""
        import mlflow

        if self.connection.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.connection.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.connection.password or ""
        elif self.connection.password:
            os.environ["MLFLOW_TRACKING_TOKEN"] = self.connection.password
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(self.timeout)))
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)

    def get_conn(self) -> Any:
        from mlflow import MlflowClient

        self.configure_environment()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def ensure_experiment(self, name: str) -> str:
        """The experiment id, creating the experiment (with our artifact location) if missing."""
        client = self.get_conn()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(client.create_experiment(name, artifact_location=self.artifact_location))

    def probe(self) -> str:
        import mlflow

        client = self.get_conn()
        experiments = self.read(lambda: client.search_experiments(max_results=5), "search_experiments")
        return f"MLflow {mlflow.__version__} at {self.tracking_uri.split('://')[0]}, {len(experiments)}+ experiments"
