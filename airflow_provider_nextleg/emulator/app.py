"""The FastAPI application: the NextLeg v2 protocol, the image CDN, and the ``/_emulator/`` admin API.

Every route is ``async`` so the account is only ever touched from the event loop; image rendering, the
one slow thing, runs in the thread pool on a spec computed on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_nextleg.emulator.account import Account, Job, NotFound, Refused
from airflow_provider_nextleg.emulator.clock import SimClock, iso
from airflow_provider_nextleg.emulator.faults import FaultInjector, fault_response
from airflow_provider_nextleg.emulator.images import render_png
from airflow_provider_nextleg.emulator.prompts import find_banned_word
from airflow_provider_nextleg.emulator.ratelimit import SlidingWindow, retry_after
from airflow_provider_nextleg.emulator.settings import EmulatorSettings, Fault, FaultSettings
from airflow_provider_nextleg.emulator.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator"
T = TypeVar("T")
_HIDDEN_SETTINGS = ("token", "admin_token")


class ApiError(Exception):
    """An answer of the form ``{"success": false, "msg": ...}`` with an HTTP status."""

    def __init__(self, status: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.msg, self.headers = status, msg, headers


class EmulatorState:
    """Everything the emulator knows, shared by the routes, the fault middleware and the webhook task.

    :param server_state: uvicorn's server state when served by :func:`serve`; it lets a fault close a
        client's connection without answering.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.clock = SimClock(settings.time_scale)
        self.account = Account(settings, self.clock)
        self.window = SlidingWindow()
        self.faults = FaultInjector(settings)
        self.webhooks = WebhookDispatcher(self.account)
        self.ledger: list[dict[str, Any]] = []
        self.counters = _new_counters()
        self.server_state: Any = None

    def reset(self) -> None:
        """Clear jobs, ledger, counters, webhook records, faults and the rate-limit window."""
        self.account.reset()
        self.window = SlidingWindow()
        self.faults.reset()
        self.settings.faults = FaultSettings()
        self.ledger.clear()
        self.webhooks.deliveries.clear()
        self.counters = _new_counters()
        self.webhooks.wake()

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply setting changes at run time, validated as a whole before anything changes.

        Durations, concurrency and modes apply to jobs submitted from now on, a new ``seed`` after a reset.
        """
        unknown = set(changes) - {field.name for field in dataclasses.fields(EmulatorSettings)}
        if unknown:
            raise ApiError(400, f"Unknown settings: {', '.join(sorted(unknown))}")
        merged = {**dataclasses.asdict(self.settings), **changes}
        try:
            updated = _adapter(EmulatorSettings).validate_python(merged)
        except ValidationError as exc:
            raise ApiError(400, str(exc)) from exc
        if updated.time_scale != self.clock.scale:
            self.clock.rescale(updated.time_scale)
        for field in dataclasses.fields(EmulatorSettings):
            setattr(self.settings, field.name, getattr(updated, field.name))
        self.webhooks.wake()

    def public_settings(self) -> dict[str, Any]:
        """The settings without the tokens, which no endpoint ever echoes."""
        settings = dataclasses.asdict(self.settings)
        for name in _HIDDEN_SETTINGS:
            settings.pop(name)
        return settings

    def authorize(self, request: Request) -> None:
        """Check the API token, from the ``Authorization: Bearer`` header or the ``authToken`` query form."""
        token = _bearer(request) or request.query_params.get("authToken", "")
        if not secrets.compare_digest(token.encode(), self.settings.token.encode()):
            self.counters["unauthorized"][_endpoint(request.method, request.url.path)] += 1
            raise ApiError(401, "Unauthorized: send 'Authorization: Bearer <your token>'")

    def admit(self, request: Request) -> None:
        """Count the request against the account's sliding window, or refuse it with 429."""
        settings = self.settings
        if not settings.rate_limit:
            return
        wait = self.window.admit(self.clock.now(), settings.rate_limit_requests, settings.rate_limit_window)
        if wait is not None:
            self.counters["rate_limited"][_endpoint(request.method, request.url.path)] += 1
            seconds = retry_after(self.clock.real_seconds(wait), scaled=self.clock.scale != 1)
            raise ApiError(
                429,
                f"Too many requests: the account allows {settings.rate_limit_requests} request(s) every "
                f"{settings.rate_limit_window:g} s; retry in {seconds} s",
                headers={"Retry-After": seconds},
            )

    def record(self, request: Request, payload: dict[str, Any], status: int, outcome: Job | str) -> None:
        """Add a submission to the ledger: what was asked, and the messageId or the refusal it got."""
        self.ledger.append(
            {
                "endpoint": request.url.path,
                "method": request.method,
                "payload": payload,
                "ref": payload.get("ref"),
                "time": iso(self.clock.wall(self.clock.now())),
                "status": status,
                "messageId": outcome.id if isinstance(outcome, Job) else None,
                "error": None if isinstance(outcome, Job) else outcome,
            }
        )


