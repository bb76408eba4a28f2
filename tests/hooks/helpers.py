"""Helpers of the hook tests: calling either face, polling, and reading the emulator's counters."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.models import Message

Call = Callable[..., Any]

CONN = "AIRFLOW_CONN_NEXTLEG_DEFAULT"
UNKNOWN_ID = "doesNotExist00000000"
"""A well-formed message id the emulator does not know."""


def connection_json(emulator: Any, **changes: Any) -> str:
    """The emulator's connection as JSON, with fields (``password``, ``host``) or extras changed."""
    conn = json.loads(emulator.airflow_connection_json())
    for name, value in changes.items():
        if name in conn:
            conn[name] = value
        else:
            conn["extra"][name] = value
    return json.dumps(conn)


def call_through(face: str, hook: NextLegHook, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call endpoint ``name`` through one face; the async face runs in a fresh event loop, as a trigger's."""
    if face == "sync":
        return getattr(hook, name)(*args, **kwargs)

    async def call() -> Any:
        try:
            return await getattr(hook, f"a{name}")(*args, **kwargs)
        finally:
            await NextLegHook.aclose_clients()

    return asyncio.run(call())


def poll(call: Call, message_id: str, *, timeout: float = 20.0, **kwargs: Any) -> Message:
    """Poll until the job ends; jobs last under a second at the emulator's time scale."""
    deadline = time.monotonic() + timeout
    while True:
        message = call("get_message", message_id, **kwargs)
        if message.status.is_terminal:
            return message
        assert time.monotonic() < deadline, f"job {message_id} still {message.status} after {timeout} s"
        time.sleep(0.05)


def requests_seen(emulator: Any) -> int:
    """How many API requests the emulator received, all endpoints together."""
    return sum(emulator.counters()["requests"].values())


def closed_port_url() -> str:
    """A base URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
