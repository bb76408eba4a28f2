"""The hook of the NextLeg v2 API: every endpoint, a sync face for workers and an async face for triggers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import requests
from airflow.sdk import BaseHook, Connection
from asgiref.sync import sync_to_async
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from urllib3.exceptions import ConnectTimeoutError

from airflow_provider_nextleg import __version__, validation
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
from airflow_provider_nextleg.get_provider_info import (
    CONNECTION_FIELDS,
    DEFAULT_BASE_URL,
    DEFAULT_EXPIRE_MINS,
    DEFAULT_RATE_LIMIT_INTERVAL,
    DEFAULT_TIMEOUT,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_nextleg.models import Message, NaughtyResult, SubmitResult, parse_seed
from airflow_provider_nextleg.ratelimit import RateLimiter, account_key, rate_limiter_for

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
"""Most seconds spent connecting; the connection's ``timeout`` extra lowers it, never raises it."""
MAX_BACKOFF = 30.0
"""Longest pause between two attempts, whatever the exponential backoff reached."""
MAX_RETRY_AFTER = 300.0
"""Longest ``Retry-After`` honoured; a longer one is cut to this, so no call hangs for hours."""

# GET /v2/message/<this> answers 404 with a valid token: free proof that the token works.
_PROBE_MESSAGE_ID = "airflowConnTest00000"


@dataclass(frozen=True)
class _Settings:
    """What the hook needs from its connection, read once per hook instance."""

    base_url: str
    token: str = field(repr=False)
    timeout: float
    rate_limit_interval: float
    expire_mins: int

    @classmethod
    def from_connection(cls, conn: Connection, extra: Mapping[str, Any]) -> _Settings:
        """
        Read a nextleg connection: token in the password, base URL in the host, tuning in the extras.

        :param conn: the Airflow connection.
        :param extra: its extra, already decoded (the async face decodes it without blocking).
        """
        if not conn.password:
            raise NextLegAuthenticationError(
                f"connection {conn.conn_id!r} has no API token",
                advice="Put the NextLeg API token in the connection's password field.",
            )
        return cls(
            base_url=_base_url(conn),
            token=conn.password,
            timeout=_extra_number(conn, extra, "timeout", DEFAULT_TIMEOUT, minimum=0.001),
            rate_limit_interval=_extra_number(
                conn, extra, "rate_limit_interval", DEFAULT_RATE_LIMIT_INTERVAL, minimum=0.0
            ),
            expire_mins=int(_extra_number(conn, extra, "expire_mins", DEFAULT_EXPIRE_MINS, minimum=1.0)),
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        """The process-wide limiter of this account."""
        return rate_limiter_for(self.base_url, self.token, self.rate_limit_interval)

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every request; the token travels here and nowhere else."""
        return {
            "Authorization": f"Bearer {self.token}",
            "User-Agent": f"airflow-provider-nextleg/{__version__}",
        }


def _base_url(conn: Connection) -> str:
    """The API's base URL from the host: a full URL, or a bare host completed by schema and port."""
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    try:
        parts = urlsplit(host)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has host {host!r:.120}, which is not an http(s) URL",
            advice=f"Set the host to the API's base URL, e.g. {DEFAULT_BASE_URL}.",
        )
    netloc = parts.netloc if port is not None or not conn.port else f"{parts.netloc}:{conn.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _extra_number(
    conn: Connection, extra: Mapping[str, Any], name: str, default: float, *, minimum: float
) -> float:
    """A numeric extra; the UI and URI forms store numbers as strings, so those are read too."""
    value = extra.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has {name}={value!r:.40}, not a number of at least {minimum:g}",
            advice=f"Fix the {name} extra of the connection, or remove it to use {default:g}.",
        )
    return number


