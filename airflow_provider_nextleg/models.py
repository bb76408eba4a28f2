"""Typed results of the NextLeg v2 API, parsed from its JSON.

Parsing is tolerant of the quirks real responses show (the result wrapped in ``response`` or flat,
progress as a number or a numeric string, ``createdAt`` as an ISO string or a Firestore timestamp,
optional fields missing) and strict about what must be there: a parse that cannot tell what happened
raises ``ValueError`` naming the missing piece, which the hook turns into
:class:`~airflow_provider_nextleg.exceptions.NextLegMalformedResponseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import pendulum

Content = str | list[str] | dict[str, Any] | None


class MessageStatus(str, Enum):
    """Where a job stands, as told by ``GET /v2/message/<id>``."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INCOMPLETE = "incomplete"

    @property
    def is_terminal(self) -> bool:
        """Whether the job will not change any more (done, failed or incomplete)."""
        return self in (MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.INCOMPLETE)


class ErrorKind(str, Enum):
    """What an error code in a message's content means for a pipeline."""

    WAITING = "waiting"
    """Not an error: the job is waiting."""
    RETRYABLE = "retryable"
    """A transient failure: submitting again may succeed."""
    TERMINAL = "terminal"
    """Submitting the same request again will not succeed (or must not be tried)."""


class ErrorCode(str, Enum):
    """The codes Midjourney puts in a message's ``content``, each with its kind and what to do."""

    kind: ErrorKind
    advice: str

    def __new__(cls, code: str, kind: ErrorKind, advice: str) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.kind = kind
        member.advice = advice
        return member

    JOB_QUEUED = ("JOB_QUEUED", ErrorKind.WAITING, "The job waits in the account's queue: keep polling.")
    QUEUE_FULL = ("QUEUE_FULL", ErrorKind.RETRYABLE, "The account's queue is full: submit again later.")
    BOT_TOOK_TOO_LONG_TO_PROCESS_YOUR_COMMAND = (
        "BOT_TOOK_TOO_LONG_TO_PROCESS_YOUR_COMMAND",
        ErrorKind.RETRYABLE,
        "Midjourney timed out: submit again, a bounded number of times.",
    )
    FAILED_TO_PROCESS_YOUR_COMMAND = (
        "FAILED_TO_PROCESS_YOUR_COMMAND",
        ErrorKind.RETRYABLE,
        "A transient failure upstream: submit again, a bounded number of times.",
    )
    FAILED_TO_REQUEST = (
        "FAILED_TO_REQUEST",
        ErrorKind.RETRYABLE,
        "NextLeg could not reach Midjourney: submit again, a bounded number of times.",
    )
    INTERNAL_ERROR = (
        "INTERNAL_ERROR",
        ErrorKind.RETRYABLE,
        "An internal error upstream: submit again, a bounded number of times.",
    )
    MODERATION_OUTAGE = (
        "MODERATION_OUTAGE",
        ErrorKind.RETRYABLE,
        "Midjourney's moderation service is down: submit again later.",
    )
    NO_FAST_HOURS = (
        "NO_FAST_HOURS",
        ErrorKind.TERMINAL,
        "The account's fast hours are used up: switch it to relax mode (slash command 'relax') or buy hours.",
    )
    BANNED_PROMPT = (
        "BANNED_PROMPT",
        ErrorKind.TERMINAL,
        "Midjourney refused the prompt: change it; never resend it, repeats risk an account ban.",
    )
    BLOCKED = (
        "BLOCKED",
        ErrorKind.TERMINAL,
        "Midjourney blocked the request: change the prompt; never resend it, repeats risk an account ban.",
    )
    IMAGE_BLOCKED = (
        "IMAGE_BLOCKED",
        ErrorKind.TERMINAL,
        "Midjourney blocked the resulting image: change the prompt; never resend it unchanged.",
    )
    INVALID_PARAMETER = (
        "INVALID_PARAMETER",
        ErrorKind.TERMINAL,
        "A parameter or flag in the prompt is invalid (e.g. --ar, --v): fix the prompt.",
    )
    INVALID_LINK = (
        "INVALID_LINK",
        ErrorKind.TERMINAL,
        "An image URL in the request cannot be used: give a public http(s) URL of an image.",
    )
    BUTTON_NOT_FOUND = (
        "BUTTON_NOT_FOUND",
        ErrorKind.TERMINAL,
        "That button is not on that message: press one of the message's own buttons, on its buttonMessageId.",
    )
    JOB_ACTION_RESTRICTED = (
        "JOB_ACTION_RESTRICTED",
        ErrorKind.TERMINAL,
        "Midjourney does not allow that action on this job.",
    )
    ALREADY_REQUESTED_UPSCALE = (
        "ALREADY_REQUESTED_UPSCALE",
        ErrorKind.TERMINAL,
        "That upscale was made before: use the earlier result.",
    )
    APPEAL_ACCEPTED = (
        "APPEAL_ACCEPTED",
        ErrorKind.TERMINAL,
        "A moderation appeal was accepted: this message has no result; submit again if still wanted.",
    )
    APPEAL_REJECTED = (
        "APPEAL_REJECTED",
        ErrorKind.TERMINAL,
        "A moderation appeal was rejected: change the prompt.",
    )
    PLEASE_SUBSCRIBE_TO_MJ_IN_YOUR_DASHBOARD = (
        "PLEASE_SUBSCRIBE_TO_MJ_IN_YOUR_DASHBOARD",
        ErrorKind.TERMINAL,
        "The account has no Midjourney subscription: subscribe in the NextLeg dashboard.",
    )

    @property
    def retryable(self) -> bool:
        """Whether submitting the same request again may succeed."""
        return self.kind is ErrorKind.RETRYABLE


