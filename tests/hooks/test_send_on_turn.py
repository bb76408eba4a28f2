"""An async request connects before its turn and sends its first byte on it, and a request that never
went out whole counts as unsent.

A small TCP server stands in for the service, so that the moment the connection is made and the moment
the request's first byte arrives can both be seen. Orders are asserted with wide slack, never durations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from airflow_provider_nextleg.exceptions import NextLegConnectionError
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.hooks.connection import AccountSettings
from airflow_provider_nextleg.hooks.transport import asend

ANSWER = json.dumps({"success": True, "messageId": "m1", "createdAt": "2026-12-01T00:00:00Z"}).encode()


@dataclass
class Seen:
    """What the stand-in service saw: when it accepted the connection, when the first byte came."""

    accepted: list[float] = field(default_factory=list)
    first_byte: list[float] = field(default_factory=list)


@asynccontextmanager
async def service(*, answer: bool = True) -> AsyncIterator[tuple[str, Seen]]:
    """A one-shot HTTP service on a free port: answers the submission, or closes on its first byte."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.accepted.append(time.time())
        data = await reader.read(1)
        if data:
            seen.first_byte.append(time.time())
        if answer and data:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(ANSWER)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + ANSWER)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


def settings_for(base_url: str, interval: float) -> AccountSettings:
    """A connection to the stand-in service; its port makes the account, and so its limiter, new."""
    return AccountSettings(
        conn_id="nextleg_default",
        base_url=base_url,
        token="t-" + "x" * 20,
        timeout=5.0,
        rate_limit_interval=interval,
        expire_mins=5,
    )


async def test_the_connection_is_up_before_the_turn_and_the_first_byte_leaves_on_it():
    async with service() as (base_url, seen), httpx.AsyncClient() as client:
        settings = settings_for(base_url, 2.0)
        settings.limiter.book()  # the account's latest request: the next turn is about 2 s away
        slot = settings.limiter.book()
        result = await asend(client, calls.imagine("a lighthouse", None, None, None), settings, slot)
    assert result.message_id == "m1"
    assert seen.accepted[0] < slot.due - 0.05  # connected ahead of the turn (CONNECT_LEAD ahead)
    assert seen.first_byte[0] >= slot.due - 0.01  # sent on it, not before


async def test_a_submission_that_never_went_out_whole_is_unsent():
    """The service closed the connection before the request was written: nothing can have made a job,
    so it is an ordinary connection error (which the hook may resend), not an uncertain submission."""
    async with service(answer=False) as (base_url, _), httpx.AsyncClient() as client:
        call = calls.imagine("a lighthouse", None, None, None)
        call = dataclasses.replace(call, json={"msg": "x" * 4_000_000})  # far past the socket buffers
        with pytest.raises(NextLegConnectionError):
            await asend(client, call, settings_for(base_url, 0.0))
