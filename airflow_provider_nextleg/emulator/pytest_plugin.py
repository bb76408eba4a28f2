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

#: The session emulator's settings: a 50 s job lasts half a second, the rate limit is off, and direct
#: downloads of ``imageUrls`` succeed (``cdn_403_rate=0``). The realistic 403s (the settings' and the
#: CLI's default) stay off here because many tests, the provider's among them, download tiles directly
#: and check that they did; a test of a client's downloads turns them on with
#: ``nextleg_emulator.configure(cdn_403_rate=1.0)``.
SESSION_SETTINGS = EmulatorSettings(time_scale=0.01, rate_limit=False, cdn_403_rate=0.0)


@pytest.fixture(scope="session")
def nextleg_emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the whole session, on a free port (time scale 0.01, no rate limit, no CDN 403s)."""
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
