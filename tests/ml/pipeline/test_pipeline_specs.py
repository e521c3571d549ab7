"""Pipeline specs: the default specs are valid, and every kind of mistake names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tributary.ml.pipeline.specs import PipelineSpecError, load_spec, load_specs, spec_files

pytestmark = pytest.mark.unit


def test_default_specs_are_valid_and_use_packaged_datasets() -> None:
    specs, errors = load_specs()
    assert errors == []
    by_name = {s.name: s for s in specs}
    assert {"iris", "breast_cancer"} <= set(by_name)
    for spec in by_name.values():
        assert spec.source["kind"] == "package_file" and spec.source["package"] == "sklearn"
    assert by_name["breast_cancer"].table == "ml_dataset_breast_cancer"
    assert by_name["iris"].dag_id == "ml_pipeline_iris"
    assert by_name["iris"].suite["path"].endswith("include/expectations/iris.json")


def _problems(write_spec: Any, document: dict[str, Any] | str, suite: dict[str, Any] | None = None) -> str:
    path = write_spec(document, suite=suite)
    with pytest.raises(PipelineSpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message  # always names the file
    return message


@pytest.mark.parametrize(("change", "expected"), [
    ({"source": {"kind": "ftp", "path": "x"}}, "field 'source.kind': 'ftp' is not one of"),
    ({"source": {"kind": "files", "path": "x/*.csv", "format": "xls"}}, "field 'source.format': 'xls' is not one of"),
    ({"source": {"kind": "files", "format": "csv"}}, "field 'source.path': is required"),
    ({"source": {"kind": "files", "path": "a", "format": "csv", "pathh": "b"}}, "field 'source.pathh': unknown field"),
    ({"columns": [{"name": "id", "type": "integer"}]}, "field 'columns[0].type': 'integer' is not one of"),
    ({"name": "Bad-Name"}, "field 'name': 'Bad-Name' does not match"),
    ({"validation": {"suite": "suite.json", "max_failure_rate": 1.5}},
     "field 'validation.max_failure_rate': 1.5 is greater than the maximum of 1"),
    ({"processing": {"batch_rows": "many"}}, "field 'processing.batch_rows': 'many' is not of type 'integer'"),
    ({"start_date": "2026-13-01"}, "field 'start_date': '2026-13-01' is not a 'date'"),
    ({"source": {"kind": "http", "url": "ftp://example.org"}},
     "field 'source.url': 'ftp://example.org' does not match"),
])
def test_schema_errors_name_the_field(write_spec: Any, sensor_spec: Any, change: dict[str, Any], expected: str) -> None:
    document = sensor_spec()
    document.update(change)
    assert expected in _problems(write_spec, document)


def test_missing_required_section_is_named(write_spec: Any, sensor_spec: Any) -> None:
    document = sensor_spec()
    del document["validation"]
    assert "field 'validation': is required" in _problems(write_spec, document)


@pytest.mark.parametrize(("change", "expected"), [
    ({"key": ["idd"]}, "field 'key[0]': unknown column 'idd'"),
    ({"columns": [{"name": "ds", "type": "date"}, {"name": "id", "type": "int"}, {"name": "sensor", "type": "string"},
                  {"name": "reading", "type": "float"}, {"name": "day", "type": "date"},
                  {"name": "ok", "type": "bool"}]}, "field 'columns[0].name': 'ds' is reserved"),
    ({"processing": {"features": [{"name": "r", "op": "ratio", "columns": ["reading", "nope"]}]}},
     "field 'processing.features[0]': unknown input column 'nope'"),
    ({"processing": {"features": [{"name": "r", "op": "log1p", "column": "sensor"}]}},
     "'log1p' needs a numeric column, 'sensor' is string"),
    ({"processing": {"missing": {"columns": {"sensor": "mean"}}}},
     "field 'processing.missing.columns.sensor': 'mean' needs a numeric column"),
    ({"validation": {"suite": "missing.json"}}, "field 'validation.suite': expectation suite"),
])
def test_cross_field_errors_name_the_field(write_spec: Any, sensor_spec: Any, change: dict[str, Any],
                                           expected: str) -> None:
    document = sensor_spec()
    document.update(change)
    assert expected in _problems(write_spec, document)


def test_suite_naming_an_unknown_column_is_refused(write_spec: Any, sensor_spec: Any) -> None:
    suite = {"name": "s", "expectations": [{"type": "expect_column_values_to_not_be_null",
                                            "kwargs": {"column": "temperature"}}]}
    message = _problems(write_spec, sensor_spec(), suite=suite)
    assert "field 'validation.suite': suite.json expectations[0] names unknown column(s) ['temperature']" in message


def test_yaml_syntax_error_gives_the_line(write_spec: Any) -> None:
    message = _problems(write_spec, "name: broken\ncolumns: [\n  {name: a, type: int\n")
    assert "not valid YAML at line" in message


def test_one_broken_spec_does_not_hide_the_others(write_spec: Any, sensor_spec: Any, tmp_path: Path) -> None:
    write_spec(sensor_spec("good"))
    broken = sensor_spec("broken")
    broken["source"]["format"] = "xls"
    write_spec(broken)
    duplicate = sensor_spec("good")
    write_spec(duplicate, file_name="good_again.yaml")
    specs, errors = load_specs(tmp_path / "pipelines")
    assert [s.name for s in specs] == ["good"]
    assert len(errors) == 2
    text = " | ".join(map(str, errors))
    assert "broken.yaml" in text and "field 'source.format'" in text
    assert "good_again.yaml" in text and "field 'name': 'good' is already used by" in text
    assert [p.name for p in spec_files(tmp_path / "pipelines")] == ["broken.yaml", "good.yaml", "good_again.yaml"]


def test_defaults_are_filled_in(load: Any, sensor_spec: Any) -> None:
    document = sensor_spec()
    del document["storage"]
    document["processing"] = {}
    spec = load(document)
    assert spec.table == "ml_dataset_sensors"
    assert spec.storage == {"table": "ml_dataset_sensors", "postgres": True, "parquet": True}
    assert spec.processing["batch_rows"] == 100_000
    assert spec.processing["missing"] == {"default": "keep", "columns": {}}
    assert spec.schedule is None and spec.catchup is False
