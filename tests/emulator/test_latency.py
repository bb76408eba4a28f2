"""The latency setting: API answers are held back that long, concurrently, and nothing else is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, Fault, cli

from .support import Api

LATENCY = 0.4
T = TypeVar("T")


@pytest.fixture
def slow(emu: EmulatorServer) -> EmulatorServer:
    emu.configure(latency=LATENCY)
    return emu


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What ``call`` returns, and how many real seconds it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


class TestLatency:
    def test_api_answers_are_held_back_but_processed_on_arrival(self, api: Api, slow: EmulatorServer) -> None:
        sent = time.time()
        response, seconds = timed(lambda: api.http.post("/v2/imagine", json={"msg": "a slow fox"}))
        assert response.status_code == 200
        assert seconds >= LATENCY
        created = datetime.fromisoformat(response.json()["createdAt"].replace("Z", "+00:00")).timestamp()
        assert created - sent < LATENCY / 2  # the job dates from the request, not from the answer

    def test_errors_and_injected_faults_are_held_back_too(self, api: Api, slow: EmulatorServer) -> None:
        response, seconds = timed(lambda: api.http.get("/v2/message/no-such-id"))
        assert (response.status_code, seconds >= LATENCY) == (404, True)
        slow.add_fault(Fault("/v2/info", "status", status=503))
        response, seconds = timed(lambda: api.http.get("/v2/info"))
        assert (response.status_code, seconds >= LATENCY) == (503, True)

    def test_the_admin_api_and_the_cdn_answer_at_once(self, api: Api, slow: EmulatorServer) -> None:
        slow.configure(latency=0)
        grid = api.imagine()["imageUrl"]
        slow.configure(latency=5.0)  # far beyond what the assertions below allow
        _, seconds = timed(slow.counters)
        assert seconds < 1.0
        response, seconds = timed(lambda: httpx.get(grid, trust_env=False))
        assert (response.status_code, seconds < 1.0) == (200, True)

    def test_held_answers_do_not_hold_other_requests(self, api: Api, slow: EmulatorServer) -> None:
        async def burst() -> list[int]:
            async with httpx.AsyncClient(
                base_url=slow.base_url, headers=dict(api.http.headers), trust_env=False
            ) as client:
                responses = await asyncio.gather(*(client.get("/v2/info") for _ in range(8)))
            return [response.status_code for response in responses]

        started = time.monotonic()
        assert asyncio.run(burst()) == [200] * 8
        assert time.monotonic() - started < 3 * LATENCY  # not 8 x LATENCY one after another

    def test_the_cli_flag_sets_it(self) -> None:
        assert cli.settings_from_args(cli.parse_args(["--latency", "0.25"])).latency == 0.25
        assert cli.settings_from_args(cli.parse_args([])).latency == 0.0
