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
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from airflow_provider_nextleg.emulator.account import Account
from airflow_provider_nextleg.emulator.clock import SimClock, iso
from airflow_provider_nextleg.emulator.faults import FaultInjector, FaultMiddleware
from airflow_provider_nextleg.emulator.images import render_png
from airflow_provider_nextleg.emulator.jobs import Job
from airflow_provider_nextleg.emulator.latency import LatencyMiddleware
from airflow_provider_nextleg.emulator.prompts import find_banned_word
from airflow_provider_nextleg.emulator.protocol import (
    ADMIN_PREFIX,
    CDN_PREFIX,
    ApiError,
    CdnFile,
    Wire,
    endpoint_key,
)
from airflow_provider_nextleg.emulator.ratelimit import SlidingWindow, retry_after
from airflow_provider_nextleg.emulator.settings import EmulatorSettings, Fault, FaultSettings
from airflow_provider_nextleg.emulator.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

T = TypeVar("T")
_HIDDEN_SETTINGS = ("token", "admin_token")


class EmulatorState:
    """Everything the emulator knows, shared by the routes, the fault middleware and the webhook task.

    :param server_state: uvicorn's server state when served by :func:`serve`; it lets a fault close a
        client's connection without answering.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.clock = SimClock(settings.time_scale)
        self.account = Account(settings, self.clock)
        self.wire = Wire(settings, self.clock)
        self.window = SlidingWindow()
        self.faults = FaultInjector(settings)
        self.webhooks = WebhookDispatcher(self.account, self.wire)
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
            self.counters["unauthorized"][endpoint_key(request.method, request.url.path)] += 1
            raise ApiError(401, "Unauthorized: send 'Authorization: Bearer <your token>'")

    def admit(self, request: Request) -> None:
        """Count the request against the account's sliding window, or refuse it with 429."""
        settings = self.settings
        if not settings.rate_limit:
            return
        wait = self.window.admit(self.clock.now(), settings.rate_limit_requests, settings.rate_limit_window)
        if wait is not None:
            self.counters["rate_limited"][endpoint_key(request.method, request.url.path)] += 1
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
    # Added last, so outermost: the answers of injected faults are held back too.
    app.add_middleware(LatencyMiddleware, settings=state.settings)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

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
            except ApiError as exc:
                state.record(request, payload, exc.status, exc.msg)
                raise
            state.record(request, payload, 200, job)
            state.webhooks.wake()
            logger.debug("%s %s accepted as message %s", request.method, request.url.path, job.id)
            return JSONResponse(state.wire.accepted(job))

        return submit

    for path, methods, create in _SUBMISSIONS:
        app.add_api_route(path, submission(create), methods=list(methods))

    @app.get("/v2/message/{message_id}")
    async def message(request: Request, message_id: str) -> JSONResponse:
        """An id the account never issued answers 404 (unlike a button press, see ``Account.button``):
        a poll can only be about a message the service itself handed out, so there is nothing to wait for."""
        state.authorize(request)
        state.admit(request)
        expire_mins = _expire_mins(request.query_params.get("expireMins"))
        job = state.account.job(message_id)
        return JSONResponse(state.wire.message(job, expire_mins, _base_url(request)))

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
        return await _image(state, CdnFile.from_url(str((await _payload(request)).get("imgUrl", ""))))

    @app.get(f"{CDN_PREFIX}/{{job_id}}/{{name}}")
    async def cdn(job_id: str, name: str) -> Response:
        """Unauthenticated, like the real CDN, and like it answers 403 when the CDN fault is on."""
        if state.settings.faults.cdn_forbidden:
            return Response(
                "<html><body><h1>403 Forbidden</h1></body></html>", status_code=403, media_type="text/html"
            )
        return await _image(state, CdnFile.parse(job_id, name))


async def _image(state: EmulatorState, file: CdnFile | None) -> Response:
    """A CDN file's PNG; 404 for a name that is none of the CDN's or a picture the job does not have (yet)."""
    spec = None if file is None else state.account.image(file)
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


_WHOLE_MINUTES = re.compile(r"\s*\+?0*([1-9][0-9]{0,6})\s*")


def _expire_mins(value: str | None) -> int | None:
    """``expireMins`` of a poll: absent (the default), or a positive whole number of minutes.

    The documentation gives whole minutes (``?expireMins=2``, "Default is 12 minutes"); anything else
    (``nan``, ``-1``, ``0``, ``1.5``, ``soon``) is refused as the service refuses a bad parameter, with a
    400 in its error shape. Up to 9,999,999 minutes (19 years).
    """
    if value is None or value == "":
        return None
    match = _WHOLE_MINUTES.fullmatch(value)
    if match is None:
        raise ApiError(400, f"expireMins must be a positive whole number of minutes, got {value[:40]!r}")
    return int(match[1])


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