def create_app(settings: EmulatorSettings | None = None) -> FastAPI:
    """Build the emulator's ASGI application; ``app.state.emulator`` holds its :class:`EmulatorState`."""
    state = EmulatorState(settings or EmulatorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(state.webhooks.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="NextLeg emulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.emulator = state
    app.add_middleware(FaultMiddleware, state=state)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"success": False, "msg": exc.msg}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"success": False, "msg": str(exc)}, status_code=400)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"success": False, "msg": f"Message not found: {exc}"}, status_code=404)

    _add_api_routes(app, state)
    _add_admin_routes(app, state)
    return app


_SUBMISSIONS: tuple[tuple[str, tuple[str, ...], Callable[[Account, dict[str, Any], str], Job]], ...] = (
    ("/v2/imagine", ("GET", "POST"), Account.imagine),
    ("/v2/button", ("GET", "POST"), Account.button),
    ("/v2/describe", ("GET", "POST"), Account.describe),
    ("/v2/blend", ("POST",), Account.blend),
    ("/v2/info", ("GET", "POST"), Account.info),
    ("/v2/settings", ("GET", "POST"), Account.settings_message),
    ("/v2/slash-commands", ("POST",), Account.slash_command),
)


def _add_api_routes(app: FastAPI, state: EmulatorState) -> None:
    def submission(create: Callable[[Account, dict[str, Any], str], Job]) -> Callable[[Request], Any]:
        async def submit(request: Request) -> JSONResponse:
            state.authorize(request)
            payload: dict[str, Any] = {}
            try:
                payload = await _payload(request)
                state.admit(request)
                job = create(state.account, payload, _base_url(request))
            except Refused as exc:
                state.record(request, payload, 400, str(exc))
                raise
            except ApiError as exc:
                state.record(request, payload, exc.status, exc.msg)
                raise
            state.record(request, payload, 200, job)
            state.webhooks.wake()
            logger.debug("%s %s accepted as message %s", request.method, request.url.path, job.id)
            return JSONResponse(
                {"success": True, "messageId": job.id, "createdAt": iso(state.clock.wall(job.created))}
            )

        return submit

    for path, methods, create in _SUBMISSIONS:
        app.add_api_route(path, submission(create), methods=list(methods))

    @app.get("/v2/message/{message_id}")
    async def message(request: Request, message_id: str) -> JSONResponse:
        """An id the account never issued answers 404 (unlike a button press, see ``Account.button``):
        a poll can only be about a message the service itself handed out, so there is nothing to wait for."""
        state.authorize(request)
        state.admit(request)
        expire = request.query_params.get("expireMins")
        try:
            expire_mins = float(expire) if expire else None
        except ValueError as exc:
            raise ApiError(400, "expireMins must be a number of minutes") from exc
        return JSONResponse(state.account.message(message_id, expire_mins, _base_url(request)))

    @app.post("/v2/seed")
    async def seed(request: Request) -> JSONResponse:
        state.authorize(request)
        state.admit(request)
        message_id = str((await _payload(request)).get("messageId", ""))
        return JSONResponse({"seed": state.account.seed_of(message_id)})

    @app.post("/v2/is-this-naughty")
    async def is_this_naughty(request: Request) -> JSONResponse:
        state.authorize(request)
        state.admit(request)
        phrase = find_banned_word(str((await _payload(request)).get("msg", "")), state.settings.banned_words)
        return JSONResponse({"isNaughty": phrase is not None, "phrase": phrase or ""})

    @app.post("/getImage")
    async def get_image(request: Request) -> Response:
        """The documented way around a 403 from the CDN: the same bytes, behind the API token."""
        state.authorize(request)
        state.admit(request)
        parts = urlsplit(str((await _payload(request)).get("imgUrl", ""))).path.split("/")
        if len(parts) != 4 or parts[1] != "cdn":
            raise ApiError(404, "Image not found")
        return await _image(state, parts[2], parts[3])

    @app.get("/cdn/{job_id}/{name}")
    async def cdn(job_id: str, name: str) -> Response:
        """Unauthenticated, like the real CDN, and like it answers 403 when the CDN fault is on."""
        if state.settings.faults.cdn_forbidden:
            return Response(
                "<html><body><h1>403 Forbidden</h1></body></html>", status_code=403, media_type="text/html"
            )
        return await _image(state, job_id, name)


