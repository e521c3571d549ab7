"""Pipeline specs: one YAML file per pipeline under ``include/pipelines/``, checked when a DAG file is parsed.

A spec is checked in two passes, and every message names the spec file and the field:

1. the JSON schema :data:`SPEC_SCHEMA` (types, required fields, allowed values, no unknown keys);
2. cross-field checks the schema cannot express: key, missing-value and feature columns exist,
   names are not reserved, the expectation suite exists and only names known columns.

``load_specs()`` returns the valid specs and the errors of the broken ones separately, so one broken
file never hides the others. ``python -m tributary.ml.pipeline.specs ddl <name>`` prints the
``CREATE TABLE`` a new pipeline's migration needs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from tributary.core.errors import PermanentError
from tributary.ml import SYSTEM

# Columns every stored row gets besides the spec's own; specs may not reuse these names.
RESERVED_COLUMNS = frozenset({"ds", "record_key", "run_id", "loaded_at"})
COLUMN_TYPES = ("int", "float", "string", "bool", "date", "timestamp")
NUMERIC_TYPES = frozenset({"int", "float"})
MISSING_STRATEGIES = ("keep", "drop", "mean", "zero", "mode")
FEATURE_OPS = ("ratio", "difference", "product", "log1p", "zscore", "map")
_BINARY_OPS = frozenset({"ratio", "difference", "product"})

_NAME = r"^[a-z][a-z0-9_]{0,47}$"
_IDENT = {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,62}$"}

_CSV_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "header": {"type": "boolean", "description": "First (non-skipped) line names the columns."},
        "skip_rows": {"type": "integer", "minimum": 0, "description": "Lines to skip before the header/data."},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
    },
}
_FORMAT = {"enum": ["csv", "jsonl", "parquet"]}
_PAGINATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"enum": ["none", "page", "offset", "cursor", "next_url"]},
        "page_param": {"type": "string", "minLength": 1},
        "size_param": {"type": "string", "minLength": 1},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 100000},
        "start": {"type": "integer", "minimum": 0},
        "offset_param": {"type": "string", "minLength": 1},
        "limit_param": {"type": "string", "minLength": 1},
        "cursor_param": {"type": "string", "minLength": 1},
        "cursor_path": {"type": "string", "minLength": 1},
        "next_url_path": {"type": "string", "minLength": 1},
        "max_pages": {"type": "integer", "minimum": 1},
    },
}


def _kind(kind: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """``if source.kind == kind then`` these fields (so errors name the real field, not a oneOf)."""
    return {
        "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
        "then": {
            "required": required,
            "properties": {"kind": {"const": kind}, **properties},
            "additionalProperties": False,
        },
    }


SPEC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Tributary pipeline spec",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "description", "source", "columns", "validation"],
    "properties": {
        "name": {"type": "string", "pattern": _NAME, "description": "DAG id is ml_pipeline_<name>."},
        "description": {"type": "string", "minLength": 10},
        "schedule": {"type": ["string", "null"], "minLength": 1,
                     "description": "Cron expression or preset (@daily); null: manual/REST only."},
        "start_date": {"type": "string", "format": "date"},
        "catchup": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "owner": {"type": "string", "minLength": 1},
        "source": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": ["files", "package_file", "http", "sql"]}},
            "allOf": [
                _kind("files", ["path", "format"], {
                    "path": {"type": "string", "minLength": 1,
                             "description": "Glob, relative to the landing folder; Jinja ({{ partition }})."},
                    "format": _FORMAT, "csv": _CSV_OPTIONS, "allow_empty": {"type": "boolean"},
                }),
                _kind("package_file", ["package", "resource", "format"], {
                    "package": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                    "resource": {"type": "string", "minLength": 1},
                    "format": _FORMAT, "csv": _CSV_OPTIONS,
                }),
                _kind("http", [], {
                    "url": {"type": "string", "pattern": "^https?://"},
                    "conn_id": {"type": "string", "minLength": 1},
                    "endpoint": {"type": "string"},
                    "params": {"type": "object"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "records_path": {"type": "string"},
                    "pagination": _PAGINATION,
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                }),
                _kind("sql", ["query"], {
                    "conn_id": {"type": "string", "minLength": 1},
                    "query": {"type": "string", "minLength": 1},
                }),
            ],
        },
        "columns": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type"],
                "properties": {
                    "name": _IDENT,
                    "type": {"enum": list(COLUMN_TYPES)},
                    "description": {"type": "string"},
                },
            },
        },
        "key": {"type": "array", "items": _IDENT, "uniqueItems": True,
                "description": "Natural key columns; empty: the hash of all columns."},
        "validation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["suite"],
            "properties": {
                "suite": {"type": "string", "minLength": 1,
                          "description": "Suite name in include/expectations/, or a .json path relative to the spec."},
                "max_failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "processing": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "batch_rows": {"type": "integer", "minimum": 10, "maximum": 5_000_000},
                "missing": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "default": {"enum": list(MISSING_STRATEGIES)},
                        "columns": {
                            "type": "object",
                            "additionalProperties": {
                                "oneOf": [
                                    {"enum": list(MISSING_STRATEGIES)},
                                    {"type": "object", "required": ["value"], "additionalProperties": False,
                                     "properties": {"value": {"type": ["string", "number", "boolean"]}}},
                                ],
                            },
                        },
                    },
                },
                "features": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "op"],
                        "properties": {
                            "name": _IDENT,
                            "op": {"enum": list(FEATURE_OPS)},
                            "columns": {"type": "array", "items": _IDENT, "minItems": 2, "maxItems": 2},
                            "column": _IDENT,
                            "mapping": {"type": "object", "minProperties": 1},
                        },
                    },
                },
            },
        },
        "storage": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "table": _IDENT,
                "postgres": {"type": "boolean"},
                "parquet": {"type": "boolean"},
            },
        },
        "analysis": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "bins": {"type": "integer", "minimum": 2, "maximum": 100},
                "sample_rows": {"type": "integer", "minimum": 100},
                "psi_alert": {"type": "number", "exclusiveMinimum": 0},
            },
        },
    },
}


class PipelineSpecError(PermanentError):
    """A spec that cannot become a DAG. The message names the spec file and the field."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"pipeline spec {self.path}: " + "; ".join(problems), system=SYSTEM, reason="pipeline_spec")