async def _aget_connection(hook: BaseHook, conn_id: str) -> tuple[Connection, dict[str, Any]]:
    """
    Look a connection up without blocking the event loop, on every supported Airflow.

    Airflow 3.3.2 added ``Connection.aextra_dejson``, which masks the extra's secrets asynchronously; from
    then on ``aget_connection`` is safe in the triggerer. Before it, both the async lookup and
    ``extra_dejson`` mask through a synchronous call to the supervisor, which fails when another async
    call is in flight, so there the synchronous calls run in a worker thread. A secrets backend read
    outside a task may hand back Airflow's ORM connection, which has no ``aextra_dejson`` either.
    """
    if hasattr(Connection, "aextra_dejson"):
        conn = await hook.aget_connection(conn_id)
    else:
        conn = await sync_to_async(hook.get_connection)(conn_id)
    if hasattr(conn, "aextra_dejson"):
        return conn, await conn.aextra_dejson()
    return conn, await sync_to_async(lambda: conn.extra_dejson)()


@dataclass(frozen=True)
class _Call(Generic[T]):
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

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


def _fields(**values: Any) -> dict[str, Any]:
    """A request body without the options left out (None)."""
    return {name: value for name, value in values.items() if value is not None}


def _options(ref: str | None, webhook_override: str | None) -> dict[str, Any]:
    """The ``ref`` and ``webhookOverride`` every job-starting call takes, checked."""
    options = {}
    if ref is not None:
        options["ref"] = validation.check_ref(ref)
    if webhook_override is not None:
        options["webhookOverride"] = validation.check_url(webhook_override, name="webhook_override")
    return options


def _submission(
    method: str, path: str, body: dict[str, Any], *, ref: str | None = None
) -> _Call[SubmitResult]:
    if method == "GET":
        return _Call(method, path, SubmitResult.from_api, params=body or None, submits_job=True, ref=ref)
    return _Call(method, path, SubmitResult.from_api, json=body, submits_job=True, ref=ref)


def _imagine_call(
    prompt: str, ref: str | None, webhook_override: str | None, ignore_prefilter: bool | None
) -> _Call[SubmitResult]:
    body = {"msg": validation.check_prompt(prompt), **_options(ref, webhook_override)}
    # The docs send the string "true"; "false" would read as true to a truthiness check, so False is
    # sent as no field at all (the prefilter's default).
    if ignore_prefilter is not None and validation.check_flag(ignore_prefilter, name="ignore_prefilter"):
        body["ignorePrefilter"] = "true"
    return _submission("POST", "/v2/imagine", body, ref=ref)


def _button_call(
    button: str,
    button_message_id: str,
    ref: str | None,
    webhook_override: str | None,
    prompt: str | None,
    zoom: float | None,
    ar: str | None,
) -> _Call[SubmitResult]:
    validation.check_custom_zoom(validation.check_text(button, name="button"), zoom, ar, prompt)
    body = {
        "button": button,
        "buttonMessageId": validation.check_message_id(button_message_id, name="button_message_id"),
        **_options(ref, webhook_override),
        **_fields(prompt=prompt, zoom=zoom, ar=ar),
    }
    return _submission("POST", "/v2/button", body, ref=ref)


def _message_call(message_id: str, expire_mins: int) -> _Call[Message]:
    message_id = validation.check_message_id(message_id)
    return _Call(
        "GET",
        f"/v2/message/{message_id}",
        lambda payload: Message.from_api(payload, message_id),
        params={"expireMins": validation.check_expire_mins(expire_mins)},
        message_id=message_id,
    )


def _seed_call(message_id: str) -> _Call[str]:
    body = {"messageId": validation.check_message_id(message_id)}
    return _Call("POST", "/v2/seed", parse_seed, json=body, message_id=message_id)


def _describe_call(url: str, ref: str | None, webhook_override: str | None) -> _Call[SubmitResult]:
    body = {"url": validation.check_url(url, name="url"), **_options(ref, webhook_override)}
    return _submission("POST", "/v2/describe", body, ref=ref)


