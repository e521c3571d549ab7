"""Benchmark 1: how long the dag-processor takes to parse each DAG file under ``dags/``.

One fresh Python process per file, set up like the dag-processor's manager process (not timed): the
deployment's environment (``LocalDeployment``), ``import airflow``, the ``airflow.*`` modules the
file imports (the manager pre-imports them: ``[dag_processor] parsing_pre_import_modules``) and the
parsing code itself. Like the dag-processor, each measurement then runs in a process forked from
that one (after ``gc.freeze()``, as the manager does), so every run starts with the same modules
loaded and none of the file's own imports (``tributary.*`` ...) cached. The names that ``airflow.sdk``
loads lazily (``from airflow.sdk import dag, task`` imports the decorator machinery) are not
pre-imported, so they count (~15 ms): an upper bound for a long-running dag-processor, whose
manager may have them loaded. Per file, RUNS runs of each of:

* **import** (the figure and the target): the import of the DAG file exactly as DagBag does it
  (``SourceFileLoader`` under a unique module name), with bytecode already compiled (a warm-up run
  writes it to a private ``sys.pycache_prefix``, so nothing is written into the project).
* **dag-processor**: what the parsing process does with the file: the stability check,
  ``BundleDagBag(dag_folder=file)`` (import + validation) and the serialization of its DAGs.
* **without bytecode**: the import with the default bytecode lookup and no bytecode written, as the
  dag-processor runs when ``PYTHONDONTWRITEBYTECODE`` is set (this environment sets it): the DAG
  file and ``plugins/`` are compiled from source on every parse.

    .venv/bin/python bench/bench_dag_parse.py [--runs 5]

Prints, per file, ``parse <file>: <median> ms (target 100 ms, ratio <median/100>)`` followed by the
other two medians. Exits non-zero if a file fails to parse or its import median exceeds 3 x target.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAGS_DIR = PROJECT_ROOT / "dags"
TARGET_MS = 100.0
REGRESSION_FACTOR = 3.0
RESULT = "BENCH_RESULT "


# ----------------------------------------------------------------------------- child process
def _import_file(file: str) -> float:
    """The module import DagBag performs (airflow.dag_processing.importers.python_importer)."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    from airflow.sdk.definitions._internal.contextmanager import DagContext
    from airflow.utils.file import get_unique_dag_module_name

    name = get_unique_dag_module_name(file)
    DagContext.current_autoregister_module_name = name
    started = time.perf_counter()
    loader = SourceFileLoader(name, file)
    spec = spec_from_loader(name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return (time.perf_counter() - started) * 1000


def _processor_parse(file: str) -> float:
    """What the dag-processor's parsing process does (airflow.dag_processing.processor._parse_file)."""
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.dag_version_inflation_checker import check_dag_file_stability

    started = time.perf_counter()
    check_dag_file_stability(file)
    bag = BundleDagBag(dag_folder=file, bundle_path=DAGS_DIR, bundle_name="dags-folder", load_op_links=False)
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    elapsed = (time.perf_counter() - started) * 1000
    if bag.import_errors:
        raise RuntimeError(f"import errors: {bag.import_errors}")
    return elapsed


def _in_fork(measure: Callable[[str], float], file: str, timeout: int = 30) -> float:
    """Run ``measure(file)`` in a forked child (a clean copy of this process); returns its figure."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            import signal

            signal.alarm(timeout)
            payload = {"ms": measure(file)}
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the parsing process died (wait status {status})")
    result = json.loads(data)
    if "error" in result:
        raise RuntimeError(result["error"])
    return float(result["ms"])


def child(file: str, runs: int, pycache_prefix: str) -> None:
    import airflow  # noqa: F401
    from airflow.utils.file import iter_airflow_imports

    for module in iter_airflow_imports(file):  # what the dag-processor pre-imports for this file
        importlib.import_module(module)
    importlib.import_module("airflow.dag_processing.processor")

    gc.freeze()  # as the dag-processor's manager does before forking parsers (no copy-on-write storm)

    figures: dict[str, list[float]] = {}
    # With bytecode: compiled once (warm-up) into a private prefix, then read from there.
    sys.pycache_prefix, sys.dont_write_bytecode = pycache_prefix, False
    _in_fork(_processor_parse, file)
    figures["import"] = [_in_fork(_import_file, file) for _ in range(runs)]
    figures["processor"] = [_in_fork(_processor_parse, file) for _ in range(runs)]
    # Default bytecode lookup, nothing written (PYTHONDONTWRITEBYTECODE).
    sys.pycache_prefix, sys.dont_write_bytecode = None, True
    figures["source"] = [_in_fork(_import_file, file) for _ in range(runs)]
    print(RESULT + json.dumps(figures), flush=True)


# ----------------------------------------------------------------------------- parent
def measure_file(file: Path, runs: int, env: dict[str, str], pycache_prefix: Path) -> dict[str, list[float]]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(file), "--runs", str(runs), "--pycache-prefix", str(pycache_prefix)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"parsing {file} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len(RESULT):]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pycache-prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.runs, args.pycache_prefix)
        return 0

    from _airflow import clean_environ

    from tributary.cli.env import LocalDeployment

    files = sorted(DAGS_DIR.rglob("*.py"))
    if not files:
        print(f"no .py files under {DAGS_DIR}")
        return 1
    cached = [str(p.relative_to(PROJECT_ROOT)) for base in (DAGS_DIR, PROJECT_ROOT / "plugins")
              for p in base.rglob("__pycache__")]
    if cached:
        print(f"note: {len(cached)} __pycache__ folders under dags/ and plugins/ are used by the "
              f"'without bytecode' runs ({', '.join(cached[:3])}...)")
    failed = []
    with tempfile.TemporaryDirectory(prefix="tributary-bench-parse-") as tmp:
        deployment = LocalDeployment(home=Path(tmp) / "home", dags_folder=DAGS_DIR)
        env = deployment.environ(clean_environ())
        for file in files:
            name = file.relative_to(PROJECT_ROOT)
            try:
                figures = measure_file(file, args.runs, env, Path(tmp) / "pycache")
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"parse {name}: FAILED: {exc}", flush=True)
                failed.append(str(name))
                continue
            medians = {mode: statistics.median(values) for mode, values in figures.items()}
            median = medians["import"]
            print(f"parse {name}: {median:.1f} ms (target {TARGET_MS:.0f} ms, ratio {median / TARGET_MS:.2f}); "
                  f"dag-processor parse+serialize {medians['processor']:.1f} ms; "
                  f"without bytecode {medians['source']:.1f} ms "
                  f"(medians of {args.runs})", flush=True)
            if median > TARGET_MS * REGRESSION_FACTOR:
                failed.append(f"{name} ({median:.0f} ms > {REGRESSION_FACTOR:.0f} x target)")
    if failed:
        print(f"FAIL: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
