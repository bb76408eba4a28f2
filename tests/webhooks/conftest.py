"""Fixtures of the webhook tests: a redis-server, the receiver's connection in the environment, and an
inbox in the test's own directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RedisServer

from airflow_provider_nextleg.webhooks.inbox import LocalInbox

from .support import CONN_ID, nextleg_connection


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the module, with a password a leak would show verbatim."""
    with RedisServer(tmp_path_factory.mktemp("redis"), password="redis-pw-5c1d9e") as server:
        yield server


@pytest.fixture
def local_inbox(tmp_path: Path) -> LocalInbox:
    return LocalInbox(tmp_path / "inbox")


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> str:
    """The nextleg connection the receiver serves (with a webhook secret); its id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", nextleg_connection())
    return CONN_ID
