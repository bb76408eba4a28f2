"""What a job operator keeps of its job in the task instance's state store, so that no later try pays again.

A NextLeg job is paid for when it is submitted, and the API cannot find a job again by its request: only
its message id leads back to it. Airflow 3.3's ``task_state_store`` outlives retries and clears of the
task instance, so the id goes there the moment the submission answers, before anything else that can
fail (an XCom push, the trigger, the wait), with the request's fingerprint and the try that submitted it.
Every later execution of the task instance looks there first (:meth:`JobState.earlier_job`): it waits for
a job still running, reuses one that finished, and submits anew only when the job failed in a way a new
submission can mend, or when the request changed. A try that reports its job's failure forgets the job;
one that finds a failed job nobody reported (its try was lost: failed by Airflow's scheduler while it
deferred, or its worker died) acts as that try would have, and a terminal code fails the task rather than
resending a request Midjourney refused. Airflow 3.1 and 3.2 have no task state store: there, every try
submits.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

from airflow_provider_nextleg.exceptions import NextLegJobUnrecordedError, NextLegNotFoundError, job_failure
from airflow_provider_nextleg.models import Message, MessageStatus, TaskIdentity

if TYPE_CHECKING:
    from logging import Logger

    from airflow.sdk import Context

    from airflow_provider_nextleg.hooks.nextleg import NextLegHook
    from airflow_provider_nextleg.hooks.transport import ApiCall

STATE_KEY = "nextleg_job"
"""The task state store key holding :class:`StoredJob`: delete it to make the next execution submit anew."""
RECORD_ATTEMPTS = 3
"""Writes of a new job's id to the task state store before giving up (each failed one waits a second
longer): the store talks to Airflow's API server, which may be briefly unreachable."""


class StoredJob(TypedDict):
    """The job a task instance submitted, as its task state store keeps it."""

    message_id: str
    request: str
    """The request's :func:`fingerprint`: a stored job serves only the same request."""
    submitted_by: TaskIdentity
    route_id: str | None
    """The submission's ``route_id`` (load balancer, pay-per-use), which its polls need (records written
    before it existed lack it)."""
    job_key: str | None
    """For a job that completes by webhook, its key, under which its result reaches the inbox."""


def fingerprint(call: ApiCall[Any]) -> str:
    """
    What identifies a job's request, for recognising it on a retry: the endpoint and the body, less what
    changes from try to try without changing the job (the ``ref`` names the try; the webhook is where
    the answer goes).

    :param call: the job's call.
    """
    body = {
        name: value
        for name, value in (call.json or call.params or {}).items()
        if name not in ("ref", "webhookOverride")
    }
    request = {"endpoint": call.endpoint, "body": body}
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _try_of(stored: StoredJob) -> str:
    """Which try submitted a stored job, in words, for the log."""
    submitted_by = stored.get("submitted_by")
    if not isinstance(submitted_by, dict) or not isinstance(submitted_by.get("try_number"), int):
        return "an earlier try"
    return f"try {submitted_by['try_number']} of this task instance"


