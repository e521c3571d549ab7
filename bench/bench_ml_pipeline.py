"""Benchmark 4: the spec-driven ML data pipeline (collect -> validate -> process -> store) on 1M and 10M rows.

The input is a synthetic but realistic day of order lines, dropped in the landing folder as one CSV file
(the way an OLTP export arrives): ints, floats, categorical strings, ISO timestamps with ``Z``, dates,
booleans, nulls (discount, ship date, coupon, membership, channel), about 0.5 % re-sent duplicate orders,
and about 1 % bad rows that validation must quarantine: values out of range or not in their set, numbers
and timestamps that do not parse, empty keys, SKUs of the wrong shape, and lines with an extra field. The
file is written in chunks of 500,000 rows with pyarrow, so generating 10M rows takes little memory.

A pipeline spec (``files`` source, GX suite of row- and table-level expectations, missing-value rules and
four features) and its suite are written to a temporary folder; nothing is added to ``include/``.

Each size runs in a **fresh subprocess**. It builds the DAG exactly as ``dags/ml/ml_pipelines.py`` does
(``tributary.ml.pipeline.factory.build_pipeline_dag``) and runs its four operators in order, the way the
task runner does: render the templated fields with a task context, ``execute()``, hand the returned manifest
to the next task. Metrics go to ``ml_metrics`` (and MLflow, a sqlite store in the temporary folder), rejected
rows to ``quarantine``, the rows to the Parquet partition and the warehouse table, as in a real run. The
steps' inner calls are timed (without changing them) to show where the time goes.

Peak RSS is that process's ``ru_maxrss``. Processes the steps start would be added; helpers that imports fork
before the steps (``file -b``, ``uname -p``) are not, because Linux hands a forked process the parent's RSS
as its high-water mark. For the same reason this parent stays small: generating the file and the baseline
COPY run in processes of their own. An RSS sampler (every 0.2 s) also shows each step's highest and final RSS.

The store step is compared with a raw ``COPY ... FROM STDIN`` of the same rows (the stored Parquet
partition, with the same ``ds`` and ``run_id`` columns, encoded to CSV with pyarrow as the store step does,
streamed in one COPY) into a plain table with the same columns and types (``LIKE <table> INCLUDING
DEFAULTS``, no primary key) on the same server. A ``CHECKPOINT`` precedes both loads.

The warehouse is a dedicated database created with ``tributary.storage.embedded.provision`` (the server on
127.0.0.1:5432, or a private pgserver cluster) and dropped at the end; temporary files are removed.

    .venv/bin/python bench/bench_ml_pipeline.py [--sizes 1000000 10000000] [--baseline-sizes 1000000 10000000]

Prints, per size,
``pipeline <N> rows: <rows/s> rows/s end-to-end, peak RSS <MB> MB (collect x s, validate y s, process z s,
store w s)`` with detail lines, then ``store throughput: <rows/s> vs raw COPY FROM STDIN <rows/s> (ratio <r>,
target >= 0.5)`` and ``peak memory 10M vs 1M: <ratio> (target <= 2x)``. Exits non-zero (after printing the
figures) when a target is missed or a run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PIPELINE = "bench_orders"
TABLE = "ml_dataset_bench_orders"
PARTITION = "2026-03-01"
RAW_TABLE = "bench_raw_copy"
CHUNK_ROWS = 500_000
BATCH_ROWS = 100_000  # the spec's processing.batch_rows (the default of a spec)
STORE_RATIO_TARGET = 0.5
MEMORY_RATIO_TARGET = 2.0
STEPS = ("collect", "validate", "process", "store")

CHANNELS = ["web", "app", "store", "phone"]
COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL", "SE", "BE", "AT", "CH", "DK", "IE", "PT", "CZ", "NO",
             "FI", "CA", "AU"]
COUPONS = ["SPRING10", "WELCOME5", "VIP20", "FREESHIP", "BUNDLE15"]

SUITE: dict[str, Any] = {
    "name": "bench_orders",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "quantity", "min_value": 1,
                                                                   "max_value": 1000}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "unit_price", "min_value": 0,
                                                                   "max_value": 100000}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "discount", "min_value": 0,
                                                                   "max_value": 0.9}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "channel", "value_set": CHANNELS}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "country", "value_set": COUNTRIES}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "sku", "regex": r"^SKU-[0-9]{6}$"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "quantity", "min_value": 1,
                                                                 "max_value": 10}},
    ],
}

SPEC: dict[str, Any] = {
    "name": PIPELINE,
    "description": "Synthetic order lines of one day, one CSV export per day in the landing folder (benchmark).",
    "schedule": None,
    "tags": ["bench"],
    "source": {"kind": "files", "path": PIPELINE + "/{{ partition }}/*.csv", "format": "csv",
               "csv": {"header": True, "delimiter": ","}},
    "columns": [
        {"name": "order_id", "type": "int"},
        {"name": "customer_id", "type": "int"},
        {"name": "ordered_at", "type": "timestamp"},
        {"name": "ship_date", "type": "date"},
        {"name": "channel", "type": "string"},
        {"name": "country", "type": "string"},
        {"name": "sku", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "unit_price", "type": "float"},
        {"name": "discount", "type": "float"},
        {"name": "is_member", "type": "bool"},
        {"name": "coupon", "type": "string"},
    ],
    "key": ["order_id"],
    "validation": {"suite": "bench_orders_suite.json", "max_failure_rate": 0.05},
    "processing": {
        "batch_rows": BATCH_ROWS,
        "missing": {"default": "keep", "columns": {"discount": "zero", "channel": "mode",
                                                   "coupon": {"value": "none"}}},
        "features": [
            {"name": "gross", "op": "product", "columns": ["quantity", "unit_price"]},
            {"name": "log_unit_price", "op": "log1p", "column": "unit_price"},
            {"name": "unit_price_z", "op": "zscore", "column": "unit_price"},
            {"name": "channel_code", "op": "map", "column": "channel",
             "mapping": {"web": "0", "app": "1", "store": "2", "phone": "3"}},
        ],
    },
    "storage": {"table": TABLE, "postgres": True, "parquet": True},
    "analysis": {"enabled": False},
}


def own_rss_mb() -> float:
    """Peak RSS of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_rss_mb() -> float:
    """The largest peak RSS among this process's waited-for children."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


# --------------------------------------------------------------------------- the landing file
def _with_nulls(array: Any, mask: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), pa.scalar(None, array.type), array)


def _replace(array: Any, mask: Any, choices: list[str], rng: Any) -> Any:
    """``array`` (strings) with the masked positions replaced by values drawn from ``choices``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = int(mask.sum())
    if not count:
        return array
    values = pa.array(rng.choice(choices, count), pa.string())
    return pc.replace_with_mask(array, pa.array(mask), values)


