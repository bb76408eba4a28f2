"""The hook of the NextLeg v2 API: every endpoint, a sync face for workers and an async face for triggers.

The hook builds each call (:class:`~airflow_provider_nextleg.hooks.transport.ApiCall`) and checks its
arguments before anything is sent; :mod:`~airflow_provider_nextleg.hooks.transport` sends it within the
account's budget and reads the answer, on the hook's ``requests.Session`` (sync) or on the event loop's
:class:`~airflow_provider_nextleg.hooks.session.AccountSession` (async).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from typing import Any, TypeVar

import requests
from airflow.sdk import BaseHook
from tenacity import Retrying

from airflow_provider_nextleg.exceptions import (
    NextLegAuthenticationError,
    NextLegConnectionError,
    NextLegError,
    NextLegInputError,
    NextLegNotFoundError,
)
from airflow_provider_nextleg.get_provider_info import (
    CONNECTION_FIELDS,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.hooks.connection import AccountSettings, aread_connection, read_connection
from airflow_provider_nextleg.hooks.session import (
    AccountSession,
    account_session,
    close_loop_sessions,
    loop_sessions,
)
from airflow_provider_nextleg.hooks.transport import ApiCall, retry_policy, send
from airflow_provider_nextleg.models import Message, NaughtyResult, SubmitResult
from airflow_provider_nextleg.webhooks.config import WebhookConfig

T = TypeVar("T")


class NextLegHook(BaseHook):
    """
    Call the NextLeg v2 API: submit Midjourney jobs, poll them, and use the account's other endpoints.

    Every endpoint has a sync face (``imagine``) for workers, on one keep-alive ``requests.Session`` per
    hook, and an async face (``aimagine``) for triggers, on the account's session in the event loop
    (:meth:`session`; one ``httpx.AsyncClient`` per account and loop, shared by every hook there; a hook
    holds it until :meth:`aclose`, and :meth:`aclose_clients` closes them all). Both faces build, check,
    retry and parse each call the same way; only the transport differs.

    **Input** is checked before anything is sent (see :mod:`airflow_provider_nextleg.validation`); a bad
    argument raises :class:`~airflow_provider_nextleg.exceptions.NextLegInputError`.

    **Rate limit**: every request takes a turn (a :class:`~airflow_provider_nextleg.ratelimit.Slot`) of
    the account's budget, shared by the host (``rate_limit_interval`` seconds apart, 3 by default); a
    429 holds every caller of the account for its ``Retry-After``.

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
        jitter), up to :data:`~airflow_provider_nextleg.hooks.transport.MAX_BACKOFF`.
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
        self._settings: AccountSettings | None = None
        self._held: tuple[asyncio.AbstractEventLoop, AccountSession] | None = None

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

    def _get_settings(self) -> AccountSettings:
        if self._settings is None:
            self._settings = read_connection(self.nextleg_conn_id)
        return self._settings

    async def _aget_settings(self) -> AccountSettings:
        if self._settings is None:
            self._settings = await aread_connection(self.nextleg_conn_id)
        return self._settings

    @property
    def webhooks(self) -> WebhookConfig | None:
        """The connection's webhook receiver, secret and inbox (see the README's Webhooks)."""
        return self._get_settings().webhooks

    @property
    def rate_limit_interval(self) -> float:
        """Seconds between two requests of this connection's account: also the natural poll interval."""
        return self._get_settings().rate_limit_interval

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session, with the token in its headers."""
        return self._session

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self._get_settings().headers)
        return session

    def close(self) -> None:
        """Close the sync session (the async face's session: :meth:`aclose`)."""
        if "_session" in self.__dict__:
            self.__dict__.pop("_session").close()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AccountSession]:
        """
        Be a user of this connection's account session in the running loop for the block:
        ``async with hook.session() as session:``. The async endpoints use it too.
        """
        async with account_session(self.nextleg_conn_id, await self._aget_settings()) as session:
            yield session

    async def _asession(self) -> AccountSession:
        """The account session this hook holds in the running loop (entered once, until :meth:`aclose`)."""
        loop = asyncio.get_running_loop()
        if self._held is None or self._held[0] is not loop or self._held[1].client.is_closed:
            self._held = (loop, loop_sessions().enter(await self._aget_settings()))
        return self._held[1]

    async def aclose(self) -> None:
        """Leave the account session the async endpoints of this hook held in the running loop."""
        held, self._held = self._held, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await loop_sessions().leave(held[1])

    @classmethod
    async def aclose_clients(cls) -> None:
        """Close every account session of the running event loop (e.g. at the end of a test)."""
        await close_loop_sessions()

    def _retrying(self) -> dict[str, Any]:
        return retry_policy(self.max_attempts, self.retry_wait, self.log)

    def request(self, call: ApiCall[T]) -> T:
        """
        Send a call built with :mod:`~airflow_provider_nextleg.hooks.calls` (its arguments were checked
        when it was built), with the retries its kind allows: what every endpoint method does.

        :param call: the call.
        """
        settings = self._get_settings()
        result: T = Retrying(**self._retrying())(send, self._session, call, settings)
        self._log_submission(call, result)
        return result

    async def arequest(self, call: ApiCall[T]) -> T:
        """The async face of :meth:`request`."""
        session = await self._asession()
        result: T = await session.request(call, self._retrying())
        self._log_submission(call, result)
        return result

    def _log_submission(self, call: ApiCall[Any], result: object) -> None:
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
        return self.request(calls.imagine(prompt, ref, webhook_override, ignore_prefilter))

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
        mask: bytes | None = None,
        route_id: str | None = None,
    ) -> SubmitResult:
        """
        Press a button of a finished job (``POST /v2/button``): upscale, vary, zoom, ...; a paid job.

        :param button: the button exactly as the job listed it (emoji included).
        :param button_message_id: the finished job's ``buttonMessageId``.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        :param prompt: ``Custom Zoom`` and ``🖌️ Vary (Region)`` only: a prompt replacing the original.
        :param zoom: ``Custom Zoom`` only (and required there): a factor from 1 to 2.
        :param ar: ``Custom Zoom`` only: an aspect ratio such as ``1:1``.
        :param mask: ``🖌️ Vary (Region)`` only (and required there): a PNG marking the region to redraw.
        :param route_id: the finished job's ``route_id``, in mode ``load_balancer`` or ``pay_per_use``.
        """
        call = calls.button(
            button, button_message_id, ref, webhook_override, prompt, zoom, ar, mask=mask, route_id=route_id
        )
        return self.request(call)

    def get_message(
        self, message_id: str, *, expire_mins: int | None = None, route_id: str | None = None
    ) -> Message:
        """
        Poll a job (``GET /v2/message/<id>``); free, and retried freely.

        :param message_id: the ``messageId`` a submission returned.
        :param expire_mins: minutes after which an unfinished job is reported incomplete; the
            connection's ``expire_mins`` by default.
        :param route_id: the submission's ``route_id``, in mode ``load_balancer`` or ``pay_per_use``.
        """
        expire = self._get_settings().expire_mins if expire_mins is None else expire_mins
        return self.request(calls.message(message_id, expire, route_id))

    def upscale_image_url(self, button: str, button_message_id: str) -> str:
        """
        The URL of one image of a finished grid at once (``GET /upscale-img-url``): no job, nothing paid.

        :param button: ``U1`` to ``U4``.
        :param button_message_id: the grid's ``buttonMessageId``.
        """
        return self.request(calls.upscale_image_url(button, button_message_id))

    def face_swap(self, source_img: str, target_img: str) -> bytes:
        """
        The target picture with the face of the source picture (``POST /face-swap``), as image bytes.

        :param source_img: the URL of the picture whose face is taken.
        :param target_img: the URL of the picture that receives it.
        """
        return self.request(calls.face_swap(source_img, target_img))

    def get_seed(self, message_id: str) -> str:
        """
        The seed of a finished job (``POST /v2/seed``).

        :param message_id: the job's ``messageId``.
        """
        return self.request(calls.seed(message_id))

    def describe(
        self, url: str, *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """
        Start a job that writes four prompts for an image (``POST /v2/describe``).

        :param url: the image's http(s) URL.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self.request(calls.describe(url, ref, webhook_override))

    def blend(
        self, urls: Sequence[str], *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """
        Start a job that blends 2 to 5 images (``POST /v2/blend``).

        :param urls: the images' http(s) URLs.
        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self.request(calls.blend(urls, ref, webhook_override))

    def info(self, *, ref: str | None = None, webhook_override: str | None = None) -> SubmitResult:
        """
        Start a job that reports the account's state (``GET /v2/info``); not to be called on a timer.

        :param ref: echoed in the result and the webhook.
        :param webhook_override: a URL that receives the result instead of the account's webhook.
        """
        return self.request(calls.info(ref, webhook_override))

    def get_settings(self) -> SubmitResult:
        """Start a job that lists the account's settings as buttons (``GET /v2/settings``)."""
        return self.request(calls.SETTINGS)

    def toggle_setting(self, toggle: str) -> SubmitResult:
        """
        Toggle one of the account's settings (``POST /v2/settings``).

        :param toggle: a settings button, e.g. ``Fast mode``, as ``get_settings`` listed it.
        """
        return self.request(calls.toggle_setting(toggle))

    def slash_command(self, cmd: str) -> SubmitResult:
        """
        Run a Midjourney slash command on the account (``POST /v2/slash-commands``).

        :param cmd: one of ``relax``, ``fast``, ``private``, ``stealth``.
        """
        return self.request(calls.slash_command(cmd))

    def is_this_naughty(self, prompt: str) -> NaughtyResult:
        """
        Ask the banned-phrase prefilter about a prompt (``POST /v2/is-this-naughty``); starts no job.

        :param prompt: the prompt to check.
        """
        return self.request(calls.is_this_naughty(prompt))

    def get_image(self, img_url: str) -> bytes:
        """
        Download a result image through NextLeg (``POST /getImage``), the way around the CDN's 403s.

        :param img_url: the image URL from a message.
        """
        return self.request(calls.get_image(img_url))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the token and the base URL without starting a paid job.

        Polls a well-formed message id that does not exist, once (not retried: the answer is the test): a
        404 proves the token is accepted.
        """
        try:
            settings = self._get_settings()
            send(self._session, calls.PROBE, settings)
        except NextLegNotFoundError:
            pass
        except NextLegAuthenticationError as exc:
            if exc.status is None:  # no token to send at all
                problem = exc.problem[:1].upper() + exc.problem[1:]
                return False, f"{problem}: put the API token in the connection's password."
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
        return await self.arequest(calls.imagine(prompt, ref, webhook_override, ignore_prefilter))

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
        mask: bytes | None = None,
        route_id: str | None = None,
    ) -> SubmitResult:
        """The async face of :meth:`button`."""
        call = calls.button(
            button, button_message_id, ref, webhook_override, prompt, zoom, ar, mask=mask, route_id=route_id
        )
        return await self.arequest(call)

    async def aget_message(
        self, message_id: str, *, expire_mins: int | None = None, route_id: str | None = None
    ) -> Message:
        """The async face of :meth:`get_message`."""
        expire = (await self._aget_settings()).expire_mins if expire_mins is None else expire_mins
        return await self.arequest(calls.message(message_id, expire, route_id))

    async def aupscale_image_url(self, button: str, button_message_id: str) -> str:
        """The async face of :meth:`upscale_image_url`."""
        return await self.arequest(calls.upscale_image_url(button, button_message_id))

    async def aface_swap(self, source_img: str, target_img: str) -> bytes:
        """The async face of :meth:`face_swap`."""
        return await self.arequest(calls.face_swap(source_img, target_img))

    async def aget_seed(self, message_id: str) -> str:
        """The async face of :meth:`get_seed`."""
        return await self.arequest(calls.seed(message_id))

    async def adescribe(
        self, url: str, *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """The async face of :meth:`describe`."""
        return await self.arequest(calls.describe(url, ref, webhook_override))

    async def ablend(
        self, urls: Sequence[str], *, ref: str | None = None, webhook_override: str | None = None
    ) -> SubmitResult:
        """The async face of :meth:`blend`."""
        return await self.arequest(calls.blend(urls, ref, webhook_override))

    async def ainfo(self, *, ref: str | None = None, webhook_override: str | None = None) -> SubmitResult:
        """The async face of :meth:`info`."""
        return await self.arequest(calls.info(ref, webhook_override))

    async def aget_settings(self) -> SubmitResult:
        """The async face of :meth:`get_settings`."""
        return await self.arequest(calls.SETTINGS)

    async def atoggle_setting(self, toggle: str) -> SubmitResult:
        """The async face of :meth:`toggle_setting`."""
        return await self.arequest(calls.toggle_setting(toggle))

    async def aslash_command(self, cmd: str) -> SubmitResult:
        """The async face of :meth:`slash_command`."""
        return await self.arequest(calls.slash_command(cmd))

    async def ais_this_naughty(self, prompt: str) -> NaughtyResult:
        """The async face of :meth:`is_this_naughty`."""
        return await self.arequest(calls.is_this_naughty(prompt))

    async def aget_image(self, img_url: str) -> bytes:
        """The async face of :meth:`get_image`."""
        return await self.arequest(calls.get_image(img_url))
