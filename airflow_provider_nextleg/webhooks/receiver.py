"""The webhook receiver: a small FastAPI app that accepts NextLeg's results for the jobs the provider
submitted and stores them in the inbox their triggers watch.

``POST <base>/webhook/<conn_id>/<job_key>?token=<token>`` (see :mod:`.tokens`), checked in this order:

1. the path's shape, then a ``Content-Length`` over the size limit (1 MiB): 403, 413, before any lookup;
2. the connection: a nextleg connection with a ``webhook_secret`` (read through Airflow's server-side
   lookup, cached for 30 s): else 403;
3. the token, the job's HMAC with that secret: else 403;
4. the body, read up to the limit (413 past it): a JSON NextLeg result, finished (a result or an error
   code), with a message id: else 400;
5. its ``ref``, the operator's JSON, must name the same job key under ``"job"``: else 403;
6. stored (duplicates change nothing): 200 ``{"stored": true|false}``; an unavailable inbox: 503.

Nothing is stored unless every check passed, and the answer comes as soon as the result is stored.
Neither the token, the secret nor the full URL appears in a log line or an answer; the log names the
connection, the job key and the message id. ``GET <base>/health`` answers 200 for load balancers.

Airflow applies no authentication to plugin apps: these checks are the receiver's whole protection.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.models import Message, MessageStatus, PayloadError
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.config import WebhookConfig, server_webhook_config
from airflow_provider_nextleg.webhooks.inbox import Inbox, InboxUnavailable, message_id_of

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""The largest body accepted: a result is a few kilobytes."""
WEBHOOK_ROUTE = tokens.WEBHOOK_PATH
HEALTH_ROUTE = "/health"

ConfigLookup = Callable[[str], Awaitable["WebhookConfig | None"]]
"""How the receiver finds a connection's webhook settings: ``None`` when it does not receive for it."""


