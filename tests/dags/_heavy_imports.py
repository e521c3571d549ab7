"""Which heavy modules each DAG file imports at top level, found by one separate interpreter.

The interpreter imports what nearly every DAG file imports first (Airflow's SDK, ~4 s, and our defaults),
then forks a child per DAG file that imports just that file. A child starts with none of HEAVY_MODULES
unless those common imports pull one in (then every file reports it), so what it reports is what a fresh
interpreter importing that file would: the same check as one interpreter per file, without paying
Airflow's import once per file. tests/dags/conftest.py starts it as soon as the run's tests are known.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").rglob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("pandas", "sklearn", "mlflow", "great_expectations", "web3", "bitcoin", "pyarrow", "matplotlib")

PROBE = """
import importlib.util, json, os, sys
from airflow.sdk import Param, dag, get_current_context, task
import tributary.core.defaults, tributary.core.failfast, tributary.core.params
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


class HeavyImportsProbe:
    """The probe, started at construction; ``results()`` waits for it."""

    def __init__(self) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="tributary-heavy-imports-"))
        self.log = (self.out / "log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, json.dumps([HEAVY_MODULES, [str(p) for p in DAG_FILES], str(self.out)])],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def results(self) -> dict[Path, object]:
        """For each DAG file: the heavy modules its import loaded, or why importing it failed."""
        returncode = self.process.wait(timeout=300)
        assert returncode == 0, f"the probe exited with {returncode}:\n{(self.out / 'log').read_text()[-4000:]}"
        answers = {}
        for index, path in enumerate(DAG_FILES):
            answer = self.out / str(index)
            answers[path] = json.loads(answer.read_text()) if answer.exists() else "its probe process died"
        return answers

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.out, ignore_errors=True)