def order_chunk(rng: Any, first_id: int, rows: int) -> Any:
    """``rows`` fresh order lines as a table of strings (the CSV's text), about 1 % of them bad."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    day = np.datetime64(PARTITION, "s").astype(np.int64)

    def text(values: Any) -> Any:
        return pc.cast(pa.array(values), pa.string())

    def pick(choices: list[str], p: list[float] | None = None) -> Any:
        return pc.take(pa.array(choices, pa.string()), pa.array(rng.choice(len(choices), rows, p=p)))

    ordered = pa.array(day + rng.integers(0, 86400, rows), pa.timestamp("s"))
    shipped = pa.array((day // 86400 + rng.integers(0, 8, rows)).astype(np.int32), pa.date32())
    weights = np.linspace(3.0, 0.2, len(COUNTRIES))
    sku = pc.binary_join_element_wise("SKU-", pc.utf8_lpad(text(rng.zipf(1.3, rows) % 1_000_000), 6, "0"), "")
    columns = {
        "order_id": text(np.arange(first_id, first_id + rows, dtype=np.int64)),
        "customer_id": text(rng.integers(1, 250_000, rows)),
        "ordered_at": pc.strftime(ordered, format="%Y-%m-%dT%H:%M:%SZ"),
        "ship_date": _with_nulls(pc.cast(shipped, pa.string()), rng.random(rows) < 0.08),
        "channel": _with_nulls(pick(CHANNELS, [0.5, 0.3, 0.15, 0.05]), rng.random(rows) < 0.01),
        "country": pick(COUNTRIES, list(weights / weights.sum())),
        "sku": sku,
        "quantity": text(np.minimum(rng.geometric(0.45, rows), 1000)),
        "unit_price": text(np.round(rng.lognormal(3.0, 1.0, rows), 2)),
        "discount": _with_nulls(pick(["0", "0.05", "0.1", "0.15", "0.2", "0.5"]), rng.random(rows) < 0.10),
        "is_member": _with_nulls(pick(["true", "false"], [0.35, 0.65]), rng.random(rows) < 0.02),
        "coupon": _with_nulls(pick(COUPONS), rng.random(rows) > 0.15),
    }
    # About 1 % bad rows, each with one kind of defect.
    kind = np.where(rng.random(rows) < 0.01, rng.integers(0, 7, rows), -1)
    defects: list[tuple[str, list[str]]] = [
        ("quantity", ["0", "-3", "2500"]),                       # out of range (GX)
        ("channel", ["fax", "Web ", "marketplace"]),              # not in the set (GX)
        ("unit_price", ["n/a", "12.50 EUR", "-"]),                # not a float (typing)
        ("ordered_at", ["2026-02-30T10:00:00Z", "01/03/2026 10:00", "yesterday"]),  # not a timestamp
        ("order_id", [""]),                                      # empty key
        ("sku", ["SKU-12AB", "sku-001234", "SKU-1234567"]),       # wrong shape (GX regex)
        ("customer_id", [""]),                                   # null where not allowed (GX)
    ]
    for number, (column, choices) in enumerate(defects):
        mask = kind == number
        if choices == [""]:
            columns[column] = _with_nulls(columns[column], mask)
        else:
            columns[column] = _replace(columns[column], mask, choices, rng)
    return pa.table(columns)


def write_landing_file(path: Path, rows: int, seed: int = 20260301) -> dict[str, int]:
    """A CSV of exactly ``rows`` data lines: fresh orders, ~0.5 % re-sent duplicates, ~0.02 % malformed lines."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = duplicates = malformed = 0
    next_id = 10_000_001
    previous: Any = None
    options = pacsv.WriteOptions(include_header=True, quoting_style="none")
    with open(path, "wb") as out:
        while written < rows:
            size = min(CHUNK_ROWS, rows - written)
            broken = int(size * 0.0002)
            repeats = int(size * 0.005)
            fresh = order_chunk(rng, next_id, size - broken - repeats)
            next_id += fresh.num_rows
            source = previous if previous is not None else fresh  # re-sends of the previous chunk's orders
            repeated = source.take(pa.array(rng.integers(0, source.num_rows, repeats)))
            chunk = pa.concat_tables([fresh, repeated])
            chunk = chunk.take(pa.array(rng.permutation(chunk.num_rows)))
            buffer = io.BytesIO()
            pacsv.write_csv(chunk, buffer, options)
            out.write(buffer.getvalue())
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            # Lines with one field too many (a stray delimiter in the export).
            for line in range(broken):
                out.write(f"{next_id + line},1,{PARTITION}T00:00:00Z,,web,DE,SKU-000001,1,9.99,,true,,x\n".encode())
            next_id += broken
            written += chunk.num_rows + broken
            duplicates += repeats
            malformed += broken
            previous = fresh
    return {"rows": written, "duplicates": duplicates, "malformed": malformed, "bytes": path.stat().st_size}