class ConnectionCache:
    """
    The webhook settings of connections, looked up in a worker thread and kept for a while, so a burst of
    webhooks costs one lookup, and a flood of forged ones for made-up connections a bounded number.

    :param read: the blocking lookup (:func:`~.config.server_webhook_config`).
    :param ttl: seconds a connection's settings are kept (a changed secret applies after that).
    :param missing_ttl: seconds an unusable connection (missing, wrong type, no secret) is remembered.
    :param size: connections remembered at most.
    :param concurrency: lookups run at once at most.
    """

    def __init__(
        self,
        read: Callable[[str], WebhookConfig] = server_webhook_config,
        *,
        ttl: float = 30.0,
        missing_ttl: float = 5.0,
        size: int = 256,
        concurrency: int = 4,
    ) -> None:
        self._read = read
        self.ttl = ttl
        self.missing_ttl = missing_ttl
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[float, WebhookConfig | None]] = (
            collections.OrderedDict()
        )
        self._inflight: dict[str, asyncio.Task[WebhookConfig | None]] = {}
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, conn_id: str) -> WebhookConfig | None:
        entry = self._entries.get(conn_id)
        if entry is not None and entry[0] > time.monotonic():
            self._entries.move_to_end(conn_id)
            return entry[1]
        task = self._inflight.get(conn_id)
        if task is None:  # one lookup per connection at a time, which a caller's disconnect does not stop
            task = self._inflight[conn_id] = asyncio.ensure_future(self._fetch(conn_id))
        return await asyncio.shield(task)

    async def _fetch(self, conn_id: str) -> WebhookConfig | None:
        try:
            config = await self._look_up(conn_id)
        finally:
            del self._inflight[conn_id]
        keep = self.ttl if config is not None else self.missing_ttl
        self._entries[conn_id] = (time.monotonic() + keep, config)
        self._entries.move_to_end(conn_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return config

    async def _look_up(self, conn_id: str) -> WebhookConfig | None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        async with self._semaphore:
            try:
                config = await asyncio.to_thread(self._read, conn_id)
            except NextLegInputError as exc:
                logger.warning("Webhooks for connection %r refused: %s", conn_id, exc.problem)
                return None
            except Exception as exc:  # a secrets backend or the database failing: refuse for now
                logger.warning(
                    "Webhooks for connection %r refused: its lookup failed (%s)", conn_id, type(exc).__name__
                )
                return None
        if not config.receives:
            logger.warning("Webhooks for connection %r refused: it has no webhook_secret", conn_id)
            return None
        return config


def create_receiver_app(
    *,
    configs: ConfigLookup | None = None,
    inbox_for: Callable[[WebhookConfig], Inbox] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """
    The receiver's ASGI app; serve it at the base URL the connections' ``webhook_url`` names.

    :param configs: finds a connection's webhook settings; by default a :class:`ConnectionCache` over
        Airflow's connections.
    :param inbox_for: the inbox of a connection; by default :meth:`WebhookConfig.inbox` (Redis with a
        ``redis_conn_id``, this host's directory without).
    :param max_body_bytes: the largest body accepted (413 past it).
    """
    lookup = configs or ConnectionCache()
    inbox_of = inbox_for or WebhookConfig.inbox
    app = FastAPI(title="NextLeg webhook receiver", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(HEALTH_ROUTE)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(WEBHOOK_ROUTE)
    async def receive(conn_id: str, job_key: str, request: Request) -> JSONResponse:
        if not tokens.is_webhook_conn_id(conn_id) or not tokens.is_job_key(job_key):
            return _refuse(403, "forbidden", conn_id, job_key, "the URL is no webhook URL of a job")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return _refuse(413, "body too large", conn_id, job_key, f"Content-Length {declared[:20]}")
        config = await lookup(conn_id)
        if config is None:
            return _refuse(403, "forbidden", conn_id, job_key, "no webhooks for this connection")
        if not config.verify(job_key, request.query_params.get(tokens.TOKEN_PARAM)):
            return _refuse(403, "forbidden", conn_id, job_key, "missing or wrong token")
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _refuse(413, "body too large", conn_id, job_key, f"more than {max_body_bytes} bytes")
        try:
            result, message_id = _parse(body)
        except PayloadError as exc:
            return _refuse(400, "not a NextLeg result", conn_id, job_key, str(exc)[:200])
        if tokens.ref_job_key(result.get("ref")) != job_key:
            return _refuse(403, "forbidden", conn_id, job_key, "its ref names another job, or none")
        try:
            stored = await inbox_of(config).put(message_id, job_key, result)
        except InboxUnavailable as exc:
            logger.error(
                "Webhook for message %s (job %s, connection %r) not stored: %s",
                message_id,
                job_key,
                conn_id,
                exc,
            )
            return JSONResponse({"error": "inbox unavailable"}, status_code=503)
        logger.info(
            "Webhook for message %s (job %s, connection %r) %s",
            message_id,
            job_key,
            conn_id,
            "stored" if stored else "already stored: the duplicate is ignored",
        )
        return JSONResponse({"stored": stored})

    return app


def _refuse(status: int, error: str, conn_id: str, job_key: str, reason: str) -> JSONResponse:
    logger.warning(
        "Webhook refused with %s for job %.64r of connection %.64r: %s", status, job_key, conn_id, reason
    )
    return JSONResponse({"error": error}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it grows past ``limit`` bytes (a lying Content-Length too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> tuple[dict[str, Any], str]:
    """The result object and its message id; :class:`PayloadError` unless it is a finished result."""
    try:
        result = json.loads(body)
    except ValueError:
        raise PayloadError("the body is not JSON") from None
    if not isinstance(result, dict):
        raise PayloadError("the body should be a JSON object")
    message_id = message_id_of(result)
    if message_id is None:
        raise PayloadError("the body has no originatingMessageId")
    message = Message.from_api(result, message_id)
    if message.status not in (MessageStatus.DONE, MessageStatus.FAILED):
        raise PayloadError(f"a webhook carries a finished job, this one is {message.status.value}")
    return result, message_id
