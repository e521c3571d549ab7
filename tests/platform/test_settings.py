"""airflow_settings.yaml: Astro format, environment references, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tributary.cli.settings import SettingsError, main, parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_project_settings_parse_with_environment_defaults(monkeypatch) -> None:
    monkeypatch.delenv("TRIBUTARY_WAREHOUSE_HOST", raising=False)
    monkeypatch.setenv("TRIBUTARY_API_URL", "http://127.0.0.1:9999")
    settings = parse(ROOT / "airflow_settings.yaml")
    conns = {c["conn_id"]: c for c in settings["connections"]}
    assert conns["tributary_warehouse"]["conn_host"] == "127.0.0.1"
    assert conns["tributary_airflow_api"]["conn_host"] == "http://127.0.0.1:9999"
    assert {v["variable_name"] for v in settings["variables"]} == {"tributary_alerting"}


def test_missing_required_fields_are_named(tmp_path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("airflow:\n  connections:\n    - conn_type: postgres\n")
    with pytest.raises(SettingsError, match=r"airflow.connections\[0\] lacks conn_id"):
        parse(bad)
    assert main(["check", str(bad)]) == 2


def test_unset_environment_reference_without_default_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    bad = tmp_path / "s.yaml"
    bad.write_text("airflow:\n  variables:\n    - variable_name: x\n      variable_value: ${NOPE_NOT_SET}\n")
    with pytest.raises(SettingsError, match="NOPE_NOT_SET"):
        parse(bad)
