"""Typed results of the NextLeg v2 API, parsed from its JSON, and the job result tasks pass on.

Parsing the API is tolerant of the quirks real responses show (the result wrapped in ``response`` or
flat, progress as a number or a numeric string, ``createdAt`` as an ISO string or a Firestore timestamp,
optional fields missing) and strict about what must be there: a parse that cannot tell what happened
raises :class:`PayloadError` (a ``ValueError``) naming the missing piece, which the hook turns into
:class:`~airflow_provider_nextleg.exceptions.NextLegMalformedResponseError`. No other error leaves a
parser, whatever JSON it is given; and a secondary field that cannot be read (a timestamp) is dropped,
never a reason to lose an answer's message id.

A finished job travels between tasks as a :class:`JobResult`, in one JSON form (its XCom), read back
strictly: a value of the wrong type raises :class:`PayloadError`, which
:func:`~airflow_provider_nextleg.exceptions.read_result` turns into an input error naming the argument.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, TypedDict, cast, get_type_hints

import pendulum

from airflow_provider_nextleg.error_codes import ErrorCode
from airflow_provider_nextleg.webhooks.tokens import REF_JOB_FIELD

Content = str | list[str] | dict[str, Any] | None


class PayloadError(ValueError):
    """A JSON value that is not what it should be: the one error the parsers of this module raise."""


def excerpt(value: object) -> str:
    """A short repr of a JSON value for an error message, safe however large or deeply nested it is."""
    return reprlib.repr(value)


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


_KNOWN_CODES = {code.value: code for code in ErrorCode}
# A code Midjourney adds later looks like the known ones (upper case words joined by underscores); it
# counts as a failure only on a finished message without an image, where a prompt cannot be mistaken for it.
_CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_UNKNOWN_CODE_ADVICE = "An error code this provider does not know: treated as terminal, see NextLeg's docs."


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The seconds since the epoch a datetime can hold (years 1 to 9999), whatever the platform's time_t.
_FIRST_SECOND = (datetime(1, 1, 2, tzinfo=timezone.utc) - _EPOCH).total_seconds()
_LAST_SECOND = (datetime(9999, 12, 31, tzinfo=timezone.utc) - _EPOCH).total_seconds()


def _real(value: object) -> float | None:
    """A finite JSON number as a float; ``None`` for anything else (booleans, NaN, strings...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) if abs(value) < 1e300 else math.inf
    return number if math.isfinite(number) else None


def parse_timestamp(value: object) -> datetime | None:
    """
    Read a timestamp as NextLeg sends it: an ISO 8601 string or a Firestore ``{_seconds, _nanoseconds}``.

    Timestamps are informational, so anything else, or a date out of any calendar, gives ``None``: this
    never raises (a submission's answer must yield its message id whatever its ``createdAt``).

    :param value: the JSON value.
    """
    if isinstance(value, dict):
        seconds, nanoseconds = _real(value.get("_seconds")), _real(value.get("_nanoseconds", 0))
        if seconds is None or nanoseconds is None:
            return None
        seconds += nanoseconds / 1e9
        return _EPOCH + timedelta(seconds=seconds) if _FIRST_SECOND <= seconds <= _LAST_SECOND else None
    if isinstance(value, str) and value:
        try:
            parsed = pendulum.parse(value)
        except (ValueError, OverflowError):  # pendulum's ParserError included; a year past 9999
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


# A seed or an id sent as a number is a whole number of at most this many digits (a seed has 10).
_MAX_NUMBER_DIGITS = 30


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**_MAX_NUMBER_DIGITS:
        return str(value)  # a seed or id sent as a number
    raise PayloadError(f"{key!r} should be a string, got {excerpt(value)}")


def _str_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise PayloadError(f"{key!r} should be a list of strings, got {excerpt(value)}")
    return tuple(value)


# Content is a string, four prompts (describe), or a dict of text (info); this depth leaves room for
# what a later result type may nest, and keeps the result well within what JSON encoders can recurse.
_MAX_CONTENT_DEPTH = 4


def _json_within(value: object, depth: int) -> bool:
    """Whether ``value`` is JSON of finite numbers nested at most ``depth`` levels."""
    if isinstance(value, list | tuple):
        return depth > 0 and all(_json_within(item, depth - 1) for item in value)
    if isinstance(value, dict):
        return depth > 0 and all(
            isinstance(key, str) and _json_within(item, depth - 1) for key, item in value.items()
        )
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def _content(value: object) -> Content:
    if value is None or (isinstance(value, str | list | dict) and _json_within(value, _MAX_CONTENT_DEPTH)):
        return cast("Content", value)
    raise PayloadError(
        f"'content' should be a string, list or object of finite values nested at most "
        f"{_MAX_CONTENT_DEPTH} levels, got {excerpt(value)}"
    )