@dataclass(frozen=True)
class PipelineSpec:
    """A checked spec with every default filled in; ``as_dict()`` is what operators receive."""

    name: str
    path: str
    description: str
    schedule: str | None
    start_date: date
    catchup: bool
    tags: tuple[str, ...]
    owner: str
    source: dict[str, Any]
    columns: tuple[dict[str, str], ...]
    key: tuple[str, ...]
    validation: dict[str, Any]
    processing: dict[str, Any]
    storage: dict[str, Any]
    analysis: dict[str, Any]
    suite: dict[str, Any] = field(repr=False)

    @property
    def dag_id(self) -> str:
        return f"ml_pipeline_{self.name}"

    @property
    def analysis_dag_id(self) -> str:
        return f"ml_pipeline_{self.name}_analysis"

    @property
    def table(self) -> str:
        return str(self.storage["table"])

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (operators keep it; it is also what the reports show)."""
        return {
            "name": self.name, "path": self.path, "description": self.description, "source": self.source,
            "columns": list(self.columns),
            "key": list(self.key), "validation": self.validation, "processing": self.processing,
            "storage": self.storage, "analysis": self.analysis, "suite": self.suite,
        }


# --------------------------------------------------------------------------- locations
def pipelines_dir() -> Path:
    """``TRIBUTARY_PIPELINES_DIR``, else ``include/pipelines``."""
    from tributary.storage.warehouse import include_dir

    return Path(os.environ.get("TRIBUTARY_PIPELINES_DIR") or include_dir() / "pipelines")


def expectations_dir() -> Path:
    """``TRIBUTARY_EXPECTATIONS_DIR``, else ``include/expectations``."""
    from tributary.storage.warehouse import include_dir

    return Path(os.environ.get("TRIBUTARY_EXPECTATIONS_DIR") or include_dir() / "expectations")


def spec_files(directory: Path | None = None) -> list[Path]:
    folder = directory or pipelines_dir()
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and not p.name.startswith("_"))


# --------------------------------------------------------------------------- loading
def _field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _schema_problems(document: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SPEC_SCHEMA, format_checker=jsonschema.FormatChecker())
    problems: list[str] = []
    errors = sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    for error in errors:
        if error.validator in ("if", "allOf"):
            continue  # the errors of the branch are reported on their own
        path = list(error.absolute_path)
        message = error.message
        if error.validator == "required":
            missing = re.match(r"'(.+?)' is a required property", message)
            if missing:
                path.append(missing.group(1))
                message = "is required"
        elif error.validator == "additionalProperties":
            unexpected = re.findall(r"'([^']+)'", message.split("(", 1)[-1])
            if unexpected:
                path.append(unexpected[0])
                message = f"unknown field (allowed: {', '.join(sorted(error.schema.get('properties', {})))})"
        problems.append(f"field '{_field_path(path)}': {message}")
    seen: set[str] = set()
    return [p for p in problems if not (p in seen or seen.add(p))][:8]


def _suite_path(suite: str, spec_path: Path) -> Path:
    if suite.endswith(".json") or "/" in suite:
        candidate = Path(suite)
        return candidate if candidate.is_absolute() else (spec_path.parent / candidate)
    return expectations_dir() / f"{suite}.json"


def _load_suite(suite: str, spec_path: Path, columns: set[str], problems: list[str]) -> dict[str, Any]:
    path = _suite_path(suite, spec_path)
    if not path.is_file():
        problems.append(f"field 'validation.suite': expectation suite {path} does not exist")
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(f"field 'validation.suite': {path} is not valid JSON ({exc.msg}, line {exc.lineno})")
        return {}
    expectations = document.get("expectations") if isinstance(document, dict) else None
    if not isinstance(expectations, list) or not expectations:
        problems.append(f"field 'validation.suite': {path} has no 'expectations' list")
        return {}
    for index, expectation in enumerate(expectations):
        where = f"{path.name} expectations[{index}]"
        if (not isinstance(expectation, dict) or not str(expectation.get("type", "")).startswith("expect_")
                or not isinstance(expectation.get("kwargs", {}), dict)):
            problems.append(f"field 'validation.suite': {where} needs a 'type' (expect_...) and 'kwargs'")
            continue
        kwargs = expectation.get("kwargs", {})
        named = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
        named += list(kwargs.get("column_list", []))
        unknown = [c for c in named if c not in columns]
        if unknown:
            problems.append(f"field 'validation.suite': {where} names unknown column(s) {unknown}")
    return {"name": document.get("name") or path.stem, "path": str(path), "expectations": expectations,
            "meta": document.get("meta", {})}


_PRESETS = frozenset({"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
                      "@annually"})


def _check_schedule(schedule: Any, problems: list[str]) -> None:
    # Airflow only rejects a bad cron expression when it serializes the DAG, which would mark every
    # DAG of ml_pipelines.py as broken; so it is checked here, with the spec.
    if schedule is None or schedule in _PRESETS:
        return
    from croniter import croniter

    if not croniter.is_valid(schedule):
        problems.append(f"field 'schedule': {schedule!r} is neither a cron expression nor one of {sorted(_PRESETS)}")


def _check_references(doc: Mapping[str, Any], problems: list[str]) -> None:
    names = [c["name"] for c in doc["columns"]]
    types = {c["name"]: c["type"] for c in doc["columns"]}
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"field 'columns': duplicated column name(s) {duplicated}")
    for index, name in enumerate(names):
        if name in RESERVED_COLUMNS:
            problems.append(f"field 'columns[{index}].name': '{name}' is reserved ({sorted(RESERVED_COLUMNS)})")
    for index, key in enumerate(doc.get("key", [])):
        if key not in types:
            problems.append(f"field 'key[{index}]': unknown column '{key}'")
    missing = doc.get("processing", {}).get("missing", {})
    for column, strategy in missing.get("columns", {}).items():
        if column not in types:
            problems.append(f"field 'processing.missing.columns.{column}': unknown column '{column}'")
        elif strategy == "mean" and types[column] not in NUMERIC_TYPES:
            problems.append(f"field 'processing.missing.columns.{column}': 'mean' needs a numeric column")
    storage = doc.get("storage", {})
    if storage.get("postgres") is False and storage.get("parquet") is False:
        problems.append("field 'storage': stores nothing (postgres and parquet are both false)")
    known = dict(types)
    for index, feature in enumerate(doc.get("processing", {}).get("features", [])):
        where = f"processing.features[{index}]"
        name, op = feature["name"], feature["op"]
        if name in known or name in RESERVED_COLUMNS:
            problems.append(f"field '{where}.name': '{name}' is already a column or reserved")
        if op in _BINARY_OPS:
            inputs = feature.get("columns")
            if not inputs:
                problems.append(f"field '{where}.columns': '{op}' needs two input columns")
                inputs = []
        else:
            inputs = [feature["column"]] if feature.get("column") else []
            if not inputs:
                problems.append(f"field '{where}.column': '{op}' needs an input column")
        for column in inputs:
            if column not in known:
                problems.append(f"field '{where}': unknown input column '{column}'")
            elif op != "map" and known[column] not in NUMERIC_TYPES:
                problems.append(f"field '{where}': '{op}' needs a numeric column, '{column}' is {known[column]}")
        if op == "zscore" and inputs and inputs[0] not in types:
            problems.append(f"field '{where}.column': 'zscore' needs a source column, not a feature")
        if op == "map" and not feature.get("mapping"):
            problems.append(f"field '{where}.mapping': 'map' needs a mapping")
        known[name] = "string" if op == "map" else "float"


def parse_spec(document: Any, path: Path) -> PipelineSpec:
    """Check one parsed YAML document; raise :class:`PipelineSpecError` listing every problem found."""
    problems = _schema_problems(document)
    if problems:
        raise PipelineSpecError(path, problems)
    _check_schedule(document.get("schedule"), problems)
    _check_references(document, problems)
    suite = _load_suite(document["validation"]["suite"], path, {c["name"] for c in document["columns"]}, problems)
    if problems:
        raise PipelineSpecError(path, problems)

    name = document["name"]
    processing = dict(document.get("processing", {}))
    processing.setdefault("batch_rows", 100_000)
    processing.setdefault("features", [])
    processing["missing"] = {"default": "keep", "columns": {}, **processing.get("missing", {})}
    storage = {"table": f"ml_dataset_{name}", "postgres": True, "parquet": True, **document.get("storage", {})}
    analysis = {"enabled": True, "bins": 10, "sample_rows": 100_000, "psi_alert": 0.2, **document.get("analysis", {})}
    validation = {"max_failure_rate": 0.05, **document["validation"]}
    source = dict(document["source"])
    if source["kind"] in ("files", "package_file"):
        source.setdefault("csv", {})
    return PipelineSpec(
        name=name,
        path=str(path),
        description=document["description"].strip(),
        schedule=document.get("schedule", "@daily"),
        start_date=date.fromisoformat(document.get("start_date", "2026-01-01")),
        catchup=bool(document.get("catchup", False)),
        tags=tuple(document.get("tags", [])),
        owner=document.get("owner", "ml"),
        source=source,
        columns=tuple(dict(c) for c in document["columns"]),
        key=tuple(document.get("key", [])),
        validation=validation,
        processing=processing,
        storage=storage,
        analysis=analysis,
        suite=suite,
    )


def load_spec(path: Path) -> PipelineSpec:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineSpecError(path, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from exc
    except OSError as exc:
        raise PipelineSpecError(path, [f"cannot be read: {exc}"]) from exc
    if not isinstance(document, dict):
        raise PipelineSpecError(path, ["field '(top level)': must be a mapping of fields"])
    return parse_spec(document, path)


def load_specs(directory: Path | None = None) -> tuple[list[PipelineSpec], list[PipelineSpecError]]:
    """All specs of the folder: the valid ones, and one error per broken file (duplicate names included)."""
    specs: list[PipelineSpec] = []
    errors: list[PipelineSpecError] = []
    by_name: dict[str, str] = {}
    for path in spec_files(directory):
        try:
            spec = load_spec(path)
        except PipelineSpecError as exc:
            errors.append(exc)
            continue
        if spec.name in by_name:
            problem = f"field 'name': '{spec.name}' is already used by {by_name[spec.name]}"
            errors.append(PipelineSpecError(path, [problem]))
            continue
        by_name[spec.name] = str(path)
        specs.append(spec)
    return specs, errors


def get_spec(name: str, directory: Path | None = None) -> PipelineSpec:
    specs, errors = load_specs(directory)
    for spec in specs:
        if spec.name == name:
            return spec
    for error in errors:
        if Path(error.path).stem == name:
            raise error
    raise PermanentError(f"no pipeline spec named {name!r} in {directory or pipelines_dir()}", system=SYSTEM,
                         reason="pipeline_spec")


# --------------------------------------------------------------------------- warehouse DDL
PG_TYPES = {"int": "bigint", "float": "double precision", "string": "text", "bool": "boolean", "date": "date",
            "timestamp": "timestamptz"}


def output_columns(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, type) of the processed rows: the spec's columns, then its features."""
    columns = [(c["name"], c["type"]) for c in spec["columns"]]
    for feature in spec["processing"]["features"]:
        columns.append((feature["name"], "string" if feature["op"] == "map" else "float"))
    return columns


