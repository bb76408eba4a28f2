"""The errors the NextLeg provider raises, one hierarchy under Airflow's own exceptions.

Every error derives from :class:`NextLegError` (an ``AirflowException``). Errors that no retry can mend
(a refused token, a request the service rejects, bad local input, a job Midjourney refused for good)
also derive from ``AirflowFailException``, so Airflow fails the task at once instead of spending its
retries on them; so do those where a retry would pay for a second job without looking for the first (a
submission whose fate is unknown, a job whose message id could not be kept). Each message names the
endpoint, the HTTP status, the message id where there is one, a short excerpt of the response body, and
what to do next; the API token never appears in any of them.
An error met in the triggerer reaches the task whole, of the same class and with the same message
(:func:`error_to_payload`, :func:`error_from_payload`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException  # type: ignore[attr-defined]
except ImportError:  # Airflow 3.1: the task SDK does not export AirflowFailException yet.
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]

from airflow_provider_nextleg.models import JobResult, Message, MessageStatus, excerpt

_EXCERPT_LENGTH = 200


def body_excerpt(body: bytes | str, *, secret: str | None = None) -> str:
    """Shorten a response body for an error message: whitespace collapsed, truncated, token removed.

    :param body: the raw response body.
    :param secret: a string that must not appear in the excerpt (the API token), replaced by ``***``.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_LENGTH else text[:_EXCERPT_LENGTH] + "…"