def _progress(value: object) -> int:
    """Read progress sent as a number or a numeric string ("45", "45.5")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"progress should be a number or 'incomplete', got {excerpt(value)}")
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # "soon", "nan", "inf", a number past any float
        raise PayloadError(f"progress should be a number or 'incomplete', got {excerpt(value)}") from None


@dataclass(frozen=True)
class SubmitResult:
    """
    The immediate answer to a job-starting call: the id to poll.

    :param message_id: the job's message id, for ``get_message``.
    :param created_at: when the service registered the job, if it said so.
    :param route_id: through the load balancer or pay-per-use, the id (``loadBalanceId``, ``ppuId``) that
        routes the job's polls and button presses to the account running it.
    """

    message_id: str
    created_at: datetime | None = None
    route_id: str | None = None

    @classmethod
    def from_api(cls, payload: Any) -> SubmitResult:
        """Parse ``{"success": true, "messageId": "...", "createdAt": "..."}``."""
        if not isinstance(payload, dict):
            raise PayloadError("a submission answer should be a JSON object")
        message_id = payload.get("messageId")
        if payload.get("success") is False or not isinstance(message_id, str) or not message_id:
            raise PayloadError("a submission answer needs success and a messageId")
        return cls(
            message_id=message_id,
            created_at=parse_timestamp(payload.get("createdAt")),
            route_id=_route_id(payload),
        )


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
            raise PayloadError("the answer needs a boolean isNaughty")
        return cls(is_naughty=payload["isNaughty"], phrase=_optional_str(payload, "phrase"))


ROUTE_KEYS = ("loadBalanceId", "ppuId")
"""The fields that route a job's polls and presses to its account: the load balancer's, pay-per-use's."""


def _route_id(data: Mapping[str, Any]) -> str | None:
    """The ``loadBalanceId`` or ``ppuId`` an answer carries, if any."""
    return next((value for key in ROUTE_KEYS if (value := _optional_str(data, key)) is not None), None)


def parse_url(payload: Any) -> str:
    """Parse ``{"url": "https://..."}``."""
    url = _optional_str(payload, "url") if isinstance(payload, dict) else None
    if url is None:
        raise PayloadError("the answer needs a url")
    return url


def parse_seed(payload: Any) -> str:
    """Parse ``{"seed": "1317396497"}`` (a number is accepted too)."""
    seed = _optional_str(payload, "seed") if isinstance(payload, dict) else None
    if seed is None:
        raise PayloadError("the answer needs a seed")
    return seed


class _Outcome:
    """What a job's status and error code mean for a pipeline: one reading for a poll and a result."""

    status: MessageStatus
    error_code: str | None

    @property
    def error(self) -> ErrorCode | None:
        """The known :class:`ErrorCode` of a failed job (``None`` for an unknown code)."""
        return _KNOWN_CODES.get(self.error_code) if self.error_code else None

    @property
    def retryable(self) -> bool:
        """Whether submitting the same request again may succeed (a retryable code, or incomplete)."""
        if self.status is MessageStatus.INCOMPLETE:
            return True
        return self.status is MessageStatus.FAILED and self.error is not None and self.error.retryable

    @property
    def advice(self) -> str:
        """What to do about a failed or incomplete job; empty otherwise."""
        if self.status is MessageStatus.INCOMPLETE:
            return "The job did not finish within expireMins: submit it again, or poll with a longer one."
        if self.status is MessageStatus.FAILED:
            return self.error.advice if self.error else _UNKNOWN_CODE_ADVICE
        return ""


@dataclass(frozen=True)
class Message(_Outcome):
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
    :param route_id: the ``loadBalanceId`` or ``ppuId`` of a job run through the load balancer or
        pay-per-use (see :class:`SubmitResult`).
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
    route_id: str | None = None

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
            raise PayloadError("a message should be a JSON object")
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
                raise PayloadError(
                    "a finished message needs a response with a buttonMessageId (image results), a seed, "
                    "a text result's type and content, or an error code in content"
                )
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
            content=_content(content),
            ref=_optional_str(inner, "ref"),
            seed=_optional_str(inner, "seed"),
            originating_message_id=_optional_str(inner, "originatingMessageId"),
            route_id=_route_id(inner),
        )