# --------------------------------------------------------------------------- the pipeline (child process)
class StepTimers:
    """Wall time spent inside selected functions of the steps (wrapped, not changed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        setattr(owner, attribute, timed)

    def install(self) -> None:
        import pyarrow.csv as pacsv

        import tributary.ml.metrics as metrics
        import tributary.ml.pipeline.processing as processing
        import tributary.ml.pipeline.storage as storage
        import tributary.ml.pipeline.validation as validation
        import tributary.storage.quarantine as quarantine

        self.wrap(validation, "cast_frame", "validate.typing")
        self.wrap(validation.SuiteRunner, "validate", "validate.gx")
        self.wrap(quarantine, "quarantine", "validate.quarantine_insert")
        self.wrap(processing, "record_keys", "process.record_keys")
        self.wrap(processing, "fill_missing", "process.fill_missing")
        self.wrap(processing, "add_features", "process.features")
        self.wrap(pacsv, "write_csv", "store.csv_encode")
        self.wrap(storage, "_copy", "store.copy")
        self.wrap(storage, "load_table", "store.load_table")
        self.wrap(storage, "replace_partition", "store.parquet_partition")
        for name, label in (("record_task_metrics", "metrics.warehouse"), ("mirror_to_mlflow", "metrics.mlflow")):
            if hasattr(metrics, name):  # mirror_to_mlflow: newer operators also log their metrics to MLflow
                self.wrap(metrics, name, label)


def _context(dag: Any, task_id: str, run_id: str, logical_date: datetime) -> dict[str, Any]:
    """What the task runner hands ``execute()`` (the fields the pipeline operators use)."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time.context import OutletEventAccessors

    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=1)
    return {"ti": ti, "run_id": run_id, "logical_date": logical_date, "ds": logical_date.strftime("%Y-%m-%d"),
            "data_interval_start": logical_date, "data_interval_end": logical_date + timedelta(days=1),
            "params": dag.params.dump(), "outlet_events": OutletEventAccessors(), "task": dag.get_task(task_id)}


