"""Airflow finds the provider, its hook and its connection form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_nextleg import __version__
from airflow_provider_nextleg.get_provider_info import CONNECTION_FIELDS, get_provider_info
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

AIRFLOW_DIR = Path(airflow.__file__).parent


def test_provider_info_follows_airflows_schema():
    info = get_provider_info()
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-nextleg"
    assert info["versions"] == [__version__]
    (connection_type,) = info["connection-types"]
    assert connection_type["connection-type"] == NextLegHook.conn_type
    assert connection_type["hook-class-name"] == f"{NextLegHook.__module__}.{NextLegHook.__qualname__}"


def test_ui_field_behaviour_follows_airflows_schema():
    """The hook method (what Airflow 3.1 reads) gives the same behaviour as the provider info."""
    schema = json.loads((AIRFLOW_DIR / "customized_form_field_behaviours.schema.json").read_text())
    behaviour = NextLegHook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, schema)
    assert behaviour["relabeling"]["password"] == "API token"


def test_providers_manager_registers_hook_and_form():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-nextleg" in manager.providers
    hook_info = manager.hooks["nextleg"]
    assert (hook_info.hook_class_name, hook_info.connection_id_attribute_name, hook_info.hook_name) == (
        "airflow_provider_nextleg.hooks.nextleg.NextLegHook",
        "nextleg_conn_id",
        "NextLeg",
    )
    assert hook_info.connection_testable
    if not hasattr(manager, "_load_ui_metadata"):
        pytest.skip("Airflow < 3.2 builds the form from the hook methods, which need wtforms")
    assert set(CONNECTION_FIELDS) <= {
        name.removeprefix("extra__nextleg__") for name in manager.connection_form_widgets
    }
    assert manager.field_behaviours["nextleg"]["hidden_fields"] == ["login"]


def test_form_widgets_for_airflow_3_1(monkeypatch):
    """Built from the same conn-fields, with the wtforms classes Airflow 3.1's form accepts."""

    class Field:
        def __init__(self, label, description="", default=None):
            self.label, self.description, self.default = label, description, default

    class StringField(Field): ...

    class IntegerField(Field): ...

    monkeypatch.setitem(
        sys.modules, "wtforms", types.SimpleNamespace(StringField=StringField, IntegerField=IntegerField)
    )
    widgets = NextLegHook.get_connection_form_widgets()
    assert set(widgets) == set(CONNECTION_FIELDS)
    assert type(widgets["expire_mins"]) is IntegerField
    assert type(widgets["timeout"]) is StringField  # fractional seconds: no IntegerField
    assert widgets["rate_limit_interval"].default == 3.0
    assert widgets["timeout"].label == CONNECTION_FIELDS["timeout"]["label"]


def test_airflow_providers_list_shows_the_provider():
    """The real CLI, in the tests' Airflow home."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Airflow may log a line or two before the JSON.
    (listing,) = [line for line in result.stdout.splitlines() if line.startswith("[{")]
    providers = json.loads(listing)
    (ours,) = [provider for provider in providers if provider["package_name"] == "airflow-provider-nextleg"]
    assert ours["version"] == __version__
