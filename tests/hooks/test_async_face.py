"""The async face: one shared httpx client per event loop and account, and an async connection lookup."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from airflow_provider_nextleg.exceptions import NextLegNotFoundError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import UNKNOWN_ID


@pytest.fixture
def created_clients(monkeypatch) -> list[httpx.AsyncClient]:
    """Every httpx.AsyncClient built during the test."""
    created: list[httpx.AsyncClient] = []

    class CountedAsyncClient(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", CountedAsyncClient)
    return created


async def test_many_calls_and_hooks_share_one_client(nextleg_emulator, created_clients):
    """Forty polls from ten hooks at once, as ten triggers would make them: one client, one pool."""
    hooks = [NextLegHook(retry_wait=0.01) for _ in range(10)]
    submitted = await hooks[0].aimagine("a crowd of lanterns")
    try:
        messages = await asyncio.gather(*(hook.aget_message(submitted.message_id) for hook in hooks * 4))
        assert {message.message_id for message in messages} == {submitted.message_id}
        assert len(created_clients) == 1
        assert nextleg_emulator.counters()["requests"]["GET /v2/message"] == 40
    finally:
        await NextLegHook.aclose_clients()
    assert created_clients[0].is_closed


async def test_closed_clients_are_replaced(nextleg_emulator, created_clients):
    hook = NextLegHook()
    with pytest.raises(NextLegNotFoundError):
        await hook.aget_message(UNKNOWN_ID)
    await NextLegHook.aclose_clients()
    with pytest.raises(NextLegNotFoundError):
        await hook.aget_message(UNKNOWN_ID)
    await NextLegHook.aclose_clients()
    assert len(created_clients) == 2
    assert all(client.is_closed for client in created_clients)


def test_each_event_loop_has_its_own_client(nextleg_emulator, created_clients):
    """A client belongs to the loop that made it (a triggerer has one loop; tests make many)."""
    hook = NextLegHook()

    async def poll_and_close():
        with pytest.raises(NextLegNotFoundError):
            await hook.aget_message(UNKNOWN_ID)
        await NextLegHook.aclose_clients()

    asyncio.run(poll_and_close())
    asyncio.run(poll_and_close())
    assert len(created_clients) == 2


async def test_connection_is_not_looked_up_synchronously_on_the_loop(nextleg_emulator, monkeypatch):
    """In the triggerer the sync lookup fails on the event loop; the async face never makes it there."""
    loop_thread = threading.get_ident()
    original = NextLegHook.get_connection.__func__

    def guarded(cls, conn_id):
        assert threading.get_ident() != loop_thread, "sync connection lookup on the event loop thread"
        return original(cls, conn_id)

    monkeypatch.setattr(NextLegHook, "get_connection", classmethod(guarded))
    try:
        with pytest.raises(NextLegNotFoundError):
            await NextLegHook().aget_message(UNKNOWN_ID)
    finally:
        await NextLegHook.aclose_clients()
