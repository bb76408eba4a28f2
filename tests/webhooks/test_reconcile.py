"""A job waiting for its webhook polls to reconcile after a while, later while the account's other jobs
keep being delivered (it is most likely queued behind them), but never later than a bound.

Times are asserted as lower bounds and loose upper ones: the machines running this are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from airflow_provider_nextleg.models import Message, MessageStatus
from airflow_provider_nextleg.triggers.nextleg import RECONCILE_POSTPONE, _Delivered
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.inbox import LocalInbox

from .support import result_body

RECONCILE_AFTER = 1.0


def job() -> tuple[str, str]:
    return f"msg-{tokens.new_job_key()[:12]}", tokens.new_job_key()


@contextlib.asynccontextmanager
async def waiting(
    inbox: LocalInbox, message_id: str, job_key: str, polls: list[float]
) -> AsyncIterator[_Delivered]:
    """The trigger's view of one job's wait, with a poll that notes when it was made."""

    async def poll() -> Message:
        polls.append(time.monotonic())
        return Message.from_api({"progress": 50}, message_id)

    async with inbox.watch(message_id, job_key) as waiter:
        yield _Delivered(waiter, message_id, RECONCILE_AFTER, poll)


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[LocalInbox]:
    inbox = LocalInbox(tmp_path / "inbox", poll_interval=0.05)
    yield inbox
    await inbox.aclose()


async def test_without_deliveries_the_poll_comes_after_reconcile_after(inbox: LocalInbox):
    polls: list[float] = []
    started = time.monotonic()
    async with waiting(inbox, *job(), polls) as delivered:
        await delivered.next()
    assert polls
    assert polls[0] - started >= RECONCILE_AFTER - 0.05
    assert polls[0] - started < RECONCILE_POSTPONE * RECONCILE_AFTER  # not postponed: nothing came


async def test_the_poll_waits_while_other_jobs_are_delivered_but_not_for_ever(inbox: LocalInbox):
    polls: list[float] = []
    others = [job() for _ in range(40)]

    async def deliver_the_others() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for message_id, key in others:  # they wait in this loop too, as in one triggerer
                await stack.enter_async_context(inbox.watch(message_id, key))
            for message_id, key in others:
                await inbox.put(message_id, key, result_body(message_id, key))
                await asyncio.sleep(0.1)

    delivering = asyncio.create_task(deliver_the_others())
    started = time.monotonic()
    async with waiting(inbox, *job(), polls) as delivered:
        await delivered.next()
    delivering.cancel()
    assert polls[0] - started >= RECONCILE_POSTPONE * RECONCILE_AFTER - 0.05  # postponed to the bound


async def test_its_own_result_needs_no_poll(inbox: LocalInbox):
    polls: list[float] = []
    message_id, key = job()
    async with waiting(inbox, message_id, key, polls) as delivered:
        asyncio.get_running_loop().call_later(
            0.2, lambda: asyncio.ensure_future(inbox.put(message_id, key, result_body(message_id, key)))
        )
        message = await delivered.next()
    assert message.message_id == message_id
    assert message.status is MessageStatus.DONE
    assert polls == []
