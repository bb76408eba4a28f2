"""Injected failures: which request gets which, what a failing proxy's answer looks like, and the ASGI
middleware that inflicts them."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from http import HTTPStatus
from typing import TYPE_CHECKING

from airflow_provider_nextleg.emulator.protocol import ADMIN_PREFIX, endpoint_key, error_body, is_api_path
from airflow_provider_nextleg.emulator.settings import EmulatorSettings, Fault

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from airflow_provider_nextleg.emulator.app import EmulatorState

logger = logging.getLogger(__name__)

_PROXY_PAGES = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class FaultInjector:
    """Picks the fault for a request: the first matching scripted fault, else a seeded random draw.

    It reads ``settings.faults`` on every request, so faults changed at run time apply at once, and it
    decrements a scripted fault's ``count`` in place, so the admin view shows how many are left.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self._settings = settings
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(f"faults-{self._settings.seed}")

    def pick(self, method: str, path: str, *, api: bool) -> Fault | None:
        """The fault for this request, if any; probabilities apply to API requests (``api``) only."""
        faults = self._settings.faults
        for fault in faults.scripted:
            if path.startswith(fault.path) and fault.method in (None, method.upper()):
                fault.count -= 1
                if fault.count == 0:
                    faults.scripted.remove(fault)
                return fault
        if not api:
            return None
        if faults.error_rate and self._rng.random() < faults.error_rate:
            return Fault(path, "status", status=self._rng.choice((500, 502, 503)))
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            return Fault(path, "drop")
        if faults.slow_rate and self._rng.random() < faults.slow_rate:
            return Fault(path, "slow", seconds=faults.slow_seconds)
        if faults.malformed_rate and self._rng.random() < faults.malformed_rate:
            return Fault(path, "malformed")
        return None


def fault_response(status: int, body: str | None) -> tuple[bytes, str]:
    """Body and content type of a ``status`` fault: a proxy's HTML page for 502/503/504 unless given.

    A given body is sent as JSON when it parses as JSON and as HTML otherwise.
    """
    if body is None:
        if status in _PROXY_PAGES:
            title = f"{status} {_PROXY_PAGES[status]}"
            body = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
                "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
        else:
            body = json.dumps(error_body(HTTPStatus(status).phrase))
    try:
        json.loads(body)
    except ValueError:
        return body.encode(), "text/html"
    return body.encode(), "application/json"


class FaultMiddleware:
    """Counts every request outside the admin API and applies the fault, if any, picked for it.

    A plain ASGI middleware rather than a FastAPI one, because a fault may have to swallow the app's
    answer (the request was processed, the client never hears of it) or close the connection outright.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        key = endpoint_key(scope["method"], path)
        self.state.counters["requests"][key] += 1
        fault = self.state.faults.pick(scope["method"], path, api=is_api_path(path))
        if fault is None:
            await self.app(scope, receive, send)
            return
        self.state.counters["faults"][key] += 1
        logger.info("Injecting a %s fault into %s (processed first: %s)", fault.kind, key, fault.processed)
        if fault.kind == "slow":
            # Read the request first: the client may give up while we sleep, and the job is still created.
            receive = await _buffered(receive)
            await asyncio.sleep(fault.seconds)
            await self.app(scope, receive, send)
            return
        body = b""
        if fault.processed or fault.kind == "malformed":
            body = await self._swallow(scope, receive)
        if fault.kind == "drop":
            await self._drop(scope, receive)
        elif fault.kind == "malformed":
            await _send(send, 200, body[: len(body) // 2] or b'{"success": tr', "application/json")
        else:
            await _send(send, fault.status, *fault_response(fault.status, fault.body))

    async def _swallow(self, scope: Scope, receive: Receive) -> bytes:
        """Let the app process the request; return its body instead of sending it."""
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        return b"".join(chunks)

    async def _drop(self, scope: Scope, receive: Receive) -> None:
        """Close the client's connection without a byte of answer, as a crashing proxy would."""
        for connection in getattr(self.state.server_state, "connections", ()):
            if getattr(connection, "client", None) == scope.get("client"):
                connection.transport.close()
                # Wait until the server has seen the disconnect, so it does not answer with a 500 of its own.
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
        raise RuntimeError("Cannot drop a connection unless the emulator runs under its own uvicorn runner")


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the returned ``receive`` replays it, then waits for a disconnect."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replaying() -> Message:
        return replay.pop() if replay else await receive()

    return replaying


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
