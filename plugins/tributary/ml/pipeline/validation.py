"""Validation: every batch is typed, checked against its Great Expectations suite, and split.

Per batch of raw rows:

1. rows the source could not parse (``_error``) are rejected with that reason;
2. values are cast to the spec's types; a value that is not of its type rejects the row;
3. rows with a null key column are rejected (they could never be stored);
4. the remaining rows are validated with the suite (GX 1.x, ephemeral context). Row-level
   expectations (``expect_column_values_*``, column pairs, multicolumn) reject exactly the rows
   they list as unexpected, whatever their ``mostly``; a failed table-level expectation (row
   count, column set, mean...) fails the batch as a whole.

Rejected rows go to the ``quarantine`` table with every reason; good rows continue. When a batch's
rejected share passes ``max_failure_rate`` (or a table-level expectation fails) the step raises
``DataError``: no retry, an alert, and the quarantine keeps the evidence. The results of every
run are written as HTML + JSON to the reports folder.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tributary.core.errors import DataError, PermanentError
from tributary.ml import SYSTEM
from tributary.ml.pipeline.processing import cast_frame, to_arrow, typed_schema
from tributary.ml.pipeline.reporting import esc, table, verdict, write_json, write_page
from tributary.ml.pipeline.sources import ERROR, POS
from tributary.ml.pipeline.staging import StageWriter, iter_batches
from tributary.storage.quarantine import Rejected, check_failure_rate

log = logging.getLogger(__name__)
_HIDDEN_KWARGS = {"column", "column_A", "column_B", "column_list", "batch_id", "result_format", "mostly"}


# --------------------------------------------------------------------------- Great Expectations
@dataclass
class Outcome:
    """One expectation on one batch."""

    type: str
    columns: list[str]
    kwargs: dict[str, Any]
    success: bool
    row_level: bool
    unexpected_rows: list[int] = field(default_factory=list)
    observed: Any = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.type}({', '.join(self.columns)})" if self.columns else self.type

    def describe_kwargs(self) -> str:
        text = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return text if len(text) <= 120 else text[:117] + "..."


def _for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain numpy/object dtypes: some GX expectations do not handle pandas' NA scalars."""
    plain = {}
    for name, values in frame.items():
        dtype = str(values.dtype)
        if dtype == "Int64":
            plain[name] = values.astype("float64") if values.isna().any() else values.astype("int64")
        elif dtype in ("boolean", "string", "str") or dtype.startswith("string"):
            plain[name] = values.astype(object).where(values.notna(), None)
        else:
            plain[name] = values
    return pd.DataFrame(plain, index=frame.index)


def _raised(exception_info: Any) -> str | None:
    if not isinstance(exception_info, Mapping):
        return None
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message"))
    for value in exception_info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


class SuiteRunner:
    """A GX ephemeral context holding one suite and a whole-dataframe batch definition."""

    def __init__(self, suite: Mapping[str, Any]) -> None:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before the import: it logs a lot
        import great_expectations as gx
        from great_expectations.core import ExpectationSuite
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.gx_version = gx.__version__
        config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                                   progress_bars=ProgressBarsConfig(globally=False))
        context = gx.get_context(mode="ephemeral", project_config=config)
        expectations = [{"type": e["type"], "kwargs": dict(e.get("kwargs", {})), "meta": e.get("meta", {})}
                        for e in suite["expectations"]]
        self.suite = context.suites.add(ExpectationSuite(name=suite["name"], expectations=expectations))
        self.batch_definition = (context.data_sources.add_pandas("tributary").add_dataframe_asset("batch")
                                 .add_batch_definition_whole_dataframe("whole"))

    def validate(self, frame: pd.DataFrame) -> list[Outcome]:
        """Validate ``frame`` (its index must be 0..n-1: unexpected rows are reported as positions)."""
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": _for_gx(frame)})
        result = batch.validate(self.suite, result_format="COMPLETE")
        outcomes = []
        for item in result.results:
            config = item.expectation_config
            kwargs = dict(config.kwargs)
            columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
            columns += list(kwargs.get("column_list", []))
            details = item.result or {}
            outcomes.append(Outcome(
                type=config.type, columns=columns,
                kwargs={k: v for k, v in kwargs.items() if k not in _HIDDEN_KWARGS},
                success=bool(item.success), row_level="unexpected_index_list" in details,
                unexpected_rows=[int(i) for i in details.get("unexpected_index_list") or []],
                observed=details.get("observed_value"), error=_raised(item.exception_info),
            ))
        return outcomes


