"""Batch scoring: the champion's predictions for a dataset, stored in ``ml_predictions``.

The partition is (model name, dataset, score date). One transaction takes an advisory lock on the
partition, deletes it and COPYs the new rows, so re-running a date replaces its predictions (whatever
version was champion the first time) and never duplicates them; readers see the old or the new
partition, never a mix. Rows stream through in batches: the source is read, scored and copied one
batch at a time.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from tributary.core.errors import DataError
from tributary.ml import SYSTEM
from tributary.ml.models.datasets import DatasetSource
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

TABLE = "ml_predictions"
_COLUMNS = ("model_name", "dataset", "score_date", "row_key", "model_version", "prediction", "dag_id", "run_id")


@dataclass(frozen=True)
class ScoreResult:
    model_name: str
    model_version: str
    dataset: str
    score_date: str
    rows: int
    replaced: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_batches(model: Any, source: DatasetSource, batch_size: int) -> Iterator[tuple[list[str], list[Any]]]:
    """(row keys, predictions) per batch; the model is fed the columns its signature names."""
    from tributary.ml.models.evaluation import model_inputs

    columns: list[str] | None = None
    for batch in source.iter_batches(batch_size):
        source.check_columns(batch, labelled=False)
        columns = columns or model_inputs(model, source.feature_columns(batch))
        missing = [c for c in columns if c not in batch.columns]
        if missing:
            raise DataError(f"{source.name} lacks the model's input column(s) {missing[:10]}", system=SYSTEM,
                            reason="schema_mismatch")
        yield [str(k) for k in batch[source.key]], list(model.predict(batch[columns]))


def copy_rows(cur: Any, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """``COPY ... FROM STDIN WITH (FORMAT csv)`` with psycopg 3 (what PostgresHook returns) or psycopg2."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    if hasattr(cur, "copy_expert"):  # psycopg2
        buffer.seek(0)
        cur.copy_expert(statement, buffer)
    else:
        with cur.copy(statement) as copy:
            copy.write(buffer.getvalue())


def write_predictions(
    conn: Any,
    *,
    model_name: str,
    model_version: str,
    dataset: str,
    score_date: date,
    batches: Iterable[tuple[list[str], list[Any]]],
    dag_id: str,
    run_id: str,
) -> tuple[int, int]:
    """Replace the (model, dataset, date) partition with ``batches``; returns (rows written, rows replaced)."""
    written = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                        (f"{TABLE}:{model_name}:{dataset}:{score_date.isoformat()}",))
            cur.execute(f"DELETE FROM {TABLE} WHERE model_name = %s AND dataset = %s AND score_date = %s",
                        (model_name, dataset, score_date))
            replaced = cur.rowcount
            for keys, predictions in batches:
                rows = [(model_name, dataset, score_date.isoformat(), key, int(model_version), str(prediction),
                         dag_id, run_id) for key, prediction in zip(keys, predictions, strict=True)]
                copy_rows(cur, f"COPY {TABLE} ({', '.join(_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", rows)
                written += len(rows)
            if written == 0:
                raise DataError(f"{dataset} has no rows to score for {score_date}; the partition is kept",
                                system=SYSTEM, reason="empty_input")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return written, replaced


def score_to_warehouse(
    *,
    model_name: str,
    model_version: str,
    model: Any,
    source: DatasetSource,
    score_date: date,
    dag_id: str,
    run_id: str,
    warehouse_conn_id: str = WAREHOUSE_CONN_ID,
    batch_size: int = 10_000,
) -> ScoreResult:
    from tributary.storage.warehouse import WarehouseHook

    with WarehouseHook(warehouse_conn_id).session() as conn:
        written, replaced = write_predictions(
            conn, model_name=model_name, model_version=model_version, dataset=source.name, score_date=score_date,
            batches=predict_batches(model, source, batch_size), dag_id=dag_id, run_id=run_id)
    log.info("scored %d rows of %s with %s v%s for %s (replaced %d)", written, source.name, model_name,
             model_version, score_date, replaced)
    return ScoreResult(model_name, str(model_version), source.name, score_date.isoformat(), written, replaced)