def render_ddl(spec: Mapping[str, Any]) -> str:
    """The ``CREATE TABLE`` for a pipeline's warehouse table (``spec.as_dict()``); it goes in a migration."""
    lines = ["    ds          date NOT NULL", "    record_key  text NOT NULL"]
    lines += [f"    {name} {PG_TYPES[kind]}" for name, kind in output_columns(spec)]
    lines += ["    run_id      text NOT NULL", "    loaded_at   timestamptz NOT NULL DEFAULT now()",
              "    PRIMARY KEY (ds, record_key)"]
    summary = (spec.get("description") or "").strip().splitlines()[:1] or [""]
    return (f"-- ml_pipeline_{spec['name']}: {summary[0][:100]}\n"
            "-- One partition per logical date; the store step swaps a date's partition in whole.\n"
            f"CREATE TABLE IF NOT EXISTS {spec['storage']['table']} (\n" + ",\n".join(lines)
            + "\n) PARTITION BY LIST (ds);\n")


def main(argv: list[str] | None = None) -> int:
    """``check`` (default): list valid and broken specs; ``ddl NAME``: print the table DDL."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ddl"] and len(args) == 2:
        print(render_ddl(get_spec(args[1]).as_dict()), end="")
        return 0
    specs, errors = load_specs()
    for spec in specs:
        print(f"ok      {spec.path} -> {spec.dag_id}")
    for error in errors:
        print(f"broken  {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