# --------------------------------------------------------------------------- the validate step
@dataclass
class ExpectationTally:
    label: str
    kwargs: str
    row_level: bool
    batches: int = 0
    failed_batches: int = 0
    unexpected: int = 0
    observed: list[Any] = field(default_factory=list)


@dataclass
class ValidationResult:
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    batches: int = 0
    reasons: Counter = field(default_factory=Counter)
    tallies: dict[str, ExpectationTally] = field(default_factory=dict)
    batch_rows: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    gx_version: str | None = None
    report_html: str | None = None
    report_json: str | None = None

    @property
    def dq_score(self) -> float:
        """Share of the input rows that passed (1.0 for an empty input)."""
        return self.rows_out / self.rows_in if self.rows_in else 1.0


def _show(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "null"
    return repr(value.item() if hasattr(value, "item") else value)


def _reason_kind(reason: str) -> str:
    match = re.match(r"type: (\w+)=", reason)
    if match:
        return f"type:{match.group(1)}"
    return reason.split(":", 1)[0].split(" ", 1)[0]


def split_batch(raw: pd.DataFrame, spec: Mapping[str, Any], runner: SuiteRunner,
                tallies: dict[str, ExpectationTally]) -> tuple[pd.DataFrame, dict[int, list[str]], list[str]]:
    """(good typed rows, reasons per rejected position, failed table-level expectations) for one batch."""
    raw = raw.reset_index(drop=True)
    reasons: dict[int, list[str]] = {}
    for position, error in raw[ERROR].dropna().items():
        reasons.setdefault(int(position), []).append(str(error))
    typed, type_errors = cast_frame(raw, spec["columns"])
    for position, error in type_errors.dropna().items():
        reasons.setdefault(int(position), []).append(str(error))
    for name in spec.get("key", []):
        for position in typed.index[typed[name].isna()].tolist():
            if position not in reasons:
                reasons.setdefault(int(position), []).append(f"key_null: key column {name} is empty")

    candidates = typed.drop(index=list(reasons)).reset_index()
    original = candidates.pop("index").to_numpy()
    batch_failures: list[str] = []
    outcomes = runner.validate(candidates) if len(candidates) else []  # nothing left to validate
    for outcome in outcomes:
        if outcome.error:
            raise PermanentError(f"expectation {outcome.label} in suite {runner.suite.name} cannot run: "
                                 f"{outcome.error}", system=SYSTEM, reason="suite_error")
        tally = tallies.setdefault(outcome.label + outcome.describe_kwargs(),
                                   ExpectationTally(outcome.label, outcome.describe_kwargs(), outcome.row_level))
        tally.batches += 1
        tally.failed_batches += 0 if outcome.success else 1
        if not outcome.row_level:
            tally.observed.append(outcome.observed)
            if not outcome.success:
                batch_failures.append(f"{outcome.label} {outcome.describe_kwargs()} observed {outcome.observed!r}")
            continue
        tally.unexpected += len(outcome.unexpected_rows)
        for row in outcome.unexpected_rows:
            values = ", ".join(f"{c}={_show(candidates.at[row, c])}" for c in outcome.columns)
            arguments = outcome.describe_kwargs()
            reason = f"{outcome.label}: {values}" + (f" ({arguments})" if arguments else "")
            reasons.setdefault(int(original[row]), []).append(reason)
    good = typed.drop(index=list(reasons))
    return good, reasons, batch_failures


def validate_stage(raw_path: Path, validated_path: Path, spec: Mapping[str, Any], *, max_failure_rate: float,
                   quarantine: Callable[[list[Rejected]], int], source_label: str,
                   result: ValidationResult | None = None,
                   progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Validate ``raw_path`` batch by batch into ``validated_path``; quarantine through ``quarantine``.

    Raises ``DataError`` (after quarantining the batch) when a batch's rejected share passes
    ``max_failure_rate`` or a table-level expectation fails; ``result`` (pass your own to keep it
    when that happens) then holds the counts so far and ``result.failure`` says why.
    """
    progress = progress or log.info
    batch_rows = int(spec["processing"]["batch_rows"])
    runner = SuiteRunner(spec["suite"])
    schema = typed_schema([(c["name"], c["type"]) for c in spec["columns"]])
    result = result if result is not None else ValidationResult()
    result.gx_version = runner.gx_version
    started = time.monotonic()
    with StageWriter(validated_path, schema) as writer:
        for number, batch in enumerate(iter_batches(raw_path, batch_rows), start=1):
            raw = batch.to_pandas()
            good, reasons, batch_failures = split_batch(raw, spec, runner, result.tallies)
            positions = sorted(reasons)
            records = batch.take(positions).to_pylist() if positions else []
            rejected = [Rejected(key=str(record[POS]), reason="; ".join(reasons[p])[:2000],
                                 record={k: v for k, v in record.items() if k != ERROR and v is not None})
                        for p, record in zip(positions, records, strict=True)]
            result.rows_quarantined += quarantine(rejected) if rejected else 0
            for item in rejected:
                result.reasons.update({_reason_kind(part) for part in item.reason.split("; ")})
            if len(result.samples) < 25:
                result.samples.extend({"key": r.key, "reason": r.reason} for r in rejected[:25 - len(result.samples)])
            result.rows_in += len(raw)
            result.batches = number
            result.batch_rows.append({"batch": number, "rows": len(raw), "rejected": len(rejected),
                                      "table_failures": batch_failures})
            if batch_failures:
                result.failure = f"batch {number}: table-level expectation failed: {'; '.join(batch_failures)}"
                raise DataError(f"{source_label}: {result.failure}", system=SYSTEM, reason="batch_expectation_failed",
                                quarantined=result.rows_quarantined)
            try:
                check_failure_rate(f"{source_label} batch {number}", len(rejected), len(raw), max_failure_rate,
                                   system=SYSTEM)
            except DataError as exc:
                result.failure = str(exc)
                raise
            writer.write(to_arrow(good, schema))
            result.rows_out += len(good)
            if number % 10 == 0:
                progress(f"validate: {number} batches, {result.rows_in:,} rows, {result.rows_quarantined:,} "
                         f"quarantined ({time.monotonic() - started:.1f}s)")
    return result


# --------------------------------------------------------------------------- the report
def write_report(result: ValidationResult, folder: Path, meta: Mapping[str, Any]) -> ValidationResult:
    """``validation.html`` + ``validation.json`` in ``folder``; sets their paths on ``result``."""
    document = {
        **meta, "gx_version": result.gx_version, "rows_in": result.rows_in, "rows_out": result.rows_out,
        "rows_quarantined": result.rows_quarantined, "dq_score": round(result.dq_score, 6),
        "batches": result.batch_rows, "failure": result.failure, "reasons": dict(result.reasons.most_common()),
        "expectations": [t.__dict__ | {"observed": t.observed[:5]} for t in result.tallies.values()],
        "quarantine_sample": result.samples,
    }
    json_path = write_json(folder / "validation.json", document)
    summary = table(["", ""], [
        ("pipeline", meta.get("pipeline")), ("partition", meta.get("partition")), ("run", meta.get("run_id")),
        ("suite", meta.get("suite")), ("Great Expectations", result.gx_version),
        ("rows in", f"{result.rows_in:,}"), ("rows passed", f"{result.rows_out:,}"),
        ("rows quarantined", f"{result.rows_quarantined:,}"), ("data-quality score", f"{result.dq_score:.4f}"),
        ("max failure rate per batch", meta.get("max_failure_rate")),
    ])
    outcome = f"<p>Verdict: {verdict(result.failure is None, 'passed', 'failed: ' + str(result.failure))}</p>"
    expectations = table(
        ["expectation", "arguments", "level", "batches failed", "unexpected rows", "observed (first batches)"],
        [(t.label, t.kwargs, "row" if t.row_level else "table", f"{t.failed_batches}/{t.batches}", t.unexpected,
          ", ".join(map(str, t.observed[:3]))) for t in result.tallies.values()])
    reasons = table(["reason", "rows"], result.reasons.most_common(30))
    batches = table(["batch", "rows", "rejected", "table-level failures"],
                    [(b["batch"], b["rows"], b["rejected"], "; ".join(b["table_failures"])) for b in result.batch_rows])
    sample = table(["record (source position)", "reason"], [(s["key"], s["reason"]) for s in result.samples])
    html_path = write_page(folder / "validation.html", f"Validation: {meta.get('pipeline')} {meta.get('partition')}", [
        "<h2>Summary</h2>", outcome, summary,
        "<h2>Expectations</h2>", expectations,
        "<h2>Rejections by reason</h2>", reasons,
        "<h2>Batches</h2>", batches,
        f"<h2>Quarantined records (sample)</h2><p>All of them: <code>SELECT * FROM quarantine WHERE source = "
        f"'{esc(meta.get('source'))}' AND partition_key = '{esc(meta.get('partition'))}'</code></p>", sample,
    ])
    result.report_html, result.report_json = str(html_path), str(json_path)
    return result
