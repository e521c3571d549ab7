"""Every DAG file imports cleanly, declares what operators need, and stays light to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").rglob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("pandas", "sklearn", "mlflow", "great_expectations", "web3", "bitcoin", "pyarrow", "matplotlib")


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
        dag.params.validate()  # every default satisfies its own schema


# One fresh interpreter imports Airflow's SDK once (the ~4 s every DAG file pays first), then forks a child
# per DAG file that imports just that file. A child starts with none of HEAVY_MODULES unless airflow.sdk
# itself pulls one in (then every file reports it), so what it reports is what a fresh interpreter
# importing that file would: the same check as one interpreter per file, without paying Airflow 16 times.
HEAVY_IMPORTS_PROBE = """
import importlib.util, json, os, sys
import airflow.sdk
heavy, paths, out = json.loads(sys.argv[1])
children = []
for index, path in enumerate(paths):
    pid = os.fork()
    if pid == 0:
        try:
            spec = importlib.util.spec_from_file_location("dag_under_test", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            result = sorted(m for m in heavy if m in sys.modules)
        except BaseException as exc:
            result = f"importing {path} failed: {exc!r}"
        with open(os.path.join(out, str(index)), "w") as f:
            json.dump(result, f)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def heavy_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, object]:
    """The heavy modules each DAG file imports at top level (or why importing it failed)."""
    out = tmp_path_factory.mktemp("heavy-imports")
    subprocess.run([sys.executable, "-c", HEAVY_IMPORTS_PROBE,
                    json.dumps([HEAVY_MODULES, [str(p) for p in DAG_FILES], str(out)])],
                   capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    results = {}
    for index, path in enumerate(DAG_FILES):
        answer = out / str(index)
        results[path] = json.loads(answer.read_text()) if answer.exists() else "the probe process died"
    return results


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dag_file_does_not_import_heavy_modules_at_top_level(path: Path, heavy_imports: dict[Path, object]) -> None:
    assert heavy_imports[path] == []