class NextLegError(AirflowException):
    """
    Base of every error of the NextLeg provider.

    The parts of the message stay available as attributes, so handlers need not parse the text.

    :param problem: what went wrong, in a phrase.
    :param endpoint: the call, e.g. ``POST /v2/imagine``.
    :param status: the HTTP status of the last answer, if there was one.
    :param message_id: the NextLeg message id concerned, if any.
    :param body: an excerpt of the response body (see :func:`body_excerpt`).
    :param advice: what to do about it; defaults to the class's :attr:`advice`.
    :param retry_after: the seconds the answer asked to wait before asking again (its ``Retry-After``).
    """

    advice = "See the message above."
    payload_fields: ClassVar[tuple[str, ...]] = ()
    """The attributes, beyond the common ones, that this class's constructor takes: they cross the
    trigger boundary too (see :func:`error_to_payload`)."""

    def __init__(
        self,
        problem: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        message_id: str | None = None,
        body: str | None = None,
        advice: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.problem = problem
        self.retry_after = retry_after
        self.endpoint = endpoint
        self.status = status
        self.message_id = message_id
        self.body = body
        if advice is not None:
            self.advice = advice
        super().__init__(self._compose())

    def after_attempts(self, attempts: int) -> NextLegError:
        """
        Note in the message that the call gave up after ``attempts`` attempts; returns the error itself.

        :param attempts: how many attempts were made.
        """
        if attempts > 1:
            self.problem = f"{self.problem} (gave up after {attempts} attempts)"
            self.args = (self._compose(),)
        return self

    def _compose(self) -> str:
        facts = [f"HTTP {self.status}" if self.status is not None else None]
        facts.append(f"message {self.message_id}" if self.message_id else None)
        where = "NextLeg " + (self.endpoint or "provider")
        known = ", ".join(fact for fact in facts if fact)
        text = f"{where}{f' ({known})' if known else ''}: {self.problem.rstrip('.')}."
        if self.body:
            text += f" Response body: {self.body!r}."
        return f"{text} {self.advice}".rstrip()


class NextLegInputError(NextLegError, AirflowFailException, ValueError):
    """An argument that cannot work, caught before anything was sent (also a ``ValueError``)."""

    advice = "Nothing was sent to NextLeg: fix the argument and run the task again."


class NextLegAuthenticationError(NextLegError, AirflowFailException):
    """The service refused the API token (HTTP 401 or 403), or the connection has none."""

    advice = (
        "Put a valid NextLeg API token in the connection's password field; "
        "retrying with the same token cannot succeed."
    )


class NextLegBadRequestError(NextLegError, AirflowFailException):
    """The service rejected the request as sent (HTTP 400 and other client errors).

    This includes the banned-phrase prefilter's ``Invalid phrase: '...'``.
    """

    advice = (
        "Change the request (for 'Invalid phrase', reword the prompt or pass ignore_prefilter); "
        "resending it unchanged cannot succeed."
    )


class NextLegNotFoundError(NextLegBadRequestError):
    """The service knows no such message (HTTP 404)."""

    advice = "Check the message id: it must come from a submission made with this account's token."


class NextLegRateLimitError(NextLegError):
    """The account's rate limit refused the request (HTTP 429) on every attempt.

    A refused request was not processed, so retrying the task never pays twice.
    """

    advice = (
        "The request was refused, not processed, so a task retry is safe. Another client probably "
        "shares this token: raise the connection's rate_limit_interval or run fewer tasks at once."
    )


class NextLegServerError(NextLegError):
    """The service answered 5xx on every attempt of a call that is safe to repeat."""

    advice = "The service is failing; a task retry later may succeed."


class NextLegConnectionError(NextLegError):
    """The service could not be reached (refused connection, DNS failure, timeout) on every attempt."""

    advice = "Check the connection's base URL and that the service is reachable from this worker."


class NextLegSubmissionUncertainError(NextLegError, AirflowFailException):
    """
    A job-starting request may or may not have created a job, so it was not resent.

    Raised for a read timeout, a connection dropped after the request was sent, or a 5xx answer to a
    submission (imagine, button, describe, blend, info, settings, slash command). Terminal: the API finds
    a job only by the message id this answer did not bring, so a task retry could not look for the job
    first and would submit (and pay for) a second one. Resending is left to a person, who clears the task.
    If the job was created, its result and its webhook delivery carry the request's ``ref``.

    :param ref: the ``ref`` sent with the request, if any.
    """

    payload_fields = ("ref",)

    def __init__(self, problem: str, *, ref: str | None = None, **kwargs) -> None:
        self.ref = ref
        find = (
            f"If it was created, its result carries ref={ref!r}, and so does its webhook if the account "
            "has one."
            if ref
            else "No ref was sent, so if it was created only its webhook, if the account has one, can "
            "show it; pass a ref to make jobs recognisable."
        )
        kwargs.setdefault(
            "advice",
            "The job may or may not have been created, so the request was not resent and the task fails "
            f"without retrying. {find} To submit it again anyway, paying again if the first one was "
            "created, clear the task.",
        )
        super().__init__(problem, **kwargs)


class NextLegJobUnrecordedError(NextLegError, AirflowFailException):
    """
    A job was submitted, but the task could not keep its message id in its task state store.

    Terminal: a retry would not find the job and would submit (and pay for) another one, while this one
    runs on at Midjourney and stays readable by its id.
    """

    advice = (
        "The job runs on and is paid for: wait for it with MessageSensor(message_id=...) or read it with "
        "NextLegHook().get_message(...); Airflow will not retry this task, which would pay again. Check "
        "that the worker reaches Airflow's API server (the task state store is kept there)."
    )


class NextLegMalformedResponseError(NextLegError):
    """The answer is not what the NextLeg API sends: not JSON, an HTML page, or required fields missing."""

    advice = (
        "Check that the connection's base URL points at the NextLeg API and not at a proxy or web page; "
        "a task retry may help if a proxy was briefly failing."
    )


class NextLegJobFailedError(NextLegError):
    """
    A job finished without a result: Midjourney answered with an error code.

    Raised for the retryable codes (QUEUE_FULL, INTERNAL_ERROR, ...); a task retry submits a new job.
    The terminal codes raise :class:`NextLegJobFailedTerminalError`. Build either with :func:`job_failure`.

    :param code: the error code from the message's content.
    :param retryable: whether submitting the same request again may succeed.
    """

    payload_fields = ("code", "retryable")

    def __init__(self, problem: str, *, code: str | None, retryable: bool, **kwargs) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(problem, **kwargs)


class NextLegJobFailedTerminalError(NextLegJobFailedError, AirflowFailException):
    """A job failed with a code no retry can mend (BANNED_PROMPT, INVALID_PARAMETER, ...)."""


class NextLegJobIncompleteError(NextLegJobFailedError):
    """A job reported ``progress: "incomplete"``: it did not finish within expireMins."""


def job_failure(message: Message | JobResult, *, endpoint: str | None = None) -> NextLegJobFailedError:
    """
    Build the error for a job that ended without a result (status FAILED or INCOMPLETE).

    :param message: the job's last poll, or its result.
    :param endpoint: the call that observed it, for the error text.
    """
    if message.status is MessageStatus.INCOMPLETE:
        return NextLegJobIncompleteError(
            "the job did not finish within expireMins and is reported incomplete",
            code=None,
            retryable=True,
            endpoint=endpoint,
            message_id=message.message_id,
            advice="Retrying the task submits a new job; raise expire_mins if jobs need longer.",
        )
    if message.status is not MessageStatus.FAILED:
        raise ValueError(f"message {message.message_id} is {message.status.value}, not failed or incomplete")
    error_class = NextLegJobFailedError if message.retryable else NextLegJobFailedTerminalError
    then = "Retrying the task submits a new job." if message.retryable else "Airflow will not retry it."
    return error_class(
        f"the job failed with {message.error_code}",
        code=message.error_code,
        retryable=message.retryable,
        endpoint=endpoint,
        message_id=message.message_id,
        advice=f"{message.advice} {then}",
    )


def read_result(value: object, *, name: str) -> JobResult:
    """
    The job result an argument holds (an upstream job operator's output), checked once where it enters.

    :param value: the argument.
    :param name: the argument's name, for the error.
    :raises NextLegInputError: naming the argument, the value that does not fit, and what to pass.
    """
    try:
        return JobResult.from_xcom(value)
    except ValueError as exc:
        raise NextLegInputError(
            f"{name} is not a NextLeg job result ({exc}): {excerpt(value)}",
            advice="Pass the output of a NextLeg job operator that waited for its job "
            "(wait_for_completion=True) or of a MessageSensor. Nothing was sent to NextLeg.",
        ) from None


class NextLegWaitError(NextLegError):
    """
    Waiting for a job ended without its result, for a reason of the wait's own: its deadline passed
    (:class:`NextLegWaitTimeoutError`), or the triggerer met an error of a class this provider does not
    know (see :func:`error_from_payload`).

    After a deadline the job itself may still finish: the API has no cancel. A task retry resumes the
    same job where Airflow keeps task state (3.3 and later).
    """

    advice = ""


class NextLegWaitTerminalError(NextLegWaitError, AirflowFailException):
    """A wait that ended on an error of an unknown class that no retry can mend."""


class NextLegWaitTimeoutError(NextLegWaitError):
    """The wait's deadline passed before the job ended (a sensor turns it into its own timeout)."""

    advice = "The job itself may still finish (the API has no cancel); a task retry resumes waiting for it."


_COMMON_FIELDS = ("problem", "endpoint", "status", "message_id", "body")
# The type of each attribute a payload carries (a string unless named here): a value of another type,
# from a payload this provider did not write, is left out rather than breaking the error's message.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": int,
    "retryable": bool,
    "retry_after": (int, float),
}


