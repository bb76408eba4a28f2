"""The API token travels in the Authorization header only: never in a URL, log line, error or repr."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, Fault
from airflow_provider_nextleg.exceptions import NextLegError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import CONN, UNKNOWN_ID, call_through, closed_port_url, connection_json, poll

TOKEN = "tok-DISTINCTIVE-5f1e2d3c"
WRONG_TOKEN = "tok-WRONG-DISTINCTIVE-9a8b7c"
SECRETS = (TOKEN, WRONG_TOKEN)
LOGGERS = ("", "urllib3", "requests", "httpx", "httpcore", "airflow", "airflow.task.hooks")


@pytest.fixture(scope="module")
def secret_emulator() -> Iterator[EmulatorServer]:
    """An emulator whose token is distinctive enough to be searched for."""
    with EmulatorServer(EmulatorSettings(time_scale=0.01, rate_limit=False, token=TOKEN)) as emulator:
        yield emulator


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """What each request put outside its headers: method, URL, query and body, for both transports."""
    seen: list[str] = []
    original_sync, original_async = requests.Session.request, httpx.AsyncClient.request

    def sync_request(self, method, url, **kwargs):
        seen.append(f"{method} {url} {kwargs.get('params')} {kwargs.get('json')}")
        assert self.headers["Authorization"] in (f"Bearer {TOKEN}", f"Bearer {WRONG_TOKEN}")
        return original_sync(self, method, url, **kwargs)

    async def async_request(self, method, url, **kwargs):
        seen.append(f"{method} {url} {kwargs.get('params')} {kwargs.get('json')}")
        assert self.headers["Authorization"] in (f"Bearer {TOKEN}", f"Bearer {WRONG_TOKEN}")
        return await original_async(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", sync_request)
    monkeypatch.setattr(httpx.AsyncClient, "request", async_request)
    return seen


def run_scenario(
    face: str, emulator: EmulatorServer, monkeypatch, **connection: Any
) -> tuple[list[str], NextLegHook]:
    """Submit, poll and fetch through one face; return the text of every error raised and the hook."""
    monkeypatch.setenv(CONN, connection_json(emulator, **connection))
    hook = NextLegHook(max_attempts=2, retry_wait=0.01)
    texts = []

    def call(name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return call_through(face, hook, name, *args, **kwargs)
        except NextLegError as error:
            texts.append("".join(traceback.format_exception(error)) + repr(error))
            return None

    submitted = call("imagine", "a secret garden", ref="secret-ref")
    if submitted is not None:
        message = poll(lambda name, *a, **k: call_through(face, hook, name, *a, **k), submitted.message_id)
        call("get_seed", message.message_id)
        call("get_image", message.image_url)
        call("button", "U1", message.button_message_id)
    call("get_message", UNKNOWN_ID)
    call("is_this_naughty", "a quiet secret")
    texts.append(repr(hook.test_connection()))
    return texts, hook


@pytest.mark.parametrize(
    ("connection", "fault"),
    [
        pytest.param({}, None, id="success"),
        pytest.param({"password": WRONG_TOKEN}, None, id="401"),
        pytest.param({}, Fault("/", "status", status=500, count=100), id="500-html"),
        pytest.param(
            {}, Fault("/", "status", status=502, count=100, body=f'{{"msg": "{TOKEN}"}}'), id="echoed"
        ),
        pytest.param({}, Fault("/", "malformed", count=100), id="malformed"),
        pytest.param({}, Fault("/", "drop", count=100), id="dropped"),
        pytest.param({"timeout": 0.2}, Fault("/", "slow", seconds=0.5, count=100), id="timeout"),
        pytest.param({"host": "unreachable"}, None, id="unreachable"),
    ],
)
def test_token_never_leaves_the_header(
    face, secret_emulator, monkeypatch, caplog, capfd, sent, connection, fault
):
    secret_emulator.reset()
    if fault is not None:
        secret_emulator.add_fault(fault)
    if connection.get("host") == "unreachable":
        connection["host"] = closed_port_url()
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)

    errors, hook = run_scenario(face, secret_emulator, monkeypatch, **connection)

    printed = capfd.readouterr()
    logged = [record.getMessage() for record in caplog.records] + [
        logging.Formatter().formatException(record.exc_info) for record in caplog.records if record.exc_info
    ]
    settings = hook._get_settings()
    surfaces = {
        "log records": "\n".join(logged),
        "printed logs": printed.out + printed.err,
        "errors": "\n".join(errors),
        "request lines": "\n".join(sent),
        "reprs": repr(hook) + repr(settings) + repr(hook.get_conn()) + repr(vars(hook)),
        "ledger": repr(secret_emulator.ledger()),
    }
    assert sent, "no request was made"
    assert caplog.records, "nothing was logged, so nothing was checked"
    for secret in SECRETS:
        for surface, text in surfaces.items():
            assert secret not in text, f"the token appears in the {surface}"
    assert "authToken" not in surfaces["request lines"]
    if fault is not None and fault.body:
        assert '"msg": "***"' in surfaces["errors"]  # a body echoing the token is redacted
