"""Tributary registers its Connection types with Airflow, with form fields, matching the hooks."""

from __future__ import annotations

import importlib

import pytest

from tributary.core.hooks import TributaryHook
from tributary.provider_info import CONNECTION_TYPES, get_provider_info

pytestmark = pytest.mark.unit


def test_every_declared_type_names_a_hook_that_agrees() -> None:
    for entry in CONNECTION_TYPES:
        module, _, name = entry["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert issubclass(hook, TributaryHook)
        assert (hook.conn_type, hook.hook_name) == (entry["connection-type"], entry["hook-name"])
        assert hook.get_ui_field_behaviour()["relabeling"] == entry["ui-field-behaviour"]["relabeling"]


def test_airflow_sees_our_types_with_their_form() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "tributary" in manager.providers
    hook_info = ProvidersManagerTaskRuntime().hooks["tributary_webhook"]
    assert hook_info.hook_class_name == "tributary.core.webhook.WebhookHook"
    assert manager.field_behaviours["tributary_webhook"]["relabeling"]["host"] == "Webhook URL"
    assert "extra__tributary_webhook__format" in manager.connection_form_widgets
    assert get_provider_info()["package-name"] == "tributary"
