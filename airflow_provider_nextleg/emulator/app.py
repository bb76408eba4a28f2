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
import random
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_nextleg.emulator.account import Account
from airflow_provider_nextleg.emulator.clock import SimClock, iso
from airflow_provider_nextleg.emulator.faults import FaultInjector, FaultMiddleware
from airflow_provider_nextleg.emulator.images import QUADRANT_SIZE, ImageSpec, render, render_face_swap
from airflow_provider_nextleg.emulator.jobs import Job
from airflow_provider_nextleg.emulator.latency import LatencyMiddleware
from airflow_provider_nextleg.emulator.pools import Accounts, Submit
from airflow_provider_nextleg.emulator.prompts import find_banned_word, is_link
from airflow_provider_nextleg.emulator.protocol import (
    ADMIN_PREFIX,
    CDN_PREFIX,
    LOAD_BALANCE_ID,
    PPU_ID,
    ApiError,
    CdnFile,
    Wire,
    endpoint_key,
    error_body,
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
        self.accounts = Accounts(settings, self.clock)
        self.wire = Wire(settings, self.clock)
        self.window = SlidingWindow()
        self.faults = FaultInjector(settings)
        self._cdn_draws = random.Random(f"cdn-{settings.seed}")
        self.webhooks = WebhookDispatcher(self.accounts.all, self.wire)
        self.ledger: list[dict[str, Any]] = []
        self.counters = _new_counters()
        self.server_state: Any = None

    def reset(self) -> None:
        """Clear jobs, ledger, counters, webhook records, faults and the rate-limit window."""
        self.accounts.reset()
        self._cdn_draws = random.Random(f"cdn-{self.settings.seed}")
        self.window = SlidingWindow()
        self.faults.reset()
        self.settings.faults = FaultSettings()
        self.ledger.clear()
        self.webhooks.deliveries.clear()
        self.counters = _new_counters()
        self.webhooks.wake()

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply setting changes at run time, validated as a whole before anything changes.

        Durations, concurrency and modes apply to jobs submitted from now on, a new ``seed`` after a reset;
        ``ppu_credits`` sets the credits left.
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
        self.accounts.resize()
        if "ppu_credits" in changes:
            self.accounts.credits = updated.ppu_credits
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

    @property
    def account(self) -> Account:
        """The account ``/v2`` uses (the first of the token's)."""
        return self.accounts.direct

    def forbids(self, request: Request, file: CdnFile | None) -> bool:
        """Whether a direct download of ``file`` is refused with 403 (see ``cdn_403_rate``)."""
        if self.settings.faults.cdn_forbidden:
            return True
        rate = self.settings.cdn_403_rate
        browser = request.headers.get("user-agent", "").startswith("Mozilla/")
        return file is not None and file.kind == "tile" and not browser and self._cdn_draws.random() < rate

    def admit(self, request: Request) -> None:
        """Count the request against the token's sliding window, or refuse it with 429.

        One window per token, which is all the emulator has: the documentation's "one request every 3
        seconds" is the token's, so ``/v2``, the load balancer (all its accounts), pay-per-use, ``/api``
        and ``/getImage`` share it (see :mod:`.pools`).
        """
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
        """Add a submission to the ledger: what was asked, and the messageId or the refusal it got
        (``""``: accepted without a message, as a face swap)."""
        self.ledger.append(
            {
                "endpoint": request.url.path,
                "method": request.method,
                "payload": payload,
                "ref": payload.get("ref"),
                "time": iso(self.clock.wall(self.clock.now())),
                "status": status,
                "messageId": outcome.id if isinstance(outcome, Job) else None,
                "error": None if isinstance(outcome, Job) else outcome or None,
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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown paths and methods answer in the service's error shape, not the framework's ``detail``."""
        msg = {404: f"Not found: {request.method} {request.url.path}"}.get(exc.status_code, str(exc.detail))
        if exc.status_code == 405:
            msg = f"Method {request.method} not allowed on {request.url.path}"
        return JSONResponse(error_body(msg), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(f"Invalid request: {exc.errors()}"[:500]), status_code=400)

    _add_api_routes(app, state)
    _add_admin_routes(app, state)
    return app


#: Submissions: path, the account's call, the pool it goes through, and whether it is a button press
#: (which goes to the account of the id it sends back). Every one takes POST with a JSON body and GET with
#: the same fields as query parameters ("You can pass any arguments in the POST request as encoded URI
#: query parameters" [doc]).
_SUBMISSIONS: tuple[tuple[str, Submit, str, bool], ...] = (
    ("/v2/imagine", Account.imagine, "direct", False),
    ("/v2/button", Account.button, "direct", False),
    ("/v2/describe", Account.describe, "direct", False),
    ("/v2/blend", Account.blend, "direct", False),
    ("/v2/info", Account.info, "direct", False),
    ("/v2/settings", Account.settings_message, "direct", False),
    ("/v2/slash-commands", Account.slash_command, "direct", False),
    ("/api", Account.v1, "direct", False),
    ("/loadBalancer/imagine", Account.imagine, "loadBalancer", False),
    ("/loadBalancer/describe", Account.describe, "loadBalancer", False),
    ("/loadBalancer/button", Account.button, "loadBalancer", True),
    ("/ppu/imagine", Account.imagine, "ppu", False),
    ("/ppu/button", Account.button, "ppu", True),
)
_BOTH = ["GET", "POST"]


def _add_api_routes(app: FastAPI, state: EmulatorState) -> None:
    def submission(create: Submit, pool: str, follow_up: bool) -> Callable[[Request], Any]:
        async def submit(request: Request) -> JSONResponse:
            state.authorize(request)
            payload: dict[str, Any] = {}
            try:
                payload = await _payload(request)
                state.admit(request)
                job = state.accounts.submit(pool, create, payload, _base_url(request), follow_up=follow_up)
            except ApiError as exc:
                state.record(request, payload, exc.status, exc.msg)
                raise
            state.record(request, payload, 200, job)
            state.webhooks.wake()
            logger.debug("%s %s accepted as message %s", request.method, request.url.path, job.id)
            return JSONResponse(state.wire.accepted(job))

        return submit

    for path, create, pool, follow_up in _SUBMISSIONS:
        app.add_api_route(path, submission(create, pool, follow_up), methods=_BOTH)

    def poll(pool: str) -> Callable[[Request, str], Any]:
        async def message(request: Request, message_id: str) -> JSONResponse:
            """An id the account never issued answers 404 (unlike a button press, see ``Account.button``):
            a poll can only be about a message the service itself handed out, so there is nothing to wait
            for. Through a pool, the poll sends the submission's ``loadBalanceId`` or ``ppuId``, which
            names the account to ask."""
            state.authorize(request)
            state.admit(request)
            expire_mins = _expire_mins(request.query_params.get("expireMins"))
            account = state.accounts.direct
            if pool != "direct":
                account = state.accounts.routed(pool, request.query_params.get(_ROUTE_KEYS[pool]))
            job = account.job(message_id)
            return JSONResponse(state.wire.message(job, expire_mins, _base_url(request)))

        return message

    for prefix, pool in (("/v2", "direct"), ("/loadBalancer", "loadBalancer"), ("/ppu", "ppu")):
        app.add_api_route(f"{prefix}/message/{{message_id}}", poll(pool), methods=["GET"])

    @app.api_route("/v2/seed", methods=_BOTH)
    async def seed(request: Request) -> JSONResponse:
        state.authorize(request)
        state.admit(request)
        message_id = str((await _payload(request)).get("messageId", ""))
        return JSONResponse({"seed": state.accounts.direct.seed_of(message_id)})

    @app.api_route("/v2/is-this-naughty", methods=_BOTH)
    async def is_this_naughty(request: Request) -> JSONResponse:
        state.authorize(request)
        state.admit(request)
        phrase = find_banned_word(str((await _payload(request)).get("msg", "")), state.settings.banned_words)
        return JSONResponse({"isNaughty": phrase is not None, "phrase": phrase or ""})

    @app.get("/upscale-img-url")
    async def upscale_img_url(request: Request) -> JSONResponse:
        """One image of a finished grid, at once (``{"url": ...}``); see ``Account.upscale_url``."""
        state.authorize(request)
        state.admit(request)
        payload = await _payload(request)
        return JSONResponse({"url": state.accounts.direct.upscale_url(payload, _base_url(request))})

    @app.api_route("/getImage", methods=_BOTH)
    async def get_image(request: Request) -> Response:
        """The documented way around a 403 from the CDN: the same bytes, behind the API token."""
        state.authorize(request)
        state.admit(request)
        url = str((await _payload(request)).get("imgUrl", ""))
        return await _image(state, CdnFile.from_url(url), url)

    @app.api_route("/face-swap", methods=_BOTH)
    async def face_swap(request: Request) -> Response:
        """``POST /face-swap {sourceImg, targetImg}``: the target picture with the source's face, as PNG
        bytes in the answer itself. The shape is a real client's (a Go library: the two URLs in, the
        image's bytes out), not documented; offline, a picture of the emulator's CDN is drawn as the job
        drew it and any other URL as a picture drawn from the URL, and the "face" is an oval of the source
        in the middle of the target (our judgement, to make the result visible)."""
        state.authorize(request)
        payload: dict[str, Any] = {}
        try:
            payload = await _payload(request)
            state.admit(request)
            source, target = (_picture_of(state, payload, name) for name in ("sourceImg", "targetImg"))
        except ApiError as exc:
            state.record(request, payload, exc.status, exc.msg)
            raise
        state.record(request, payload, 200, "")
        return Response(await run_in_threadpool(render_face_swap, source, target), media_type="image/png")

    @app.get(f"{CDN_PREFIX}/{{path:path}}")
    async def cdn(request: Request) -> Response:
        """Unauthenticated, like the real CDNs. A tile (``imageUrls``) answers 403 to a non-browser client
        with the probability ``cdn_403_rate``, as Midjourney's CDN refused servers; any file answers 403
        while the ``cdn_forbidden`` fault is on."""
        file = CdnFile.from_path(request.url.path)
        if state.forbids(request, file):
            state.counters["forbidden"][endpoint_key(request.method, request.url.path)] += 1
            return Response(_FORBIDDEN_PAGE, status_code=403, media_type="text/html")
        return await _image(state, file, request.url.path)


_ROUTE_KEYS = {"loadBalancer": LOAD_BALANCE_ID, "ppu": PPU_ID}
_FORBIDDEN_PAGE = (
    "<html><head><title>Access denied</title></head><body><h1>403 Forbidden</h1>"
    "<p>You do not have access to this image from here: fetch it through POST /getImage.</p></body></html>"
)


def _picture_of(state: EmulatorState, payload: dict[str, Any], name: str) -> ImageSpec:
    """The picture an image URL of a request names: the emulator's own, or one drawn from the URL."""
    url = payload.get(name)
    if not is_link(url):
        raise ApiError(400, f"{name} must be an http(s) image URL")
    assert isinstance(url, str)
    file = CdnFile.from_url(url)
    if file is None:
        return ImageSpec("tile", url, "", "", QUADRANT_SIZE)
    spec = state.accounts.image(file)
    if spec is None:
        raise ApiError(404, f"Image not found: {name}")
    return spec


async def _image(state: EmulatorState, file: CdnFile | None, name: str) -> Response:
    """A CDN file's bytes; 404 for a path that is none of the CDN's, or a picture not there (yet)."""
    spec = None if file is None else state.accounts.image(file)
    if file is None or spec is None:
        raise ApiError(404, f"Image not found: {name[:200]}")
    data = await run_in_threadpool(render, spec, "WEBP" if file.kind == "preview" else "PNG")
    return Response(data, media_type=file.media_type)


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
                "accountId": job.origin.account_id,
                "type": job.type,
                "error": job.error,
                "stalled": job.stalled,
                "created": wall(job.created).timestamp(),
                "started": wall(job.start).timestamp(),
                "finished": wall(job.finish).timestamp(),
            }
            for job in state.accounts.jobs()
        ]

    @app.get(f"{ADMIN_PREFIX}/accounts")
    async def accounts(request: Request) -> dict[str, Any]:
        """The token's accounts: the direct one, the load balancer's, pay-per-use's with its credits."""
        admin(request)
        return state.accounts.report()

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
        # A field given more than once is a list (``?urls=a&urls=b``, a blend's images).
        payload: Any = {
            name: values[0] if len(values) == 1 else values
            for name in request.query_params
            if (values := request.query_params.getlist(name))
        }
        if isinstance(payload.get("urls"), str):
            payload["urls"] = _urls(payload["urls"])
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


def _urls(value: str) -> Any:
    """A blend's ``urls`` given once in a query: a JSON array, or one URL (which a blend then refuses)."""
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return [value]


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
    return {name: Counter() for name in ("requests", "unauthorized", "rate_limited", "faults", "forbidden")}
