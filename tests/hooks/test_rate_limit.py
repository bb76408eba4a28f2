"""The hook keeps an account within its rate limit, across hook instances and both faces.

Timings are asserted as orders and lower bounds with generous slack: the machines running this are shared.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.exceptions import NextLegNotFoundError, NextLegRateLimitError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import CONN, UNKNOWN_ID, connection_json


def run_together(
    sync_work: Callable[[NextLegHook], Any], async_work: Callable[[NextLegHook], Awaitable[Any]], hooks: int
) -> None:
    """Run ``sync_work`` in ``hooks`` threads and ``async_work`` in ``hooks`` tasks, a hook each."""

    async def async_side() -> None:
        await asyncio.gather(*(async_work(NextLegHook(retry_wait=0.01)) for _ in range(hooks)))
        await NextLegHook.aclose_clients()

    threads = [threading.Thread(target=sync_work, args=(NextLegHook(retry_wait=0.01),)) for _ in range(hooks)]
    for thread in threads:
        thread.start()
    asyncio.run(async_side())
    for thread in threads:
        thread.join()


def poll_unknown(hook: NextLegHook, times: int) -> None:
    for _ in range(times):
        with pytest.raises(NextLegNotFoundError):
            hook.get_message(UNKNOWN_ID)


async def apoll_unknown(hook: NextLegHook, times: int) -> None:
    for _ in range(times):
        with pytest.raises(NextLegNotFoundError):
            await hook.aget_message(UNKNOWN_ID)


class TestClientSideLimiter:
    def test_requests_of_one_account_are_spaced(self, nextleg_emulator, monkeypatch):
        """Submissions from two threads and two tasks, each with its own hook, reach the service spaced."""
        interval = 0.15
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, rate_limit_interval=interval))

        started = time.monotonic()
        run_together(
            lambda hook: [hook.imagine(f"a sync cat {n}") for n in range(2)],
            lambda hook: hook.aimagine("an async bird"),
            hooks=2,
        )
        elapsed = time.monotonic() - started

        arrivals = sorted(
            datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            for entry in nextleg_emulator.ledger()
        )
        assert len(arrivals) == 6
        # Six requests need five intervals; jitter may shrink a gap as the server sees it, not halve it.
        assert elapsed >= 5 * interval * 0.9
        assert all(later - earlier >= interval / 2 for earlier, later in itertools.pairwise(arrivals))

    def test_no_429_when_the_client_paces_itself(self, nextleg_emulator, monkeypatch):
        nextleg_emulator.configure(rate_limit=True)  # one request every 3 simulated seconds: 0.03 s here
        pace = 5 * nextleg_emulator.settings.rate_limit_interval
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, rate_limit_interval=pace))

        run_together(lambda hook: poll_unknown(hook, 3), lambda hook: apoll_unknown(hook, 3), hooks=2)

        counters = nextleg_emulator.counters()
        assert counters["requests"] == {"GET /v2/message": 12}
        assert counters["rate_limited"] == {}


class TestServiceRateLimit:
    def test_429s_are_retried_after_retry_after(self, nextleg_emulator, monkeypatch):
        """With the client's limiter off, the service refuses a burst; every call still succeeds."""
        nextleg_emulator.configure(rate_limit=True)
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, rate_limit_interval=0))
        window = nextleg_emulator.settings.rate_limit_interval

        started = time.monotonic()
        run_together(lambda hook: poll_unknown(hook, 2), lambda hook: apoll_unknown(hook, 2), hooks=2)
        elapsed = time.monotonic() - started

        counters = nextleg_emulator.counters()
        assert sum(counters["rate_limited"].values()) >= 1
        # Eight admitted requests at one per window: the retries waited for the service's window.
        assert elapsed >= 7 * window * 0.9

    def test_retry_waits_for_retry_after(self, nextleg_emulator, monkeypatch):
        nextleg_emulator.configure(rate_limit=True, rate_limit_window=30.0)  # 0.3 s here
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, rate_limit_interval=0))
        hook = NextLegHook(retry_wait=0.01)
        poll_unknown(hook, 1)
        started = time.monotonic()
        poll_unknown(hook, 1)  # refused with Retry-After, then admitted
        assert time.monotonic() - started >= 0.3 * 0.8
        assert nextleg_emulator.counters()["rate_limited"] == {"GET /v2/message": 1}


@pytest.fixture(scope="module")
def slow_window_emulator() -> Iterator[EmulatorServer]:
    """An emulator of its own (so an account of its own) whose rate limit asks for a 10 s wait."""
    settings = EmulatorSettings(time_scale=0.01, rate_limit=True, rate_limit_window=1000.0)
    with EmulatorServer(settings) as emulator:
        yield emulator


def test_429_pushes_every_caller_of_the_account(slow_window_emulator, monkeypatch):
    monkeypatch.setenv(CONN, connection_json(slow_window_emulator, rate_limit_interval=0))
    first = NextLegHook(max_attempts=1)
    poll_unknown(first, 1)
    with pytest.raises(NextLegRateLimitError) as raised:
        first.get_message(UNKNOWN_ID)
    assert raised.value.status == 429

    # Another hook of the same account, sync or async, now waits for the service's Retry-After.
    other = NextLegHook()
    other_limiter = other._get_settings().limiter
    assert other_limiter is first._get_settings().limiter
    assert other_limiter.book().delay >= 5.0