class TaskIdentity(TypedDict):
    """A task instance, and which try of it: the one that submitted a job, or that saved its images."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int | None
    try_number: int


_IDENTITY_TYPES = get_type_hints(TaskIdentity)


def _identity(value: object) -> TaskIdentity | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(value.get(name), kind) and not isinstance(value.get(name), bool)
        for name, kind in _IDENTITY_TYPES.items()
    ):
        raise PayloadError(
            "'submitted_by' should name a task instance: dag_id, run_id, task_id (strings), map_index "
            f"and try_number (integers), got {excerpt(value)}"
        )
    return cast("TaskIdentity", {name: value[name] for name in _IDENTITY_TYPES})


def job_ref(submitted_by: TaskIdentity, ref: str | None = None, job: str | None = None) -> str:
    """
    The ``ref`` a job operator sends with its request: a compact JSON object naming the task instance
    that submitted the job, with the caller's own ``ref`` under ``"ref"`` and, for a job that completes
    by webhook, its job key under ``"job"`` (the receiver accepts a result only for the job its token
    names).

    NextLeg echoes it in the job's result and webhook, so a job can be traced to its task at NextLeg and
    in a webhook receiver. The provider never reads it back but for the webhook's job key: a result names
    its submitter and its button itself (:class:`JobResult`).

    :param submitted_by: the submitting task instance.
    :param ref: the caller's own reference, if any.
    :param job: the job key of a job that completes by webhook.
    """
    fields: dict[str, Any] = dict(submitted_by)
    if ref is not None:
        fields["ref"] = ref
    if job is not None:
        fields[REF_JOB_FIELD] = job
    return json.dumps(fields, separators=(",", ":"))


@dataclass(frozen=True)
class JobResult(_Outcome):
    """
    A finished job as tasks pass it on: a job operator's or the sensor's XCom, and what every downstream
    consumer (button presses, seeds, saved images) reads.

    Built from the job's last poll by :meth:`from_message`; the operator that submitted the job adds what
    only it knows (:attr:`button`, :attr:`submitted_by`). Its one JSON form is :meth:`to_xcom`, read back
    by :meth:`from_xcom`.

    :param message_id: the job's message id.
    :param status: ``done``; ``failed`` or ``incomplete`` for a job that ended without a result (a
        waiting task raises that as its error, so only a done result reaches XCom).
    :param error_code: the code of a failed job (see :class:`ErrorCode`).
    :param button_message_id: the handle for pressing this result's buttons.
    :param buttons: the buttons it offers, verbatim.
    :param image_url: the result (the 2x2 grid for imagine).
    :param image_urls: the single images of the grid.
    :param content: the prompt, four prompts (describe), the account's info (a dict).
    :param type: ``imagine``, ``button``, ``describe``, ``blend``, ``info``, ...
    :param seed: the job's seed, when the result carries it.
    :param ref: the ``ref`` as NextLeg echoed it; for a job operator's job, :func:`job_ref`'s JSON.
    :param button: the button pressed to make this job (a ``ButtonOperator``'s); ``None`` otherwise.
    :param submitted_by: the task instance whose try submitted the job; ``None`` for a job submitted
        elsewhere (e.g. one a ``MessageSensor`` waited for).
    :param route_id: the ``loadBalanceId`` or ``ppuId`` of a job run through the load balancer or
        pay-per-use: a ``ButtonOperator`` pressing this result's buttons sends it on.
    """

    message_id: str
    status: MessageStatus
    error_code: str | None = None
    button_message_id: str | None = None
    buttons: tuple[str, ...] = ()
    image_url: str | None = None
    image_urls: tuple[str, ...] = ()
    content: Content = None
    type: str | None = None
    seed: str | None = None
    ref: str | None = None
    button: str | None = None
    submitted_by: TaskIdentity | None = None
    route_id: str | None = None

    @classmethod
    def from_message(cls, message: Message) -> JobResult:
        """
        The result of a job whose poll says it ended (done, failed or incomplete).

        :param message: the job's last poll.
        """
        if not message.status.is_terminal:
            raise ValueError(f"job {message.message_id} is {message.status.value}, not finished")
        return cls(
            message_id=message.message_id,
            status=message.status,
            error_code=message.error_code,
            button_message_id=message.button_message_id,
            buttons=message.buttons,
            image_url=message.image_url,
            image_urls=message.image_urls,
            content=message.content,
            type=message.type,
            seed=message.seed,
            ref=message.ref,
            route_id=message.route_id,
        )

    def to_xcom(self) -> dict[str, Any]:
        """The result as a small JSON-safe dict, keyed by the field names: for XCom and trigger events."""
        data = asdict(self)
        data.update(status=self.status.value, buttons=list(self.buttons), image_urls=list(self.image_urls))
        return data

    @classmethod
    def from_xcom(cls, data: object) -> JobResult:
        """
        Read :meth:`to_xcom`'s dict back, strictly: :class:`PayloadError` names the first value that
        does not fit.

        ``message_id`` and a finished ``status`` are required; a missing key is an empty value (a result
        written by an earlier version of the provider names no ``button`` nor ``submitted_by``).

        :param data: the dict.
        """
        if not isinstance(data, Mapping):
            raise PayloadError(f"a job result should be a dict, got {type(data).__name__}")
        message_id = data.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise PayloadError("a job result needs its message_id")
        finished = [status.value for status in MessageStatus if status.is_terminal]
        if data.get("status") not in finished:
            raise PayloadError(
                f"'status' should be one of {', '.join(finished)}, got {excerpt(data.get('status'))}"
            )
        return cls(
            message_id=message_id,
            status=MessageStatus(data["status"]),
            error_code=_optional_str(data, "error_code"),
            button_message_id=_optional_str(data, "button_message_id"),
            buttons=_str_list(data, "buttons"),
            image_url=_optional_str(data, "image_url"),
            image_urls=_str_list(data, "image_urls"),
            content=_content(data.get("content")),
            type=_optional_str(data, "type"),
            seed=_optional_str(data, "seed"),
            ref=_optional_str(data, "ref"),
            button=_optional_str(data, "button"),
            submitted_by=_identity(data.get("submitted_by")),
            route_id=_optional_str(data, "route_id"),
        )