class RssSampler:
    """Samples the current RSS every ``interval`` s: the highest and the last value of each step (to tell a
    step's transient peak from memory that stays)."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        import psutil

        self.step = "import"
        self.highest: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def sample(self) -> None:
        rss = self._process.memory_info().rss / 2**20
        self.highest[self.step] = max(self.highest.get(self.step, 0.0), rss)
        self.last[self.step] = rss

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def enter(self, step: str) -> None:
        self.sample()
        self.step = step

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def run_pipeline(spec_path: Path) -> dict[str, Any]:
    """Build the spec's DAG and run collect >> validate >> process >> store; figures as a dict."""
    inherited = own_rss_mb()  # the high-water mark this process got from its parent at fork (should be small)
    started = time.perf_counter()
    from tributary.ml.pipeline.factory import build_pipeline_dag
    from tributary.ml.pipeline.specs import load_spec

    spec = load_spec(spec_path)
    dag = build_pipeline_dag(spec, register=False)
    timers = StepTimers()
    timers.install()
    # Import what the steps import lazily (GX, the Postgres provider, MLflow) and create the MLflow store, as a
    # deployment that has run before has it, so the first step's figure is its own work.
    import great_expectations  # noqa: F401
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: F401

    prepare_mlflow()
    figures: dict[str, Any] = {"rss_inherited_mb": inherited, "import_s": time.perf_counter() - started,
                               "rss_after_import_mb": own_rss_mb(), "children_rss_after_import_mb": children_rss_mb(),
                               "steps": {}, "rss_after": {}, "metrics": {}}
    logical_date = datetime.fromisoformat(PARTITION).replace(tzinfo=UTC)
    run_id = figures["run_id"] = f"manual__{logical_date.isoformat()}"
    manifest: Any = None
    with RssSampler() as sampler:
        for task_id in STEPS:
            task = dag.get_task(task_id)
            if task_id != "collect":
                task.manifest = manifest  # what XCom would hand over
            if task_id == "store":
                checkpoint()
            context = _context(dag, task_id, run_id, logical_date)
            task.render_template_fields(context)
            sampler.enter(task_id)
            step_started = time.perf_counter()
            manifest = task.execute(context)
            figures["steps"][task_id] = time.perf_counter() - step_started
            figures["rss_after"][task_id] = own_rss_mb()
            figures["metrics"][task_id] = dict(task.metrics)
    figures["rss_sampled_highest"], figures["rss_sampled_last"] = sampler.highest, sampler.last
    figures["store"] = manifest
    figures["inner"] = timers.seconds
    # Children: only processes started during the steps count. Helpers forked by imports before them
    # (``file -b`` from croniter, ``uname -p`` from MLflow) report the parent's RSS at fork time (Linux keeps a
    # forked process's high-water mark across exec), which is not memory of their own.
    figures["children_rss_mb"] = children_rss_mb()
    spawned = figures["children_rss_mb"] > figures["children_rss_after_import_mb"]
    figures["peak_rss_mb"] = own_rss_mb() + (figures["children_rss_mb"] if spawned else 0.0)
    return figures


def prepare_mlflow() -> None:
    """The MLflow store and the pipeline's experiment (the parent has a throw-away process create them first,
    so that no measured process pays for the store's migrations)."""
    with contextlib.suppress(ImportError):
        from tributary.ml.hook import MlflowHook

        MlflowHook("tributary_mlflow").ensure_experiment(f"pipeline_{PIPELINE}")


