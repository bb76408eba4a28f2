"""Network latency in front of the API, for benchmarks that measure a client's pacing over a slow link."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from airflow_provider_nextleg.emulator.protocol import is_api_path

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from airflow_provider_nextleg.emulator.settings import EmulatorSettings


class LatencyMiddleware:
    """Holds every API answer back by ``settings.latency`` real seconds before its first byte.

    The request is processed when it arrives (the job's ``createdAt``, the rate-limit window), and only
    the answer waits, the whole round trip's worth. The wait is an ``asyncio.sleep``, so other requests are
    served meanwhile. It reads the live settings on every request, so ``configure(latency=...)`` applies
    at once. The admin API and the CDN answer without delay: tests steer and inspect through the first, and
    the pacing a benchmark measures is the API's.

    :param app: the application (with its fault middleware) it wraps, so injected faults are held too.
    :param settings: the emulator's live settings.
    """

    def __init__(self, app: ASGIApp, settings: EmulatorSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        latency = self.settings.latency
        if scope["type"] != "http" or not latency or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(latency)
            await send(message)

        await self.app(scope, receive, held)
