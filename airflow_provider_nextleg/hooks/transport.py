"""One HTTP layer for the NextLeg API: a call built once, sent by either face, its answer read one way.

Everything that touches HTTP lives here and beside it in :mod:`airflow_provider_nextleg.hooks`: the
request (:class:`ApiCall`), the send within the account's rate limit (:func:`send` for workers,
:func:`asend` for event loops), the one mapping from an HTTP answer or a transport failure to the
provider's errors (:func:`read_answer`, :func:`status_error`), and the one retry policy
(:func:`retry_policy`), which the image downloads of :mod:`airflow_provider_nextleg.hooks.images` share.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import httpx
import requests
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from urllib3.exceptions import ConnectTimeoutError

from airflow_provider_nextleg.exceptions import (
    NextLegAuthenticationError,
    NextLegBadRequestError,
    NextLegConnectionError,
    NextLegError,
    NextLegInputError,
    NextLegMalformedResponseError,
    NextLegNotFoundError,
    NextLegRateLimitError,
    NextLegServerError,
    NextLegSubmissionUncertainError,
    body_excerpt,
)
from airflow_provider_nextleg.hooks.connection import AccountSettings
from airflow_provider_nextleg.ratelimit import Slot

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
"""Most seconds spent connecting; a lower request timeout lowers it, never raises it."""
MAX_BACKOFF = 30.0
"""Longest pause between two attempts, whatever the exponential backoff reached."""
MAX_RETRY_AFTER = 300.0
"""Longest ``Retry-After`` honoured; a longer one is cut to this, so no call hangs for hours."""

RETRYABLE_ERRORS = (NextLegRateLimitError, NextLegServerError, NextLegConnectionError)
"""Errors worth another attempt. Submissions never raise them where the job may exist: a 5xx or an
ambiguous transport failure of a submission raises NextLegSubmissionUncertainError, which is not retried."""


@dataclass(frozen=True)
class ApiCall(Generic[T]):
    """
    One API call, built and checked before anything is sent; both faces send it the same way.

    :param method: the HTTP method.
    :param path: the path under the base URL.
    :param parse: turns the decoded JSON (the bytes when ``raw``) into the result; ``ValueError`` if
        something required is missing.
    :param json: the request body.
    :param params: the query string.
    :param submits_job: whether the call starts a (paid) job, so must not be sent twice.
    :param raw: whether the answer is bytes (an image) rather than JSON.
    :param message_id: the message concerned, for error messages.
    :param ref: the ``ref`` sent, for error messages.
    :param route_id: the ``loadBalanceId``/``ppuId`` of the job a press or a poll concerns, through a pool.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    submits_job: bool = False
    raw: bool = False
    message_id: str | None = None
    ref: str | None = None
    route_id: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


# Through a pool, the paths each mode offers (under its prefix) and the field that routes presses and polls.
_POOLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "load_balancer": ("/loadBalancer", "loadBalanceId", ("imagine", "describe", "button", "message")),
    "pay_per_use": ("/ppu", "ppuId", ("imagine", "button", "message")),
}


_ANY_MODE = ("is-this-naughty",)
"""Calls of ``/v2`` that concern no account's jobs, the same in every mode (as ``/getImage`` and the
other calls outside ``/v2``)."""