_KNOWN_CODES = {code.value: code for code in ErrorCode}
# A code Midjourney adds later looks like the known ones (upper case words joined by underscores); it
# counts as a failure only on a finished message without an image, where a prompt cannot be mistaken for it.
_CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_UNKNOWN_CODE_ADVICE = "An error code this provider does not know: treated as terminal, see NextLeg's docs."


def parse_timestamp(value: object) -> datetime | None:
    """
    Read a timestamp as NextLeg sends it: an ISO 8601 string or a Firestore ``{_seconds, _nanoseconds}``.

    Timestamps are informational, so anything else gives ``None`` rather than an error.

    :param value: the JSON value.
    """
    if isinstance(value, dict) and isinstance(value.get("_seconds"), int | float):
        seconds = value["_seconds"] + (value.get("_nanoseconds") or 0) / 1e9
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = pendulum.parse(value)
        except ValueError:  # pendulum's ParserError included
            return None
        return parsed if isinstance(parsed, datetime) else None
    return None


# Results a button can be pressed on: finished, they must carry their buttonMessageId.
_IMAGE_RESULT_TYPES = ("imagine", "button", "blend")


def _has_result(inner: dict[str, Any]) -> bool:
    """Whether a finished message says what came out: a buttonMessageId, a seed (the ✉️ button's
    result), or the content of a text result (info, settings, slash commands) with its type."""
    if inner.get("buttonMessageId") or inner.get("seed") is not None:
        return True
    kind, content = inner.get("type"), inner.get("content")
    return bool(kind) and kind not in _IMAGE_RESULT_TYPES and content not in (None, "")


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a seed or id sent as a number
    raise ValueError(f"{key!r} should be a string, got {type(value).__name__}")


def _str_list(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key!r} should be a list of strings, got {value!r:.80}")
    return tuple(value)


