"""The error codes Midjourney puts in a failed job's ``content``, each with what it means for a pipeline.

One table, :class:`ErrorCode`, read by the parsers of :mod:`airflow_provider_nextleg.models` (which
re-exports it) and by the errors a failed job raises.
"""

from __future__ import annotations

from enum import Enum


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