async def _image(state: EmulatorState, job_id: str, name: str) -> Response:
    spec = state.account.image(job_id, name)
    if spec is None:
        raise ApiError(404, "Image not found")
    return Response(await run_in_threadpool(render_png, spec), media_type="image/png")


def _add_admin_routes(app: FastAPI, state: EmulatorState) -> None:
    def admin(request: Request) -> None:
        if not secrets.compare_digest(_bearer(request).encode(), state.settings.admin_token.encode()):
            raise ApiError(401, "Unauthorized: the admin endpoints take the admin token")

    @app.get(f"{ADMIN_PREFIX}/ledger")
    async def ledger(request: Request) -> list[dict[str, Any]]:
        admin(request)
        return state.ledger

    @app.get(f"{ADMIN_PREFIX}/counters")
    async def counters(request: Request) -> dict[str, dict[str, int]]:
        admin(request)
        return {name: dict(counter) for name, counter in state.counters.items()}

    @app.get(f"{ADMIN_PREFIX}/jobs")
    async def jobs(request: Request) -> list[dict[str, Any]]:
        """Every job's timeline (UNIX times), in submission order: what client latencies are measured from."""
        admin(request)
        wall = state.clock.wall
        return [
            {
                "messageId": job.id,
                "type": job.type,
                "error": job.error,
                "stalled": job.stalled,
                "created": wall(job.created).timestamp(),
                "started": wall(job.start).timestamp(),
                "finished": wall(job.finish).timestamp(),
            }
            for job in state.account.jobs.values()
        ]

    @app.get(f"{ADMIN_PREFIX}/webhooks")
    async def webhooks(request: Request) -> list[dict[str, Any]]:
        admin(request)
        return state.webhooks.deliveries

    @app.get(f"{ADMIN_PREFIX}/faults")
    async def faults(request: Request) -> dict[str, Any]:
        admin(request)
        return dataclasses.asdict(state.settings.faults)

    @app.put(f"{ADMIN_PREFIX}/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        """Replace every fault setting, scripted faults included."""
        admin(request)
        state.configure({"faults": await _payload(request)})
        return dataclasses.asdict(state.settings.faults)

    @app.post(f"{ADMIN_PREFIX}/faults")
    async def add_fault(request: Request) -> dict[str, Any]:
        """Append one scripted fault after those already queued."""
        admin(request)
        try:
            fault = _adapter(Fault).validate_python(await _payload(request))
        except ValidationError as exc:
            raise ApiError(400, str(exc)) from exc
        state.settings.faults.scripted.append(fault)
        return dataclasses.asdict(state.settings.faults)

    @app.get(f"{ADMIN_PREFIX}/settings")
    async def settings(request: Request) -> dict[str, Any]:
        admin(request)
        return state.public_settings()

    @app.patch(f"{ADMIN_PREFIX}/settings")
    async def configure(request: Request) -> dict[str, Any]:
        admin(request)
        state.configure(await _payload(request))
        return state.public_settings()

    @app.post(f"{ADMIN_PREFIX}/reset")
    async def reset(request: Request) -> dict[str, bool]:
        admin(request)
        state.reset()
        return {"success": True}


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
        key = _endpoint(scope["method"], path)
        self.state.counters["requests"][key] += 1
        fault = self.state.faults.pick(scope["method"], path, api=not path.startswith("/cdn/"))
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


async def _payload(request: Request) -> dict[str, Any]:
    """The request's fields: the query string of a GET form, the JSON body otherwise; never the token."""
    if request.method == "GET":
        payload: Any = dict(request.query_params)
    else:
        body = await request.body()
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise ApiError(400, "The request body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object")
    payload.pop("authToken", None)
    return payload


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@functools.cache
def _adapter(kind: type[T]) -> TypeAdapter[T]:
    """Validators of the settings dataclasses, built once: building one takes milliseconds."""
    return TypeAdapter(kind)


def _new_counters() -> dict[str, Counter[str]]:
    return {name: Counter() for name in ("requests", "unauthorized", "rate_limited", "faults")}


def _endpoint(method: str, path: str) -> str:
    """A counter key: the method and the path without ids (``GET /v2/message``, ``GET /cdn``)."""
    for prefix in ("/v2/message/", "/cdn/"):
        if path.startswith(prefix):
            return f"{method} {prefix.rstrip('/')}"
    return f"{method} {path}"
