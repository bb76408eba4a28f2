"""Fixtures of the emulator's tests: a fast emulator (from the package's own pytest plugin), an API client
and a webhook receiver. Every test talks to a running emulator over HTTP; waiting is polling with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import TIME_SCALE, Api, WebhookReceiver


@pytest.fixture
def emu(nextleg_emulator: EmulatorServer) -> EmulatorServer:
    """The plugin's clean per-test emulator, made faster, its CDN serving tiles to these tests directly
    (the plugin's realistic 403s to servers are tested on their own, in ``TestCdn403ToServers``)."""
    nextleg_emulator.configure(time_scale=TIME_SCALE, cdn_403_rate=0.0)
    return nextleg_emulator


@pytest.fixture
def api(emu: EmulatorServer) -> Iterator[Api]:
    client = Api(emu.base_url, emu.settings.token)
    yield client
    client.http.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()
