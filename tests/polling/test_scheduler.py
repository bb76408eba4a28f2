"""The poll scheduler, through the real trigger, against the emulator over HTTP.

Assertions are about orders and counts with generous bounds, never about how fast a machine is.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from airflow_provider_nextleg import polling
from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings
from airflow_provider_nextleg.hooks.connection import read_connection
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger

from .conftest import Poll


@pytest.fixture(autouse=True)
async def closing_clients() -> Any:
    yield
    await NextLegHook.aclose_clients()


def submit(prompt: str = "a lighthouse at dawn") -> str:
    return NextLegHook().imagine(prompt).message_id


def trigger(message_id: str) -> NextLegMessageTrigger:
    """A trigger paced by the account's limiter alone."""
    return NextLegMessageTrigger(message_id=message_id, poll_interval=0.0)


def rebuild(trigger: NextLegMessageTrigger) -> NextLegMessageTrigger:
    """What a triggerer does: import the classpath and construct the trigger from its kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


async def event_of(trigger: NextLegMessageTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("no event")


def watched() -> int:
    return sum(scheduler.watched for scheduler in polling.schedulers())


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def timeline(emulator: EmulatorServer, message_id: str) -> dict[str, Any]:
    return next(job for job in emulator.jobs() if job["messageId"] == message_id)


def polls_of(polls: list[Poll], message_id: str) -> list[Poll]:
    return [poll for poll in polls if poll.message_id == message_id]


class TestWatchMessage:
    async def test_every_answer_reaches_the_watcher_in_order(self, nextleg_emulator: EmulatorServer):
        message_id = submit()
        seen = []
        async with polling.watch_message("nextleg_default", message_id) as updates:
            while not seen or not seen[-1].status.is_terminal:
                seen.append(await updates.next(timeout=20))
        assert seen[-1].status.value == "done"
        progress = [message.progress for message in seen[:-1]]
        assert progress == sorted(progress)  # never backwards
        assert polling.schedulers() == []  # the scheduler left with its only watcher


class TestOrder:
    async def test_a_job_near_its_end_goes_before_a_queued_one(
        self, nextleg_emulator: EmulatorServer, pace: Any, polls: list[Poll]
    ):
        # One job at a time, 2 s each; a request every 0.1 s: too few to poll both jobs at every slot.
        nextleg_emulator.configure(
            concurrency=1, min_duration=200.0, max_duration=200.0, rate_limit=True, rate_limit_window=10.0
        )
        pace(0.1)
        running, queued = submit("a job about to finish"), submit("a job waiting behind it")
        job = timeline(nextleg_emulator, running)
        await asyncio.sleep(max(0.0, (job["started"] + job["finished"]) / 2 - time.time()))

        events = await asyncio.gather(event_of(trigger(queued)), event_of(trigger(running)))

        assert [event["status"] for event in events] == ["done", "done"]
        done = polls.index(next(poll for poll in polls_of(polls, running) if poll.outcome == "done"))
        before = [poll.message_id for poll in polls[:done]]
        # The running job has the slots until it is done. The queued one gets its first look, and one more
        # slot at most: one that comes while the running job's poll is still out.
        assert before.count(running) >= 3
        assert 1 <= before.count(queued) <= 2

    async def test_no_job_is_starved_by_one_that_never_finishes(
        self, nextleg_emulator: EmulatorServer, pace: Any, polls: list[Poll]
    ):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        # Jobs of 3 s: long enough to see the stuck job polled again while the others run.
        nextleg_emulator.configure(
            concurrency=6, min_duration=300.0, max_duration=300.0, rate_limit=True, rate_limit_window=5.0
        )
        pace(0.05)
        limiter = read_connection(NextLegHook.default_conn_name).limiter
        for _ in range(polling.LEARN_AFTER):  # durations known: the stuck job is soon overdue
            polling.durations_for(limiter).add(0.5)
        stuck = submit("a stuck job")
        others = [submit(f"a lighthouse {number}") for number in range(5)]
        stuck_wait = asyncio.create_task(event_of(trigger(stuck)))

        events = await asyncio.wait_for(asyncio.gather(*(event_of(trigger(other)) for other in others)), 60)

        assert [event["status"] for event in events] == ["done"] * 5
        assert not stuck_wait.done()
        assert len(polls_of(polls, stuck)) >= 2  # looked at again, though less and less often
        stuck_wait.cancel()
        await asyncio.gather(stuck_wait, return_exceptions=True)

    async def test_a_queued_job_is_polled_rarely_once_durations_are_known(
        self, nextleg_emulator: EmulatorServer, pace: Any, polls: list[Poll]
    ):
        nextleg_emulator.configure(concurrency=1, min_duration=100.0, max_duration=100.0)  # 1 s each
        pace(0.02)
        limiter = read_connection(NextLegHook.default_conn_name).limiter
        for _ in range(polling.LEARN_AFTER):
            polling.durations_for(limiter).add(1.0)
        first, second = submit("first in line"), submit("second in line")

        await asyncio.gather(event_of(trigger(first)), event_of(trigger(second)))

        first_done = polls.index(next(poll for poll in polls_of(polls, first) if poll.outcome == "done"))
        while_queued = [poll for poll in polls[:first_done] if poll.message_id == second]
        # About every quarter of a duration for the second of queueing, not at every 20 ms slot (~50).
        assert 2 <= len(while_queued) <= 10
        assert all(poll.progress == 0 for poll in while_queued)


class TestRateLimit:
    async def test_a_429_holds_every_poller_until_retry_after(
        self, nextleg_emulator: EmulatorServer, pace: Any, polls: list[Poll]
    ):
        # The client thinks it may send every 10 ms; the service allows one request every 0.3 s.
        nextleg_emulator.configure(rate_limit=True, rate_limit_window=30.0)
        pace(0.01)
        message_ids = [submit(f"a lighthouse {number}") for number in range(3)]

        events = await asyncio.gather(*(event_of(trigger(message_id)) for message_id in message_ids))

        assert [event["status"] for event in events] == ["done"] * 3
        counters = nextleg_emulator.counters()
        refused = counters["rate_limited"].get("GET /v2/message", 0)
        admitted = counters["requests"]["GET /v2/message"] - refused
        assert refused >= 1  # the service pushed back
        # ... and each push back held all three pollers for its Retry-After. Three timers of their own
        # at 10 ms would have been refused some thirty times per admitted poll.
        assert refused <= 2 * admitted + 3
        assert [poll.outcome for poll in polls].count("NextLegRateLimitError") == refused


class TestLeaving:
    async def test_cancelled_triggers_leave_nothing_behind(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.configure(min_duration=1000.0, max_duration=1000.0)  # 10 s: they wait throughout
        message_ids = [submit(f"a long job {number}") for number in range(3)]
        waits = [asyncio.create_task(event_of(trigger(message_id))) for message_id in message_ids]
        await until(lambda: watched() == 3, "three watched messages")
        [scheduler] = polling.schedulers()

        waits[0].cancel()  # a trigger cancelled, or moved to another triggerer
        await asyncio.gather(waits[0], return_exceptions=True)
        assert scheduler.watched == 2

        for wait in waits[1:]:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        assert polling.schedulers() == []
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()}, "the scheduler's tasks to end")

    async def test_two_triggers_of_one_message_share_its_polls_and_both_get_the_event(
        self, nextleg_emulator: EmulatorServer, polls: list[Poll]
    ):
        message_id = submit()
        first, second = trigger(message_id), trigger(message_id)  # an HA triggerer running it twice
        waits = [asyncio.create_task(event_of(first)), asyncio.create_task(event_of(second))]
        await until(lambda: len(polls) >= 1, "a first poll")
        assert watched() == 1

        events = await asyncio.gather(*waits)

        assert events[0] == events[1]
        assert events[0]["status"] == "done"
        assert [poll.outcome for poll in polls].count("done") == 1  # one poll found it done, for both

    async def test_a_trigger_started_again_registers_again(
        self, nextleg_emulator: EmulatorServer, polls: list[Poll]
    ):
        message_id = submit()
        original = trigger(message_id)
        wait = asyncio.create_task(event_of(original))
        await until(lambda: len(polls) >= 1, "a first poll")

        wait.cancel()  # the triggerer stops: its schedulers and their hints are gone
        await asyncio.gather(wait, return_exceptions=True)
        assert polling.schedulers() == []

        event = await event_of(rebuild(original))  # a triggerer starts it again from its kwargs
        assert event["status"] == "done"
        assert event["message_id"] == message_id


class TestDeadline:
    async def test_a_trigger_resumed_after_its_deadline_reports_a_job_done_meanwhile(
        self, nextleg_emulator: EmulatorServer
    ):
        message_id = submit()
        await until(lambda: timeline(nextleg_emulator, message_id)["finished"] < time.time(), "the job")
        late = NextLegMessageTrigger(message_id=message_id, poll_interval=0.0, deadline=time.time() - 60)
        assert (await event_of(late))["status"] == "done"

    async def test_after_the_first_answer_the_deadline_holds(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        stuck = submit("a stuck job")
        late = NextLegMessageTrigger(message_id=stuck, poll_interval=0.0, deadline=time.time())
        assert (await event_of(late))["status"] == "timeout"


class TestSharing:
    async def test_many_triggers_share_one_client_and_connection(
        self, nextleg_emulator: EmulatorServer, polls: list[Poll]
    ):
        nextleg_emulator.configure(concurrency=1, queue_length=30, min_duration=1000.0, max_duration=1000.0)
        message_ids = [submit(f"a lighthouse {number}") for number in range(20)]
        port = int(nextleg_emulator.base_url.rsplit(":", 1)[1])

        def connections() -> int:
            return sum(
                1
                for conn in psutil.Process().net_connections(kind="tcp")
                if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
            )

        before = connections()
        waits = [asyncio.create_task(event_of(trigger(message_id))) for message_id in message_ids]
        await until(lambda: len({poll.message_id for poll in polls}) == 20, "a poll of every job")

        assert watched() == 20
        assert len(polling.schedulers()) == 1
        assert connections() - before <= 1  # the loop's one client, on one keep-alive connection
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
