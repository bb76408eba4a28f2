"""The nextleg connection: its forms (env JSON and URI, a secrets backend), its fields, test_connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import quote

import pytest
from airflow.sdk import Connection

from airflow_provider_nextleg.emulator import Fault
from airflow_provider_nextleg.exceptions import NextLegInputError, NextLegNotFoundError
from airflow_provider_nextleg.hooks.connection import AccountSettings
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import CONN, UNKNOWN_ID, call_through, closed_port_url, connection_json


def settings_of(**fields) -> AccountSettings:
    conn = Connection(conn_id="nextleg_test", conn_type="nextleg", password="token", **fields)
    return AccountSettings.from_connection(conn, conn.extra_dejson)


class TestForms:
    def test_env_json(self, face, nextleg_emulator):
        with pytest.raises(NextLegNotFoundError):  # a 404 needs an accepted token and the right URL
            call_through(face, NextLegHook(), "get_message", UNKNOWN_ID)

    def test_env_uri_with_full_url_host(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, nextleg_emulator.connection_uri())
        with pytest.raises(NextLegNotFoundError):
            call_through(face, NextLegHook(), "get_message", UNKNOWN_ID)

    def test_env_uri_with_host_port_and_scheme(self, face, nextleg_emulator, monkeypatch):
        host, port = nextleg_emulator.base_url.removeprefix("http://").split(":")
        token = quote(nextleg_emulator.settings.token, safe="")
        monkeypatch.setenv(
            CONN, f"nextleg://:{token}@{host}:{port}/http?timeout=5&expire_mins=3&rate_limit_interval=0"
        )
        hook = NextLegHook()
        with pytest.raises(NextLegNotFoundError):
            call_through(face, hook, "get_message", UNKNOWN_ID)
        assert (hook._settings.base_url, hook._settings.timeout, hook._settings.expire_mins) == (
            nextleg_emulator.base_url,
            5.0,
            3,
        )

    def test_secrets_backend(self, nextleg_emulator, tmp_path):
        """A connection from a local-filesystem secrets backend, in a fresh process configured for it."""
        conn = json.loads(nextleg_emulator.airflow_connection_json())
        del conn["description"]
        connections = tmp_path / "connections.json"
        connections.write_text(json.dumps({"nextleg_from_file": conn}))
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW_CONN_")},
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
                {"connections_file_path": str(tmp_path / "connections.json")}
            ),
            "PYTHONWARNINGS": "ignore",
        }
        script = (
            "import asyncio\n"
            "from airflow_provider_nextleg.hooks.nextleg import NextLegHook\n"
            "print(NextLegHook('nextleg_from_file').test_connection())\n"
            "async def poll():\n"
            "    try:\n"
            "        await NextLegHook('nextleg_from_file').aget_message('doesNotExist00000000')\n"
            "    except Exception as error:\n"
            "        print(type(error).__name__)\n"
            "    await NextLegHook.aclose_clients()\n"
            "asyncio.run(poll())\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "(True, 'Connected to NextLeg at" in result.stdout
        assert "NextLegNotFoundError" in result.stdout


class TestFields:
    @pytest.mark.parametrize(
        ("fields", "base_url"),
        [
            ({}, "https://api.thenextleg.io"),
            ({"host": "api.example.com"}, "https://api.example.com"),
            ({"host": "api.example.com", "port": 8443}, "https://api.example.com:8443"),
            ({"host": "10.0.0.1", "port": 8080, "schema": "http"}, "http://10.0.0.1:8080"),
            ({"host": "http://emulator:8765/"}, "http://emulator:8765"),
            ({"host": "http://emulator", "port": 8765, "schema": "https"}, "http://emulator:8765"),
            ({"host": "https://proxy.example/nextleg/"}, "https://proxy.example/nextleg"),
        ],
    )
    def test_base_url(self, fields, base_url):
        assert settings_of(**fields).base_url == base_url

    @pytest.mark.parametrize(
        "host", ["ftp://files.example", "http://", "https://[::1", "not a url at all", "http://a b.example"]
    )
    def test_bad_base_url(self, host):
        with pytest.raises(NextLegInputError, match="not an http\\(s\\) URL"):
            settings_of(host=host)

    def test_defaults_and_string_extras(self):
        defaults = settings_of()
        assert (defaults.timeout, defaults.rate_limit_interval, defaults.expire_mins) == (30.0, 3.0, 12)
        tuned = settings_of(
            extra=json.dumps({"timeout": "5", "rate_limit_interval": "0.5", "expire_mins": 20})
        )
        assert (tuned.timeout, tuned.rate_limit_interval, tuned.expire_mins) == (5.0, 0.5, 20)

    @pytest.mark.parametrize(
        "extra",
        [
            {"timeout": "soon"},
            {"timeout": 0},
            {"timeout": "nan"},
            {"timeout": float("inf")},
            {"timeout": 1e300},
            {"rate_limit_interval": -1},
            {"rate_limit_interval": "inf"},
            {"rate_limit_interval": 1e300},
            {"rate_limit_interval": float("nan")},
            {"expire_mins": True},
            {"expire_mins": "nan"},
            {"expire_mins": 20.5},
            {"expire_mins": 10**9},
        ],
    )
    def test_bad_extras(self, extra):
        (name,) = extra
        with pytest.raises(NextLegInputError, match=f"has {name}="):
            settings_of(extra=json.dumps(extra))

    def test_token_stays_out_of_the_repr(self):
        assert "token" not in repr(settings_of()).replace("_token", "")


class TestTestConnection:
    def test_good_token(self, nextleg_emulator):
        assert NextLegHook().test_connection() == (
            True,
            f"Connected to NextLeg at {nextleg_emulator.base_url}; the API token is accepted.",
        )
        # A free poll of a message that does not exist: no job started, nothing paid.
        assert nextleg_emulator.ledger() == []
        assert nextleg_emulator.counters()["requests"] == {"GET /v2/message": 1}

    def test_wrong_token(self, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, password="wrong"))
        ok, message = NextLegHook().test_connection()
        assert not ok
        assert message.startswith("NextLeg refused the API token (HTTP 401)")

    def test_no_token_says_so_without_an_http_status(self, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, password=None))
        ok, message = NextLegHook().test_connection()
        assert not ok
        assert "HTTP" not in message
        assert message.startswith("Connection 'nextleg_default' has no API token: put the API token")
        assert nextleg_emulator.counters()["requests"] == {}

    def test_unreachable(self, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, host=closed_port_url()))
        ok, message = NextLegHook().test_connection()
        assert not ok
        assert message.startswith("Cannot reach NextLeg: no answer from http://127.0.0.1:")

    def test_not_an_api(self, nextleg_emulator, monkeypatch):
        nextleg_emulator.add_fault(Fault("/v2/message", "status", status=200, body="<html>Sign in</html>"))
        ok, message = NextLegHook().test_connection()
        assert not ok
        assert "not what the API sends" in message