def routed(call: ApiCall[T], mode: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """
    Where a call goes in the connection's mode: ``(path, json, params)``. Direct calls go as built, and so
    do the calls that concern no account's jobs; through the load balancer or pay-per-use, a job's calls
    go under the pool's prefix, and presses and polls carry the job's route id. A job's call the pool does
    not offer (blend, seed, info, settings...), or a press or poll without its route id, is an input error
    before anything is sent.

    :param call: the call, as built for ``/v2``.
    :param mode: the connection's ``mode``.
    """
    family = call.path.removeprefix("/v2/").split("/")[0]
    if mode not in _POOLS or not call.path.startswith("/v2/") or family in _ANY_MODE:
        return call.path, call.json, call.params
    prefix, key, offered = _POOLS[mode]
    if family not in offered:
        raise NextLegInputError(
            f"{call.endpoint} is not offered in mode {mode}",
            advice=f"In mode {mode} NextLeg offers {', '.join(offered)}; use a connection in mode direct "
            "for the rest. Nothing was sent.",
        )
    if family in ("button", "message") and call.route_id is None:
        raise NextLegInputError(
            f"{call.endpoint} in mode {mode} needs the job's {key}",
            advice="Press buttons on, or wait for, the result of a job submitted in this mode: it carries "
            f"the {key} (route_id). Nothing was sent.",
        )
    path = prefix + call.path.removeprefix("/v2")
    if call.route_id is None:
        return path, call.json, call.params
    if call.json is not None:
        return path, {**call.json, key: call.route_id}, call.params
    return path, call.json, {**(call.params or {}), key: call.route_id}


def send(
    session: requests.Session, call: ApiCall[T], settings: AccountSettings, slot: Slot | None = None
) -> T:
    """
    One attempt of a call, sync: wait for a turn of the account's budget, send, read the answer.

    :param session: the keep-alive session, with the token in its headers.
    :param call: what to send.
    :param settings: the connection's settings.
    :param slot: a turn booked by the caller; one is booked here without it.
    """
    path, body, params = routed(call, settings.mode)
    slot = slot or settings.limiter.book()
    slot.wait()
    try:
        response = session.request(
            call.method,
            settings.base_url + path,
            params=params,
            json=body,
            timeout=(min(CONNECT_TIMEOUT, settings.timeout), settings.timeout),
            allow_redirects=False,  # a redirected POST would be resent as a GET
        )
    except requests.RequestException as exc:
        raise transport_error(call, settings, exc, sent_nothing=_requests_sent_nothing(exc)) from exc
    hold = _hold_after(response.status_code, response.headers, settings.rate_limit_interval)
    if hold is not None:
        settings.limiter.penalize(hold)
    return read_answer(call, settings, response.status_code, response.headers, response.content)


async def asend(
    client: httpx.AsyncClient, call: ApiCall[T], settings: AccountSettings, slot: Slot | None = None
) -> T:
    """
    One attempt of a call, async: the same steps as :func:`send`, on an event loop's client.

    :param client: the account's client in this loop, with the token in its headers.
    :param call: what to send.
    :param settings: the connection's settings.
    :param slot: a turn booked by the caller (the poll scheduler); one is booked here without it.
    """
    path, body, params = routed(call, settings.mode)
    slot = slot or await settings.limiter.abook()
    await asyncio.sleep(slot.start_in)
    sending = _Sending(slot)
    try:
        response = await client.request(
            call.method,
            settings.base_url + path,
            params=params,
            json=body,
            timeout=httpx.Timeout(settings.timeout, connect=min(CONNECT_TIMEOUT, settings.timeout)),
            extensions={"trace": sending},
        )
    except httpx.HTTPError as exc:
        raise transport_error(call, settings, exc, sent_nothing=not sending.sent) from exc
    hold = _hold_after(response.status_code, response.headers, settings.rate_limit_interval)
    if hold is not None:
        await settings.limiter.apenalize(hold)
    return read_answer(call, settings, response.status_code, response.headers, response.content)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (decimals allowed), capped at :data:`MAX_RETRY_AFTER`."""
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None  # absent, or an HTTP date, which this API does not send
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _hold_after(status: int, headers: Mapping[str, str], interval: float) -> float | None:
    """How long the whole account must stay quiet after this answer: a 429's (or a 5xx's) Retry-After."""
    wait = retry_after(headers)
    if status == 429:
        return interval if wait is None else wait
    return wait if status >= 500 else None


def _requests_sent_nothing(exc: requests.RequestException) -> bool:
    """Whether requests failed before sending a byte (connect timeout, refused, DNS, a URL it can't use)."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.InvalidURL):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, ConnectTimeoutError)


class _Sending:
    """
    One async request's progress as httpcore reports it (httpx's ``trace`` extension): the request waits
    for its turn once its connection is up, right before its first byte, so that connecting costs no
    part of the spacing; and whether the whole request went out, which no server can have processed
    before (so a submission that failed before that may be sent again).

    :param slot: the request's turn.
    """

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.turn_taken = False
        self.sent = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_headers.started") and not self.turn_taken:
            self.turn_taken = True  # a retry on another connection (httpcore's own) keeps the turn
            await self.slot.await_turn()
        elif event.endswith(".send_request_body.complete"):
            self.sent = True


def transport_error(
    call: ApiCall[Any], settings: AccountSettings, exc: Exception, *, sent_nothing: bool
) -> NextLegError:
    """The error for a request that got no answer; whether anything was sent decides for submissions."""
    detail = body_excerpt(f"{type(exc).__name__}: {exc}", secret=settings.token)
    where: dict[str, Any] = {"endpoint": call.endpoint, "message_id": call.message_id}
    if call.submits_job and not sent_nothing:
        return NextLegSubmissionUncertainError(
            f"the request was sent but no answer came back ({detail})", ref=call.ref, **where
        )
    return NextLegConnectionError(f"no answer from {settings.base_url} ({detail})", **where)


def _api_message(body: bytes, secret: str) -> str:
    """The ``msg`` of the API's error answer ``{"success": false, "msg": "..."}``, if it sent one."""
    try:
        message = json.loads(body).get("msg")
    except (ValueError, AttributeError, RecursionError):
        message = None
    return body_excerpt(message, secret=secret) if isinstance(message, str) else "no reason given"


def status_error(
    status: int, headers: Mapping[str, str], where: dict[str, Any], *, body: bytes = b"", secret: str = ""
) -> NextLegError | None:
    """
    The error an HTTP status stands for, or ``None`` for a success (2xx); the one mapping of statuses.

    :param status: the HTTP status.
    :param headers: the answer's headers (``Location`` of a redirect).
    :param where: what the error names: ``endpoint``, ``message_id``, ...
    :param body: the answer's body, for the service's own reason.
    :param secret: a string never to quote (the API token).
    """
    where = {
        **where,
        "status": status,
        "body": body_excerpt(body, secret=secret) if body else None,
        "retry_after": retry_after(headers),
    }
    if status == 429:
        return NextLegRateLimitError("the rate limit refused the request", **where)
    if status >= 500:
        return NextLegServerError("the service failed", **where)
    if status in (401, 403):
        return NextLegAuthenticationError("the API token was refused", **where)
    if status == 404:
        return NextLegNotFoundError("no such resource", **where)
    if status >= 400:
        return NextLegBadRequestError(f"the request was rejected: {_api_message(body, secret)}", **where)
    if status >= 300:
        return NextLegBadRequestError(f"redirected to {headers.get('Location')}", **where)
    return None


def read_answer(
    call: ApiCall[T], settings: AccountSettings, status: int, headers: Mapping[str, str], body: bytes
) -> T:
    """Turn an HTTP answer into the call's result or the error that says what happened."""
    where: dict[str, Any] = {"endpoint": call.endpoint, "message_id": call.message_id}
    error = status_error(status, headers, where, body=body, secret=settings.token)
    if isinstance(error, NextLegServerError) and call.submits_job:
        raise NextLegSubmissionUncertainError(
            "the service failed while handling the submission",
            ref=call.ref,
            status=status,
            body=error.body,
            retry_after=error.retry_after,
            **where,
        )
    if error is not None:
        raise error
    if call.raw:
        content_type = headers.get("Content-Type", "")
        if not body or content_type.startswith(("text/", "application/json")):
            raise NextLegMalformedResponseError(
                f"expected image bytes, got {content_type or 'nothing'}", status=status, **where
            )
        return call.parse(body)
    try:
        return call.parse(json.loads(body))
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError too
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        if call.submits_job:  # accepted, most likely, but under an id nobody can read
            raise NextLegSubmissionUncertainError(
                f"the answer to the submission cannot be read ({problem})",
                ref=call.ref,
                status=status,
                **where,
            ) from None
        raise NextLegMalformedResponseError(
            f"the answer is not what the API sends: {problem}", status=status, **where
        ) from None


def retry_policy(max_attempts: int, retry_wait: float, log: logging.Logger | Any) -> dict[str, Any]:
    """
    The retry policy of every NextLeg request (tenacity's ``Retrying`` and ``AsyncRetrying`` arguments).

    Only :data:`RETRYABLE_ERRORS` are retried, with exponential backoff and jitter (which spreads callers
    that failed together), and never sooner than a ``Retry-After`` asked; out of attempts, the last error
    is raised, saying how many attempts were made.

    :param max_attempts: attempts per call, the first included.
    :param retry_wait: the first pause in seconds; it doubles with each attempt, up to :data:`MAX_BACKOFF`.
    :param log: where each retry is announced.
    """
    backoff, jitter = wait_exponential(multiplier=retry_wait, max=MAX_BACKOFF), wait_random(0, retry_wait)

    def announce(state: RetryCallState) -> None:
        error = _retried_error(state)
        log.warning(
            "NextLeg %s failed (%s%s); attempt %d of %d, next in %.2f s",
            error.endpoint,
            f"HTTP {error.status}: " if error.status else "",
            error.problem,
            state.attempt_number,
            max_attempts,
            state.upcoming_sleep,
        )

    return {
        "stop": stop_after_attempt(max_attempts),
        "wait": lambda state: max(backoff(state), _retried_error(state).retry_after or 0.0) + jitter(state),
        "retry": retry_if_exception_type(RETRYABLE_ERRORS),
        "before_sleep": announce,
        "retry_error_callback": _give_up,
    }


def _retried_error(state: RetryCallState) -> NextLegError:
    """The error of the attempt that just failed; tenacity retries only NextLeg's retryable errors."""
    error = state.outcome.exception() if state.outcome else None
    assert isinstance(error, NextLegError), f"tenacity retried {error!r}"
    return error


def _give_up(state: RetryCallState) -> NoReturn:
    """Out of attempts: raise the last error, saying how many attempts were made."""
    raise _retried_error(state).after_attempts(state.attempt_number)
