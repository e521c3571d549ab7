"""Every DAG file imports cleanly, declares what operators need, and stays light to parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dags._heavy_imports import DAG_FILES, ROOT

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_there_are_dag_files() -> None:
    assert DAG_FILES, "no DAG files found"


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    files_with_dags = {Path(dag.fileloc).resolve() for dag in dagbag.dags.values()}
    assert files_with_dags == {p.resolve() for p in DAG_FILES}


def test_every_dag_is_documented_tagged_owned_and_retried(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner not in ("", "airflow"), f"{where} has the default owner"
            assert task.retries >= 2, f"{where} retries {task.retries} < 2"
            assert task.on_failure_callback, f"{where} has no failure callback"
            assert task.retry_exponential_backoff, f"{where} has no exponential backoff"


def test_every_param_is_typed(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            assert "type" in dag.params.get_param(name).schema, f"{dag_id}: param {name} has no type"
        for name in dag.params:  # every default satisfies its own schema (a required param has none)
            if dag.params.get_param(name).has_value or dag.params.get_param(name).value is None:
                dag.params.get_param(name).resolve()


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dag_file_does_not_import_heavy_modules_at_top_level(path: Path, heavy_imports: dict[Path, object]) -> None:
    assert heavy_imports[path] == []