def _blend_call(urls: Sequence[str], ref: str | None, webhook_override: str | None) -> _Call[SubmitResult]:
    body = {"urls": validation.check_blend_urls(urls), **_options(ref, webhook_override)}
    return _submission("POST", "/v2/blend", body, ref=ref)


def _info_call(ref: str | None, webhook_override: str | None) -> _Call[SubmitResult]:
    return _submission("GET", "/v2/info", _options(ref, webhook_override), ref=ref)


def _toggle_setting_call(toggle: str) -> _Call[SubmitResult]:
    body = {"settingsToggle": validation.check_text(toggle, name="toggle")}
    return _submission("POST", "/v2/settings", body)


def _slash_command_call(cmd: str) -> _Call[SubmitResult]:
    return _submission("POST", "/v2/slash-commands", {"cmd": validation.check_slash_command(cmd)})


def _naughty_call(prompt: str) -> _Call[NaughtyResult]:
    body = {"msg": validation.check_prompt(prompt)}
    return _Call("POST", "/v2/is-this-naughty", NaughtyResult.from_api, json=body)


def _image_call(img_url: str) -> _Call[bytes]:
    body = {"imgUrl": validation.check_url(img_url, name="img_url")}
    return _Call("POST", "/getImage", bytes, json=body, raw=True)


_SETTINGS_CALL: _Call[SubmitResult] = _submission("GET", "/v2/settings", {})
_PROBE_CALL: _Call[Message] = _message_call(_PROBE_MESSAGE_ID, DEFAULT_EXPIRE_MINS)

# Answers that may succeed when asked again. Submissions never reach here with a 5xx or an ambiguous
# transport failure: those raise NextLegSubmissionUncertainError, which is not retried.
RETRYABLE_ERRORS = (NextLegRateLimitError, NextLegServerError, NextLegConnectionError)
"""Errors the hook retries (a GET freely; a submission only where surely nothing was processed)."""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (decimals allowed), capped at :data:`MAX_RETRY_AFTER`."""
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None  # absent, or an HTTP date, which this API does not send
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _requests_sent_nothing(exc: requests.RequestException) -> bool:
    """Whether requests failed before sending a byte (connect timeout, refused, DNS)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, ConnectTimeoutError)