class JobState:
    """
    One execution's view of its task instance's job record.

    :param context: the task's context; its ``task_state_store`` (Airflow 3.3+) holds the record.
    :param log: where the decisions are told (the operator's log).
    """

    def __init__(self, context: Context, log: Logger | Any) -> None:
        self._store = cast("Mapping[str, Any]", context).get("task_state_store")
        self.log = log

    def stored(self) -> StoredJob | None:
        """The job this task instance submitted, if the store holds a readable record of one."""
        stored = self._store.get(STATE_KEY) if self._store is not None else None
        if not isinstance(stored, dict) or not isinstance(stored.get("message_id"), str):
            return None
        return cast("StoredJob", stored)

    def record(
        self,
        message_id: str,
        request: str,
        submitted_by: TaskIdentity,
        route_id: str | None = None,
        job_key: str | None = None,
    ) -> None:
        """
        Keep the id of the job just submitted: what an execution does first once its submission answers.

        :raises NextLegJobUnrecordedError: the store refused every write. It is terminal: a retry would
            not find the job and would pay for another; the error names the job, which still runs.
        """
        if self._store is None:
            return
        job: StoredJob = {
            "message_id": message_id,
            "request": request,
            "submitted_by": submitted_by,
            "route_id": route_id,
            "job_key": job_key,
        }
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                self._store.set(STATE_KEY, job)
                return
            except Exception as exc:  # whatever the store's transport raised: the id is not kept
                self.log.warning(
                    "Could not keep NextLeg job %s in the task state store (%s); attempt %d of %d.",
                    message_id,
                    exc,
                    attempt,
                    RECORD_ATTEMPTS,
                )
                failure = exc
                if attempt < RECORD_ATTEMPTS:
                    time.sleep(attempt)
        raise NextLegJobUnrecordedError(
            f"job {message_id} was submitted, but the task state store refused its id ({failure})",
            message_id=message_id,
        ) from failure

    def routing(self) -> tuple[str | None, str | None]:
        """The stored job's ``route_id`` and webhook ``job_key``, where it has them."""
        stored = self.stored()
        return (None, None) if stored is None else (stored.get("route_id"), stored.get("job_key"))

    def forget(self) -> None:
        """The task is done with its job: the next execution of the task instance submits anew."""
        if self._store is not None:
            self._store.delete(STATE_KEY)

    def submitter(self, message_id: str, this_try: TaskIdentity) -> TaskIdentity:
        """The try that submitted the job: the stored one when this try resumed it, else this try."""
        stored = self.stored()
        if stored is not None and stored["message_id"] == message_id and stored.get("submitted_by"):
            return stored["submitted_by"]
        return this_try

    def earlier_job(self, hook: NextLegHook, request: str, expire_mins: int | None) -> Message | None:
        """
        The job an earlier execution of this task instance submitted, when it can still serve.

        That is a job still running (wait for it) or done (reuse its result); ``None`` when there is
        none to reuse: no task state store, a different request, a job that failed in a way a new one
        can mend (a retryable code, or incomplete), an unknown id.

        :param hook: the hook to look the job up with.
        :param request: this execution's request fingerprint.
        :param expire_mins: the ``expireMins`` of the look-up.
        :raises NextLegJobFailedTerminalError: the job failed with a terminal code that no try reported:
            the same request must not be sent again (Midjourney refused it; repeats risk a ban).
        """
        stored = self.stored()
        if stored is None:
            return None
        message_id = stored["message_id"]
        if stored.get("request") != request:
            self.log.info("The request changed since job %s was submitted: submitting a new job.", message_id)
            return None
        try:
            message = hook.get_message(message_id, expire_mins=expire_mins, route_id=stored.get("route_id"))
        except NextLegNotFoundError:
            self.log.warning("NextLeg no longer knows job %s: submitting a new job.", message_id)
            return None
        submitter = _try_of(stored)
        if message.status is MessageStatus.DONE:
            self.log.info(
                "Job %s, submitted by %s, already finished: reusing its result.", message_id, submitter
            )
            return message
        if not message.status.is_terminal:
            self.log.info(
                "Job %s, submitted by %s, is still %s: waiting for it instead of paying for another. To "
                "abandon it, delete this task instance's task state key %r before running it again.",
                message_id,
                submitter,
                message.status.value,
                STATE_KEY,
            )
            return message
        if not message.retryable:
            self.log.warning(
                "Job %s, submitted by %s, failed with %s, which no try reported (Airflow lost that try): "
                "failing with it instead of sending the same request again.",
                message_id,
                submitter,
                message.error_code,
            )
            self.forget()  # reported now: a clear of the failed task submits anew, as after any failure
            raise job_failure(message, endpoint="GET /v2/message")
        self.log.info(
            "Job %s, submitted by %s, ended %s (%s): submitting a new job.",
            message_id,
            submitter,
            message.status.value,
            message.error_code or "no result",
        )
        return None
