"""Fixtures of the poll scheduler's tests: the session emulator paced as a test needs, a spy on polls."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest

from airflow_provider_nextleg import polling
from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.hooks.session import AccountSession
from airflow_provider_nextleg.hooks.transport import ApiCall


class Poll(NamedTuple):
    """One poll a scheduler sent: the message, and what came back (a status, or an error's class name)."""

    message_id: str
    outcome: str
    progress: int | None


@pytest.fixture(autouse=True)
def no_durations_known() -> None:
    """Each test starts with nothing learned of the account's durations (they outlive a scheduler)."""
    polling._durations.clear()


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[Poll]:
    """Every poll the schedulers send, in the order their answers come back."""
    sent: list[Poll] = []
    original = AccountSession.send

    async def spy(session: AccountSession, call: ApiCall[Any], slot: Any = None) -> Any:
        try:
            answer = await original(session, call, slot)
        except Exception as exc:
            sent.append(Poll(call.message_id or "", type(exc).__name__, None))
            raise
        sent.append(Poll(answer.message_id, answer.status.value, answer.progress))
        return answer

    monkeypatch.setattr(AccountSession, "send", spy)
    return sent


@pytest.fixture
def pace(nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``pace(seconds)``: the client sends the account's requests that far apart (``rate_limit_interval``)."""

    def set_pace(seconds: float) -> None:
        conn = json.loads(nextleg_emulator.airflow_connection_json())
        conn["extra"]["rate_limit_interval"] = seconds
        monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", json.dumps(conn))

    return set_pace