def checkpoint() -> None:
    """Flush dirty buffers so each timed load starts from the same server state (needs superuser)."""
    from tributary.storage.warehouse import WarehouseHook

    conn = WarehouseHook().get_conn()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    except Exception as exc:
        print(f"(CHECKPOINT not possible: {exc})", file=sys.stderr)
    finally:
        conn.close()


def child_main(command: list[str], result_path: Path) -> int:
    """One unit of work in its own process; its figures go to ``result_path`` as JSON."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    kind, *rest = command
    figures: dict[str, Any]
    if kind == "generate":
        figures = write_landing_file(Path(rest[1]), int(rest[0]))
    elif kind == "prepare":
        prepare_mlflow()
        figures = {}
    elif kind == "pipeline":
        figures = run_pipeline(Path(rest[0]))
    elif kind == "baseline":
        figures = raw_copy(rest[0], Path(rest[1]), rest[2])
    else:
        raise SystemExit(f"unknown child command {command}")
    result_path.write_text(json.dumps(figures, default=str))
    return 0


# --------------------------------------------------------------------------- the baseline
def raw_copy(dsn: str, parquet: Path, run_id: str) -> dict[str, float]:
    """COPY the rows of ``parquet`` (+ ds, run_id) FROM STDIN into a plain table; one COPY statement."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    file = pq.ParquetFile(str(parquet))
    names = file.schema_arrow.names
    columns = ["ds", "run_id", *names]
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        conn.execute(f"CREATE TABLE {RAW_TABLE} (LIKE {TABLE} INCLUDING DEFAULTS)")
        conn.execute("CHECKPOINT")
        conn.autocommit = False
        encode = 0.0
        rows = 0
        started = time.perf_counter()
        with conn.cursor() as cur:
            statement = f"COPY {RAW_TABLE} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
            with cur.copy(statement) as copy:
                for batch in file.iter_batches(batch_size=BATCH_ROWS):
                    encode_started = time.perf_counter()
                    count = batch.num_rows
                    constants = [pa.array([PARTITION] * count, pa.string()), pa.array([run_id] * count, pa.string())]
                    framed = pa.RecordBatch.from_arrays(constants + list(batch.columns), names=columns)
                    buffer = io.BytesIO()
                    pacsv.write_csv(framed, buffer, options)
                    encode += time.perf_counter() - encode_started
                    copy.write(buffer.getvalue())
                    rows += count
        conn.commit()
        seconds = time.perf_counter() - started
        conn.autocommit = True
        conn.execute(f"DROP TABLE {RAW_TABLE}")
    return {"rows": rows, "seconds": seconds, "encode_s": encode}