def _httpx_sent_nothing(exc: httpx.HTTPError) -> bool:
    """Whether httpx failed before sending a byte (connect timeout, refused, DNS, no free connection)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


# One httpx.AsyncClient per event loop and account, shared by every hook (and so every trigger) there.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], httpx.AsyncClient]
] = weakref.WeakKeyDictionary()
_async_clients_lock = threading.Lock()


class NextLegHook(BaseHook):
    """
    Call the NextLeg v2 API: submit Midjourney jobs, poll them, and use the account's other endpoints.

    Every endpoint has a sync face (``imagine``) for workers, on one keep-alive ``requests.Session`` per
    hook, and an async face (``aimagine``) for triggers, on one ``httpx.AsyncClient`` per event loop and
    account, shared by every hook in the process (close them with :meth:`aclose_clients`). Both faces
    build, check, retry and parse each call the same way; only the transport differs.

    **Input** is checked before anything is sent (see :mod:`airflow_provider_nextleg.validation`); a bad
    argument raises :class:`~airflow_provider_nextleg.exceptions.NextLegInputError`.

    **Rate limit**: every request waits for a slot from the process's one limiter of the account
    (``rate_limit_interval`` seconds apart, 3 by default); a 429 pushes that account's next slot back
    by its ``Retry-After`` for every caller.

    **Retries**: reads (``get_message``, ``get_seed``, ``is_this_naughty``, ``get_image``, the
    connection test) are retried with exponential backoff and jitter on 429, 5xx, connection errors
    and timeouts, up to ``max_attempts``. A job-starting call (``imagine``, ``button``, ``describe``,
    ``blend``, ``info``, ``get_settings``, ``toggle_setting``, ``slash_command``) is retried only where
    the request surely was not processed: a 429, or a connection that was never made (refused, DNS
    failure, connect timeout). When it may have been processed (a read timeout, a connection dropped
    after sending, a 5xx), sending it again could start a second paid job, so the hook raises
    :class:`~airflow_provider_nextleg.exceptions.NextLegSubmissionUncertainError` instead; pass a ``ref``
    to be able to recognise the job in its result and webhook. When the attempts run out, the error
    names the endpoint and the last status.

    **The token** travels only in the ``Authorization: Bearer`` header: never in a URL, a log line, an
    exception message or a repr.

    :param nextleg_conn_id: the ``nextleg`` connection: API token in the password, base URL in the host
        (default ``https://api.thenextleg.io``), extras ``timeout``, ``rate_limit_interval``, ``expire_mins``.
    :param max_attempts: attempts per call, the first included.
    :param retry_wait: the first pause between attempts in seconds; it doubles with each attempt (plus
        jitter), up to :data:`MAX_BACKOFF`.
    """

    conn_name_attr = "nextleg_conn_id"
    default_conn_name = "nextleg_default"
    conn_type = "nextleg"
    hook_name = "NextLeg"

    def __init__(
        self, nextleg_conn_id: str = default_conn_name, *, max_attempts: int = 5, retry_wait: float = 1.0
    ) -> None:
        super().__init__()
        if max_attempts < 1 or retry_wait < 0:
            raise NextLegInputError(
                f"max_attempts={max_attempts} and retry_wait={retry_wait} cannot work",
                advice="Pass max_attempts of at least 1 and a retry_wait of at least 0.",
            )
        self.nextleg_conn_id = nextleg_conn_id
        self.max_attempts = max_attempts
        self.retry_wait = retry_wait
        self._settings: _Settings | None = None

    # --- the connection form -------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The standard fields' form for Airflow 3.1, from the provider info's ``ui-field-behaviour``."""
        return {name.replace("-", "_"): value for name, value in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields' form for Airflow 3.1, from the provider info's ``conn-fields``."""
        from wtforms import IntegerField, StringField

        return {
            name: (IntegerField if "integer" in spec["schema"]["type"] else StringField)(
                spec["label"], description=spec["description"], default=spec["schema"]["default"]
            )
            for name, spec in CONNECTION_FIELDS.items()
        }

    # --- connection and transport --------------------------------------------------------------------

    def _get_settings(self) -> _Settings:
        if self._settings is None:
            conn = self.get_connection(self.nextleg_conn_id)
            self._settings = _Settings.from_connection(conn, conn.extra_dejson)
        return self._settings

    async def _aget_settings(self) -> _Settings:
        if self._settings is None:
            conn, extra = await _aget_connection(self, self.nextleg_conn_id)
            self._settings = _Settings.from_connection(conn, extra)
        return self._settings

    @property
    def rate_limit_interval(self) -> float:
        """Seconds between two requests of this connection's account: also the natural poll interval."""
        return self._get_settings().rate_limit_interval

    async def arate_limiter(self) -> RateLimiter:
        """The process's limiter of this connection's account, for a caller that takes its slots itself."""
        return (await self._aget_settings()).limiter

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session, with the token in its headers."""
        return self._session

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self._get_settings().headers)
        return session

    def close(self) -> None:
        """Close the sync session (the shared async clients stay: see :meth:`aclose_clients`)."""
        if "_session" in self.__dict__:
            self.__dict__.pop("_session").close()

    @staticmethod
    def _async_client(settings: _Settings) -> httpx.AsyncClient:
        """The running loop's shared client for the account, created on first use."""
        loop = asyncio.get_running_loop()
        key = account_key(settings.base_url, settings.token)
        with _async_clients_lock:
            clients = _async_clients.setdefault(loop, {})
            client = clients.get(key)
            if client is None or client.is_closed:
                client = clients[key] = httpx.AsyncClient(headers=settings.headers)
        return client

    @classmethod
    async def aclose_clients(cls) -> None:
        """Close the shared async clients of the running event loop (e.g. at the end of a test)."""
        with _async_clients_lock:
            clients = _async_clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            await client.aclose()

    def _retrying(self) -> dict[str, Any]:
        """The retry policy, the same for both faces (tenacity's ``Retrying`` and ``AsyncRetrying``)."""
        backoff = wait_exponential(multiplier=self.retry_wait, max=MAX_BACKOFF)
        return {
            "stop": stop_after_attempt(self.max_attempts),
            "wait": backoff + wait_random(0, self.retry_wait),  # jitter spreads callers that failed together
            "retry": retry_if_exception_type(RETRYABLE_ERRORS),
            "before_sleep": self._log_retry,
            "retry_error_callback": _give_up,
        }

    def _log_retry(self, state: RetryCallState) -> None:
        error = _retried_error(state)
        self.log.warning(
            "NextLeg %s failed (%s%s); attempt %d of %d, next in %.2f s",
            error.endpoint,
            f"HTTP {error.status}: " if error.status else "",
            error.problem,
            state.attempt_number,
            self.max_attempts,
            state.upcoming_sleep,
        )

    def _send(self, call: _Call[T], settings: _Settings) -> T:
        """One attempt of a call, sync: wait for the account's slot, send, read the answer."""
        time.sleep(settings.limiter.reserve())
        session = self._session  # created before the check: a new session takes a while
        while (wait := settings.limiter.clear_to_send()) > 0:
            time.sleep(wait)
        try:
            response = session.request(
                call.method,
                settings.base_url + call.path,
                params=call.params,
                json=call.json,
                timeout=(min(CONNECT_TIMEOUT, settings.timeout), settings.timeout),
                allow_redirects=False,  # a redirected POST would be resent as a GET
            )
        except requests.RequestException as exc:
            raise _transport_error(call, settings, exc, sent_nothing=_requests_sent_nothing(exc)) from exc
        finally:
            settings.limiter.answered()
        return _answer(call, settings, response.status_code, response.headers, response.content)

    async def _asend(self, call: _Call[T], settings: _Settings, *, paced: bool = True) -> T:
        """One attempt of a call, async: the same steps as :meth:`_send` on the shared client.

        ``paced=False`` skips booking a slot: the caller already waited for the one it booked.
        """
        if paced:
            await asyncio.sleep(settings.limiter.reserve())
        client = self._async_client(settings)  # created before the check: a new client takes a while
        while (wait := settings.limiter.clear_to_send()) > 0:
            await asyncio.sleep(wait)
        try:
            response = await client.request(
                call.method,
                settings.base_url + call.path,
                params=call.params,
                json=call.json,
                timeout=httpx.Timeout(settings.timeout, connect=min(CONNECT_TIMEOUT, settings.timeout)),
            )
        except httpx.HTTPError as exc:
            raise _transport_error(call, settings, exc, sent_nothing=_httpx_sent_nothing(exc)) from exc
        finally:
            settings.limiter.answered()
        return _answer(call, settings, response.status_code, response.headers, response.content)

    def _request(self, call: _Call[T]) -> T:
        settings = self._get_settings()
        result: T = Retrying(**self._retrying())(self._send, call, settings)
        self._log_submission(call, result)
        return result

    async def _arequest(self, call: _Call[T]) -> T:
        settings = await self._aget_settings()
        result: T = await AsyncRetrying(**self._retrying())(self._asend, call, settings)
        self._log_submission(call, result)
        return result

    def _log_submission(self, call: _Call[Any], result: object) -> None:
        if isinstance(result, SubmitResult):
            self.log.info(
                "NextLeg %s started job %s%s; poll it with get_message.",
                call.endpoint,
                result.message_id,
                f" (ref {call.ref!r})" if call.ref else "",
            )

    # --- the endpoints, sync ---------------------------------------------------------------------------

    def imagine(
        self,
        prompt: str,
        *,
        ref: str | None = None,
        webhook_override: str | None = None,
        ignore_prefilter: bool | None = None,
    ) -> SubmitResult:
        """
        Start an image job from a prompt (``POST /v2/imagine``); a paid job, never resent when in doubt.

        :param prompt: the prompt; may start with image URLs and carry flags such as ``--ar 16:9``.
        :param ref: any string, echoed in the result and the webhook: the way to recognise the job.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        :param ignore_prefilter: True skips the banned-phrase prefilter, whose refusal is a 400
            (sent as ``"ignorePrefilter": "true"``, the documented form).
        """
        return self._request(_imagine_call(prompt, ref, webhook_override, ignore_prefilter))

    def button(
        self,
        button: str,
        button_message_id: str,
        *,
        ref: str | None = None,
        webhook_override: str | None = None,
        prompt: str | None = None,
        zoom: float | None = None,
        ar: str | None = None,
    ) -> SubmitResult:
        """
        Press a button of a finished job (``POST /v2/button``): upscale, vary, zoom, ...; a paid job.

        :param button: the button exactly as the job listed it (emoji included).
        :param button_message_id: the finished job's ``buttonMessageId``.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        :param prompt: ``Custom Zoom`` only: a prompt replacing the original.
        :param zoom: ``Custom Zoom`` only (and required there): a factor from 1 to 2.
        :param ar: ``Custom Zoom`` only: an aspect ratio such as ``1:1``.
        """
        call = _button_call(button, button_message_id, ref, webhook_override, prompt, zoom, ar)
        return self._request(call)

    def get_message(self, message_id: str, *, expire_mins: int | None = None) -> Message:
        """
        Poll a job (``GET /v2/message/<id>``); free, and retried freely.

        :param message_id: the ``messageId`` a submission returned.
        :param expire_mins: minutes after which an unfinished job is reported incomplete; the
            connection's ``expire_mins`` by default.
        """
        expire = self._get_settings().expire_mins if expire_mins is None else expire_mins
        return self._request(_message_call(message_id, expire))

    def get_seed(self, message_id: str) -> str:
        """
        The seed of a finished job (``POST /v2/seed``).

        :param message_id: the job's ``messageId``.
        """
        return self._request(_seed_call(message_id))

    def describe(
        self, url: str, *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """
        Start a job that writes four prompts for an image (``POST /v2/describe``).

        :param url: the image's http(s) URL.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self._request(_describe_call(url, ref, webhook_override))

    def blend(
        self, urls: Sequence[str], *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """
        Start a job that blends 2 to 5 images (``POST /v2/blend``).

        :param urls: the images' http(s) URLs.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self._request(_blend_call(urls, ref, webhook_override))

    def info(self, *, ref: str | None = None, webhook_override: str | None = None) -> SubmitResult:
        """
        Start a job that reports the account's state (``GET /v2/info``); not to be called on a timer.

        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self._request(_info_call(ref, webhook_override))

    def get_settings(self) -> SubmitResult:
        """Start a job that lists the account's settings as buttons (``GET /v2/settings``)."""
        return self._request(_SETTINGS_CALL)

    def toggle_setting(self, toggle: str) -> SubmitResult:
        """
        Toggle one of the account's settings (``POST /v2/settings``).

        :param toggle: a settings button, e.g. ``Fast mode``, as ``get_settings`` listed it.
        """
        return self._request(_toggle_setting_call(toggle))

    def slash_command(self, cmd: str) -> SubmitResult:
        """
        Run a Midjourney slash command on the account (``POST /v2/slash-commands``).

        :param cmd: one of ``relax``, ``fast``, ``private``, ``stealth``.
        """
        return self._request(_slash_command_call(cmd))

    def is_this_naughty(self, prompt: str) -> NaughtyResult:
        """
        Ask the banned-phrase prefilter about a prompt (``POST /v2/is-this-naughty``); starts no job.

        :param prompt: the prompt to check.
        """
        return self._request(_naughty_call(prompt))

    def get_image(self, img_url: str) -> bytes:
        """
        Download a result image through NextLeg (``POST /getImage``), the way around the CDN's 403s.

        :param img_url: the image URL from a message.
        """
        return self._request(_image_call(img_url))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the token and the base URL without starting a paid job.

        Polls a well-formed message id that does not exist: a 404 proves the token is accepted.
        """
        try:
            settings = self._get_settings()
            self._send(_PROBE_CALL, settings)
        except NextLegNotFoundError:
            pass
        except NextLegAuthenticationError as exc:
            return (
                False,
                f"NextLeg refused the API token (HTTP {exc.status}): check the connection's password.",
            )
        except NextLegConnectionError as exc:
            return False, f"Cannot reach NextLeg: {exc.problem}. Check the connection's host."
        except NextLegError as exc:
            return False, str(exc)
        return True, f"Connected to NextLeg at {settings.base_url}; the API token is accepted."

    # --- the endpoints, async (for triggers) ---------------------------------------------------------

    async def aimagine(
        self,
        prompt: str,
        *,
        ref: str | None = None,
        webhook_override: str | None = None,
        ignore_prefilter: bool | None = None,
    ) -> SubmitResult:
        """The async face of :meth:`imagine`."""
        return await self._arequest(_imagine_call(prompt, ref, webhook_override, ignore_prefilter))

    async def abutton(
        self,
        button: str,
        button_message_id: str,
        *,
        ref: str | None = None,
        webhook_override: str | None = None,
        prompt: str | None = None,
        zoom: float | None = None,
        ar: str | None = None,
    ) -> SubmitResult:
        """The async face of :meth:`button`."""
        call = _button_call(button, button_message_id, ref, webhook_override, prompt, zoom, ar)
        return await self._arequest(call)

    async def aget_message(self, message_id: str, *, expire_mins: int | None = None) -> Message:
        """The async face of :meth:`get_message`."""
        expire = (await self._aget_settings()).expire_mins if expire_mins is None else expire_mins
        return await self._arequest(_message_call(message_id, expire))

    async def apoll_message(self, message_id: str, *, expire_mins: int | None = None) -> Message:
        """
        One attempt of :meth:`aget_message`, sent without booking a slot and not retried.

        For a caller that took a slot of :meth:`arate_limiter` itself and decides when to ask again
        (the poll scheduler of :mod:`airflow_provider_nextleg.polling`); a 429 still pushes the account's
        limiter back by its ``Retry-After``.
        """
        settings = await self._aget_settings()
        expire = settings.expire_mins if expire_mins is None else expire_mins
        return await self._asend(_message_call(message_id, expire), settings, paced=False)

    async def aget_seed(self, message_id: str) -> str:
        """The async face of :meth:`get_seed`."""
        return await self._arequest(_seed_call(message_id))

    async def adescribe(
        self, url: str, *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """The async face of :meth:`describe`."""
        return await self._arequest(_describe_call(url, ref, webhook_override))

    async def ablend(
        self, urls: Sequence[str], *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """The async face of :meth:`blend`."""
        return await self._arequest(_blend_call(urls, ref, webhook_override))

    async def ainfo(self, *, ref: str | None = None, webhook_override: str | None = None) -> SubmitResult:
        """The async face of :meth:`info`."""
        return await self._arequest(_info_call(ref, webhook_override))

    async def aget_settings(self) -> SubmitResult:
        """The async face of :meth:`get_settings`."""
        return await self._arequest(_SETTINGS_CALL)

    async def atoggle_setting(self, toggle: str) -> SubmitResult:
        """The async face of :meth:`toggle_setting`."""
        return await self._arequest(_toggle_setting_call(toggle))

    async def aslash_command(self, cmd: str) -> SubmitResult:
        """The async face of :meth:`slash_command`."""
        return await self._arequest(_slash_command_call(cmd))

    async def ais_this_naughty(self, prompt: str) -> NaughtyResult:
        """The async face of :meth:`is_this_naughty`."""
        return await self._arequest(_naughty_call(prompt))

    async def aget_image(self, img_url: str) -> bytes:
        """The async face of :meth:`get_image`."""
        return await self._arequest(_image_call(img_url))


def _retried_error(state: RetryCallState) -> NextLegError:
    """The error of the attempt that just failed; tenacity retries only NextLeg's retryable errors."""
    error = state.outcome.exception() if state.outcome else None
    assert isinstance(error, NextLegError), f"tenacity retried {error!r}"
    return error


def _give_up(state: RetryCallState) -> NoReturn:
    """Out of attempts: raise the last error, saying how many attempts were made."""
    raise _retried_error(state).after_attempts(state.attempt_number)


def _transport_error(
    call: _Call[Any], settings: _Settings, exc: Exception, *, sent_nothing: bool
) -> NextLegError:
    """The error for a request that got no answer; whether anything was sent decides for submissions."""
    detail = body_excerpt(f"{type(exc).__name__}: {exc}", secret=settings.token)
    where: dict[str, Any] = {"endpoint": call.endpoint, "message_id": call.message_id}
    if call.submits_job and not sent_nothing:
        return NextLegSubmissionUncertainError(
            f"the request was sent but no answer came back ({detail})", ref=call.ref, **where
        )
    return NextLegConnectionError(f"no answer from {settings.base_url} ({detail})", **where)


def _api_message(body: bytes, settings: _Settings) -> str:
    """The ``msg`` of the API's error answer ``{"success": false, "msg": "..."}``, if it sent one."""
    try:
        message = json.loads(body).get("msg")
    except (ValueError, AttributeError):
        message = None
    return body_excerpt(message, secret=settings.token) if isinstance(message, str) else "no reason given"


def _answer(call: _Call[T], settings: _Settings, status: int, headers: Mapping[str, str], body: bytes) -> T:
    """Turn an HTTP answer into the call's result or the error that says what happened."""
    where: dict[str, Any] = {
        "endpoint": call.endpoint,
        "status": status,
        "message_id": call.message_id,
        "body": body_excerpt(body, secret=settings.token),
    }
    retry_after = _retry_after(headers)
    if status == 429:
        settings.limiter.penalize(settings.rate_limit_interval if retry_after is None else retry_after)
        raise NextLegRateLimitError("the account's rate limit refused the request", **where)
    if status >= 500:
        if retry_after is not None:
            settings.limiter.penalize(retry_after)
        if call.submits_job:
            raise NextLegSubmissionUncertainError(
                "the service failed while handling the submission", ref=call.ref, **where
            )
        raise NextLegServerError("the service failed", **where)
    if status in (401, 403):
        raise NextLegAuthenticationError("the API token was refused", **where)
    if status == 404:
        raise NextLegNotFoundError("no such resource", **where)
    if status >= 400:
        raise NextLegBadRequestError(f"the request was rejected: {_api_message(body, settings)}", **where)
    if status >= 300:
        raise NextLegBadRequestError(f"redirected to {headers.get('Location')}", **where)
    if call.raw:
        content_type = headers.get("Content-Type", "")
        if not body or content_type.startswith(("text/", "application/json")):
            raise NextLegMalformedResponseError(
                f"expected image bytes, got {content_type or 'nothing'}", **where
            )
        return call.parse(body)
    try:
        return call.parse(json.loads(body))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        if call.submits_job:  # accepted, most likely, but under an id nobody can read
            raise NextLegSubmissionUncertainError(
                f"the answer to the submission cannot be read ({exc})", ref=call.ref, **where
            ) from None
        raise NextLegMalformedResponseError(f"the answer is not what the API sends: {exc}", **where) from None
