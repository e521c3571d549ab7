"""DAG generation: one DAG per spec, and a broken spec is an import error of its own that breaks nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def dags_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dags folder with our two DAG files, reading specs from ``tmp_path/pipelines``."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for name in ("ml_pipelines.py", "_pipeline_spec_errors.py"):
        shutil.copy(ROOT / "dags" / "ml" / name, folder / name)
    monkeypatch.setenv("TRIBUTARY_PIPELINES_DIR", str(tmp_path / "pipelines"))
    return folder


def _dagbag(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder), bundle_path=folder)


def test_broken_spec_is_an_import_error_naming_file_and_field_while_other_pipelines_load(
        dags_folder: Path, write_spec: Any, sensor_spec: Any) -> None:
    write_spec(sensor_spec("good"))
    broken = sensor_spec("broken")
    broken["processing"]["features"][0]["column"] = "readingg"
    write_spec(broken)

    bag = _dagbag(dags_folder)

    assert set(bag.import_errors) == {"_pipeline_spec_errors.py"}  # not ml_pipelines.py: its DAGs stay healthy
    error = bag.import_errors["_pipeline_spec_errors.py"]
    assert "1 broken pipeline spec(s)" in error
    assert "broken.yaml" in error
    assert "field 'processing.features[0]': unknown input column 'readingg'" in error
    assert "good.yaml" not in error
    assert {"ml_pipeline_good", "ml_pipeline_good_analysis"} <= set(bag.dags)
    assert not any("broken" in dag_id for dag_id in bag.dags)
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {"ml_pipelines.py"}


def test_valid_specs_give_no_import_error(dags_folder: Path, write_spec: Any, sensor_spec: Any) -> None:
    write_spec(sensor_spec("one"))
    write_spec(sensor_spec("two", analysis={"enabled": False}))
    bag = _dagbag(dags_folder)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["ml_pipeline_one", "ml_pipeline_one_analysis", "ml_pipeline_two"]


def test_generated_dags_follow_the_project_rules(dags_folder: Path) -> None:
    shutil.rmtree(dags_folder.parent / "pipelines", ignore_errors=True)
    shutil.copytree(ROOT / "include" / "pipelines", dags_folder.parent / "pipelines")
    bag = _dagbag(dags_folder)
    assert bag.import_errors == {}
    dag = bag.dags["ml_pipeline_breast_cancer"]
    assert [t.task_id for t in dag.topological_sort()] == ["collect", "validate", "process", "store"]
    assert {"ml", "pipeline", "breast_cancer"} <= set(dag.tags)
    assert dag.params["max_failure_rate"] == 0.02 and dag.params["partition_date"] is None
    dag.params.validate()
    store = dag.get_task("store")
    assert sorted(a.uri for a in store.outlets) == ["tributary://datasets/breast_cancer",
                                                    "tributary://warehouse/public/ml_dataset_breast_cancer"]
    for task in dag.tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff and task.on_failure_callback
        assert task.owner == "ml"
    analysis = bag.dags["ml_pipeline_breast_cancer_analysis"]
    assert [a.uri for a in analysis.timetable.asset_condition.objects] == [
        "tributary://datasets/breast_cancer"]
    assert "ml_dataset_breast_cancer" in dag.doc_md and "quarantine" in dag.doc_md


def test_a_spec_airflow_would_refuse_later_is_isolated_too(dags_folder: Path, write_spec: Any,
                                                           sensor_spec: Any) -> None:
    write_spec(sensor_spec("good"))
    write_spec(sensor_spec("cron", schedule="every day at noon"))  # Airflow only fails when serializing
    write_spec(sensor_spec("tagged", tags=["t" * 120]))  # passes the schema, refused by DAG()
    bag = _dagbag(dags_folder)
    assert set(bag.import_errors) == {"_pipeline_spec_errors.py"}
    error = bag.import_errors["_pipeline_spec_errors.py"]
    assert "2 broken pipeline spec(s)" in error
    assert "cron.yaml: field 'schedule': 'every day at noon' is neither a cron expression" in error
    assert "tagged.yaml: its DAG cannot be built: ValueError: tag cannot be longer than 100 characters" in error
    assert sorted(bag.dags) == ["ml_pipeline_good", "ml_pipeline_good_analysis"]