def _error_classes() -> dict[str, type[NextLegError]]:
    """Every class of :class:`NextLegError`'s hierarchy, by name."""
    found: dict[str, type[NextLegError]] = {}
    pending: list[type[NextLegError]] = [NextLegError]
    while pending:
        error_class = pending.pop()
        found[error_class.__name__] = error_class
        pending.extend(error_class.__subclasses__())
    return found


def error_to_payload(error: BaseException, *, message_id: str | None = None) -> dict[str, Any]:
    """
    A small JSON-safe description of an error, to carry it whole from the triggerer to the task, where
    :func:`error_from_payload` rebuilds it: its class's name, its attributes (problem, endpoint, status,
    message id, body excerpt, the class's own :attr:`~NextLegError.payload_fields`), its advice where it
    is not the class's, and whether it is terminal.

    :param error: the error; one from outside this hierarchy keeps its class name, text and terminality.
    :param message_id: the message waited for, when the error does not name one.
    """
    terminal = isinstance(error, AirflowFailException)
    if not isinstance(error, NextLegError):
        return {
            "class": type(error).__name__,
            "problem": str(error),
            "message_id": message_id,
            "terminal": terminal,
        }
    payload = {name: getattr(error, name) for name in (*_COMMON_FIELDS, *error.payload_fields)}
    payload.update({"class": type(error).__name__, "terminal": terminal})
    payload["message_id"] = error.message_id or message_id
    if "advice" in vars(error):
        payload["advice"] = error.advice
    return payload


def error_from_payload(payload: Mapping[str, Any]) -> NextLegError:
    """
    The error :func:`error_to_payload` described, of the same class and with the same message.

    A class this provider does not know (one from outside the hierarchy, or from a newer version) comes
    back as a :class:`NextLegWaitError`, terminal (:class:`NextLegWaitTerminalError`) when it was.

    :param payload: the description.
    """
    error_class = _error_classes().get(str(payload.get("class")))
    if error_class is None:
        error_class = NextLegWaitTerminalError if payload.get("terminal") else NextLegWaitError
    fields: dict[str, Any] = dict.fromkeys(error_class.payload_fields)
    for name in (*_COMMON_FIELDS, "advice", *error_class.payload_fields):
        if isinstance(payload.get(name), _FIELD_TYPES.get(name, str)):
            fields[name] = payload[name]
    return error_class(fields.pop("problem", None) or "the wait ended without a result", **fields)
