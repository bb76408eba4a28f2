"""pytest fixtures that run users' tests against the NextLeg emulator (registered as a pytest11 plugin).

``nextleg_emulator`` gives each test a clean emulator and points Airflow's ``nextleg_default`` connection
at it::

    def test_my_dag(nextleg_emulator):
        nextleg_emulator.add_fault(Fault("/v2/message", "status", status=503, count=2))
        ...  # run the DAG or the hook
        assert not nextleg_emulator.duplicate_submissions()

This module is loaded in every pytest run of an environment where the provider is installed, so it
imports nothing heavy: the server is imported inside the fixture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from airflow_provider_nextleg.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from airflow_provider_nextleg.emulator.server import EmulatorServer

#: The session emulator's settings: a 50 s job lasts half a second and the rate limit is off; the CDN
#: answers server downloads of the tiles 403 as the real one does (``cdn_403_rate``'s default), so a DAG
#: that downloads them directly instead of through ``POST /getImage`` fails here as it would in
#: production. A test of direct downloads turns that off with ``nextleg_emulator.configure(cdn_403_rate=0)``.
SESSION_SETTINGS = EmulatorSettings(time_scale=0.01, rate_limit=False)


@pytest.fixture(scope="session")
def nextleg_emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the whole session, on a free port (time scale 0.01, no rate limit)."""
    from airflow_provider_nextleg.emulator.server import EmulatorServer

    with EmulatorServer(SESSION_SETTINGS) as server:
        yield server


@pytest.fixture
def nextleg_emulator(
    nextleg_emulator_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    """The session emulator, reset to its session settings, as Airflow's ``nextleg_default`` connection."""
    server = nextleg_emulator_server
    server.reset()
    settings = dataclasses.asdict(SESSION_SETTINGS)
    for hidden in ("token", "admin_token"):
        settings.pop(hidden)
    server.configure(**settings)
    monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", server.airflow_connection_json())
    return server