# --------------------------------------------------------------------------- the parent
def child_environment(root: Path, location: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "TRIBUTARY_"))
           and k != "AIRFLOW_HOME"}
    env.update(location.connection_env())
    # MLflow as the run command sets it up: a sqlite tracking store and an artifact folder in the deployment.
    mlflow = root / "state" / "mlflow"
    env["AIRFLOW_CONN_TRIBUTARY_MLFLOW"] = json.dumps({"conn_type": "tributary_mlflow",
                                                       "host": f"sqlite:///{mlflow / 'mlflow.db'}",
                                                       "extra": {"artifact_location": str(mlflow / "artifacts")}})
    env["TRIBUTARY_MLFLOW_URI"] = f"sqlite:///{mlflow / 'mlflow.db'}"
    env["TRIBUTARY_MLFLOW_ARTIFACTS"] = str(mlflow / "artifacts")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update({
        "AIRFLOW_HOME": str(root / "airflow_home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "TRIBUTARY_DATA_DIR": str(root / "data"),
        "TRIBUTARY_REPORTS_DIR": str(root / "reports"),
        "TRIBUTARY_STATE_DIR": str(root / "state"),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def run_child(command: list[str], env: dict[str, str], folder: Path, name: str, timeout: float) -> dict[str, Any]:
    """Run ``command`` in a fresh process (log: ``folder/<name>.log``); returns its figures.

    The parent stays small (no pyarrow data, no Airflow) because a forked child starts with a copy of the
    parent's RSS, which Linux keeps in the child's ``ru_maxrss`` across ``exec``.
    """
    log_path, result_path = folder / f"{name}.log", folder / f"{name}.json"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--result", str(result_path),
                                    "--child", *command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if process.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{name} exited with {process.returncode}\n--- {log_path} (tail) ---\n{tail}")
    return dict(json.loads(result_path.read_text()))


def label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows:,}"


def reset_tables(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLE}")
        conn.execute("DELETE FROM quarantine WHERE source = %s", (f"ml_pipeline_{PIPELINE}",))
        conn.execute("VACUUM ANALYZE quarantine")


def prepare_warehouse(dsn: str, spec: dict[str, Any]) -> None:
    """Migrations (quarantine, ml_metrics) and the pipeline's table, as its migration would create it."""
    import psycopg

    from tributary.ml.pipeline.specs import render_ddl
    from tributary.storage.warehouse import apply_migrations

    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
        conn.execute(render_ddl(spec))
        conn.commit()


@contextlib.contextmanager
def warehouse_database(state_dir: Path) -> Iterator[Any]:
    from tributary.storage.embedded import drop_database, provision, stop_embedded

    location = provision(state_dir, database=f"tributary_bench_ml_{uuid.uuid4().hex[:8]}")
    try:
        yield location
    finally:
        try:
            drop_database(location)
        finally:
            stop_embedded()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=None,
                        help="sizes that get the raw COPY baseline (default: every size)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pipeline run")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.result)

    from _airflow import install_sigterm_handler

    install_sigterm_handler()
    baseline_sizes = set(args.sizes if args.baseline_sizes is None else args.baseline_sizes)
    root = Path(tempfile.mkdtemp(prefix="tributary-bench-ml-"))
    results: dict[int, dict[str, Any]] = {}
    baselines: dict[int, dict[str, float]] = {}
    failures: list[str] = []
    try:
        import yaml

        from tributary.ml.pipeline.specs import load_spec

        spec_dir = root / "pipelines"
        spec_dir.mkdir()
        (spec_dir / "bench_orders_suite.json").write_text(json.dumps(SUITE, indent=1))
        spec_path = spec_dir / f"{PIPELINE}.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        spec = load_spec(spec_path).as_dict()
        with warehouse_database(root / "state") as location:
            dsn = location.dsn()
            prepare_warehouse(dsn, spec)
            print(f"warehouse: {location.kind} database {location.database}; work folder {root}", flush=True)
            env = child_environment(root, location)
            run_child(["prepare"], env, root, "prepare-mlflow", args.timeout)
            for rows in args.sizes:
                name = label(rows)
                landing = root / "data" / "landing" / PIPELINE / PARTITION / f"orders_{PARTITION}.csv"
                started = time.perf_counter()
                made = run_child(["generate", str(rows), str(landing)], env, root, f"generate-{name}", args.timeout)
                print(f"  {name}: landing file {landing.name} {made['bytes'] / 2**20:,.0f} MiB, {made['rows']:,} "
                      f"lines ({made['duplicates']:,} re-sent duplicates, {made['malformed']:,} malformed), "
                      f"written in {time.perf_counter() - started:.1f} s", flush=True)
                reset_tables(dsn)
                try:
                    figures = run_child(["pipeline", str(spec_path)], env, root, f"pipeline-{name}", args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"pipeline {name}: {exc}")
                    print(f"FAIL: pipeline {name}: {exc}", flush=True)
                    break
                results[rows] = figures
                report_size(rows, figures)
                if rows in baseline_sizes:
                    stored = root / "data" / "datasets" / PIPELINE / f"ds={PARTITION}" / "part-0.parquet"
                    base = baselines[rows] = run_child(["baseline", dsn, str(stored), figures["run_id"]], env, root,
                                                       f"baseline-{name}", args.timeout)
                    print(f"  {name}: raw COPY FROM STDIN of the {base['rows']:,.0f} stored rows: "
                          f"{base['seconds']:.1f} s ({fmt_rate(base['rows'] / base['seconds'])} rows/s, of which "
                          f"CSV encoding {base['encode_s']:.1f} s)", flush=True)
                landing.unlink()
                shutil.rmtree(root / "data" / "datasets", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return summarize(results, baselines, failures)


def report_size(rows: int, figures: dict[str, Any]) -> None:
    steps = figures["steps"]
    total = sum(steps.values())
    metrics = figures["metrics"]
    print(f"pipeline {label(rows)} rows: {fmt_rate(rows / total)} rows/s end-to-end, peak RSS "
          f"{figures['peak_rss_mb']:,.0f} MB (collect {steps['collect']:.1f} s, validate {steps['validate']:.1f} s, "
          f"process {steps['process']:.1f} s, store {steps['store']:.1f} s)", flush=True)
    validated = metrics["validate"]
    processed = metrics["process"]
    table = figures["store"].get("table", {})
    print(f"  rows: {metrics['collect']['rows_in']:,.0f} collected ({metrics['collect'].get('parse_errors', 0):,.0f} "
          f"unparsable), {validated['rows_quarantined']:,.0f} quarantined "
          f"({validated['rows_quarantined'] / validated['rows_in']:.2%}, dq_score {validated['dq_score']:.4f}), "
          f"{processed['duplicates']:,.0f} duplicates dropped, {table.get('inserted', 0):,} stored "
          f"({processed.get('buckets', 1):.0f} process buckets)", flush=True)
    rss, highest, last = figures["rss_after"], figures["rss_sampled_highest"], figures["rss_sampled_last"]
    children = ("started during the steps, added" if figures["peak_rss_mb"] > rss["store"]
                else "forked by imports, not added")
    sampled = ", ".join(f"{step} {highest.get(step, 0):,.0f}/{last.get(step, 0):,.0f}" for step in STEPS)
    print(f"  peak RSS (ru_maxrss) after imports {figures['rss_after_import_mb']:,.0f} MB, after collect "
          f"{rss['collect']:,.0f}, validate {rss['validate']:,.0f}, process {rss['process']:,.0f}, store "
          f"{rss['store']:,.0f} MB; sampled RSS highest/at end: {sampled} MB", flush=True)
    print(f"  imports {figures['import_s']:.1f} s (not counted); RSS inherited at fork "
          f"{figures['rss_inherited_mb']:,.0f} MB; child processes {figures['children_rss_mb']:,.0f} MB ({children})",
          flush=True)
    inner = dict(figures["inner"])
    if "store.load_table" in inner:
        inner["store.index+swap+read (rest of load_table)"] = (
            inner.pop("store.load_table") - inner.get("store.csv_encode", 0) - inner.get("store.copy", 0))
    parts = ", ".join(f"{key} {value:.1f} s" for key, value in inner.items() if value >= 0.05)
    print(f"  inside the steps: {parts}", flush=True)


def summarize(results: dict[int, dict[str, Any]], baselines: dict[int, dict[str, float]],
              failures: list[str]) -> int:
    missed = list(failures)
    print()
    for rows, base in sorted(baselines.items()):
        figures = results[rows]
        stored = figures["store"].get("table", {}).get("rows", 0)
        store_rate = stored / figures["steps"]["store"]
        raw_rate = base["rows"] / base["seconds"]
        ratio = store_rate / raw_rate
        print(f"store throughput: {fmt_rate(store_rate)} rows/s vs raw COPY FROM STDIN {fmt_rate(raw_rate)} rows/s "
              f"(ratio {ratio:.2f}, target >= {STORE_RATIO_TARGET}) at {label(rows)} rows", flush=True)
        if ratio < STORE_RATIO_TARGET:
            missed.append(f"store throughput ratio {ratio:.2f} < {STORE_RATIO_TARGET} at {label(rows)} rows")
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = results[sizes[0]], results[sizes[-1]]
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        growth_small = small["peak_rss_mb"] - small["rss_after_import_mb"]
        growth_large = large["peak_rss_mb"] - large["rss_after_import_mb"]
        print(f"peak memory {label(sizes[-1])} vs {label(sizes[0])}: {ratio:.2f} (target <= {MEMORY_RATIO_TARGET:g}x); "
              f"{large['peak_rss_mb']:,.0f} MB vs {small['peak_rss_mb']:,.0f} MB, above the imports "
              f"{growth_large:,.0f} MB vs {growth_small:,.0f} MB", flush=True)
        if ratio > MEMORY_RATIO_TARGET:
            missed.append(f"peak memory ratio {ratio:.2f} > {MEMORY_RATIO_TARGET}")
    if missed:
        print("MISSED: " + "; ".join(m.splitlines()[0] for m in missed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