def _progress(value: object) -> int:
    """Read progress sent as a number or a numeric string ("45", "45.5")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"progress should be a number or 'incomplete', got {value!r:.80}")
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # "soon", "nan", "inf"
        raise ValueError(f"progress should be a number or 'incomplete', got {value!r:.80}") from None


@dataclass(frozen=True)
class SubmitResult:
    """
    The immediate answer to a job-starting call: the id to poll.

    :param message_id: the job's message id, for ``get_message``.
    :param created_at: when the service registered the job, if it said so.
    """

    message_id: str
    created_at: datetime | None = None

    @classmethod
    def from_api(cls, payload: Any) -> SubmitResult:
        """Parse ``{"success": true, "messageId": "...", "createdAt": "..."}``."""
        if not isinstance(payload, dict):
            raise ValueError("a submission answer should be a JSON object")
        message_id = payload.get("messageId")
        if payload.get("success") is False or not isinstance(message_id, str) or not message_id:
            raise ValueError("a submission answer needs success and a messageId")
        return cls(message_id=message_id, created_at=parse_timestamp(payload.get("createdAt")))


@dataclass(frozen=True)
class NaughtyResult:
    """
    The banned-phrase check's verdict on a prompt.

    :param is_naughty: whether the prompt contains a banned phrase.
    :param phrase: the phrase found, if any.
    """

    is_naughty: bool
    phrase: str | None = None

    @classmethod
    def from_api(cls, payload: Any) -> NaughtyResult:
        """Parse ``{"isNaughty": bool, "phrase": "..."}``."""
        if not isinstance(payload, dict) or not isinstance(payload.get("isNaughty"), bool):
            raise ValueError("the answer needs a boolean isNaughty")
        return cls(is_naughty=payload["isNaughty"], phrase=_optional_str(payload, "phrase"))


def parse_seed(payload: Any) -> str:
    """Parse ``{"seed": "1317396497"}`` (a number is accepted too)."""
    seed = _optional_str(payload, "seed") if isinstance(payload, dict) else None
    if seed is None:
        raise ValueError("the answer needs a seed")
    return seed


@dataclass(frozen=True)
class Message:
    """
    One poll of a job (``GET /v2/message/<id>``), or its webhook body.

    :param message_id: the id that was polled.
    :param status: where the job stands.
    :param progress: 0 to 100; ``None`` when incomplete or not reported.
    :param progress_image_url: the preview image while running.
    :param error_code: the code from ``content`` when the job failed (see :class:`ErrorCode`).
    :param buttons: the buttons that can be pressed on ``button_message_id``, verbatim.
    :param button_message_id: the handle for ``button`` calls on this result.
    :param image_url: the result (the 2x2 grid for imagine).
    :param image_urls: the single images of the grid.
    :param type: ``imagine``, ``button``, ``describe``, ``blend``, ``info``, ...
    :param content: the prompt (a string), four prompts (describe), the account's info (a dict).
    :param ref: the ``ref`` sent with the request, echoed back.
    :param seed: the job's seed, when the result carries it.
    :param originating_message_id: the id of the request that started this job.
    """

    message_id: str
    status: MessageStatus
    progress: int | None = None
    progress_image_url: str | None = None
    error_code: str | None = None
    buttons: tuple[str, ...] = ()
    button_message_id: str | None = None
    image_url: str | None = None
    image_urls: tuple[str, ...] = ()
    type: str | None = None
    content: Content = None
    ref: str | None = None
    seed: str | None = None
    originating_message_id: str | None = None

    @property
    def error(self) -> ErrorCode | None:
        """The known :class:`ErrorCode` of a failed message (``None`` for an unknown code)."""
        return _KNOWN_CODES.get(self.error_code) if self.error_code else None

    @property
    def retryable(self) -> bool:
        """Whether submitting the same request again may succeed (a retryable code, or incomplete)."""
        if self.status is MessageStatus.INCOMPLETE:
            return True
        return self.status is MessageStatus.FAILED and self.error is not None and self.error.retryable

    @property
    def advice(self) -> str:
        """What to do about a failed or incomplete message; empty otherwise."""
        if self.status is MessageStatus.INCOMPLETE:
            return "The job did not finish within expireMins: submit it again, or poll with a longer one."
        if self.status is MessageStatus.FAILED:
            return self.error.advice if self.error else _UNKNOWN_CODE_ADVICE
        return ""

    @classmethod
    def from_api(cls, payload: Any, message_id: str) -> Message:
        """
        Parse a poll answer or a webhook body.

        A finished job (progress 100, or no progress as in a webhook body) must say what came out: a
        ``buttonMessageId`` (image results), a ``seed`` (the seed button), a text result's ``type`` and
        ``content`` (info, settings, slash commands), or an error code in ``content``; a failed job has
        an error code and no ``imageUrl``.

        :param payload: the decoded JSON.
        :param message_id: the id that was polled.
        """
        if not isinstance(payload, dict):
            raise ValueError("a message should be a JSON object")
        inner = payload.get("response")
        if not isinstance(inner, dict):
            inner = payload  # the flat form of the docs, and webhook bodies
        raw_progress = payload.get("progress")
        content = inner.get("content")
        is_code = isinstance(content, str) and (content in _KNOWN_CODES or _CODE_PATTERN.fullmatch(content))
        code = content if is_code else None

        progress: int | None = None
        if raw_progress == "incomplete":
            status = MessageStatus.INCOMPLETE
        else:
            progress = None if raw_progress is None else _progress(raw_progress)
            finished = progress is None or progress >= 100
            if code == ErrorCode.JOB_QUEUED:
                status, progress, code = MessageStatus.QUEUED, progress or 0, None
            elif code and not inner.get("imageUrl") and (finished or code in _KNOWN_CODES):
                status = MessageStatus.FAILED
            elif not finished:
                status, code = (MessageStatus.QUEUED if progress == 0 else MessageStatus.RUNNING), None
            elif _has_result(inner):
                status, code = MessageStatus.DONE, None
            else:
                raise ValueError(
                    "a finished message needs a response with a buttonMessageId (image results), a seed, "
                    "a text result's type and content, or an error code in content"
                )
        if not (content is None or isinstance(content, str | list | dict)):
            raise ValueError(f"'content' should be a string, list or object, got {type(content).__name__}")
        return cls(
            message_id=message_id,
            status=status,
            progress=progress,
            progress_image_url=_optional_str(payload, "progressImageUrl"),
            error_code=code,
            buttons=_str_list(inner, "buttons"),
            button_message_id=_optional_str(inner, "buttonMessageId"),
            image_url=_optional_str(inner, "imageUrl"),
            image_urls=_str_list(inner, "imageUrls"),
            type=_optional_str(inner, "type"),
            content=content,
            ref=_optional_str(inner, "ref"),
            seed=_optional_str(inner, "seed"),
            originating_message_id=_optional_str(inner, "originatingMessageId"),
        )

    def to_xcom(self) -> dict[str, Any]:
        """A small JSON-safe dict for XCom and trigger events (progress details left out)."""
        return {
            "message_id": self.message_id,
            "status": self.status.value,
            "error_code": self.error_code,
            "button_message_id": self.button_message_id,
            "buttons": list(self.buttons),
            "image_url": self.image_url,
            "image_urls": list(self.image_urls),
            "content": self.content,
            "type": self.type,
            "seed": self.seed,
            "ref": self.ref,
        }

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Message:
        """
        Rebuild a message from :meth:`to_xcom`'s dict.

        :param data: the dict; ``message_id`` and ``status`` are required.
        """
        return cls(
            message_id=data["message_id"],
            status=MessageStatus(data["status"]),
            error_code=data.get("error_code"),
            button_message_id=data.get("button_message_id"),
            buttons=tuple(data.get("buttons") or ()),
            image_url=data.get("image_url"),
            image_urls=tuple(data.get("image_urls") or ()),
            content=data.get("content"),
            type=data.get("type"),
            seed=data.get("seed"),
            ref=data.get("ref"),
        )
