"""The trigger that waits for a NextLeg job to finish, for the sensor and every job operator.

The trigger only reads: it registers its message with the poll scheduler of its account in the
triggerer (:mod:`airflow_provider_nextleg.polling`), which polls ``GET /v2/message/<id>`` for all the
waiting jobs of that account within its rate limit, and it waits for an answer that ends the job (done,
failed or incomplete) or for its absolute deadline, then yields one small event. It submits nothing and
changes nothing at NextLeg (in Airflow it writes only its task's image link, the job's latest progress
image), so a triggerer that runs it twice (HA) or starts it again from its kwargs (after a restart) does
no harm, and a resumed trigger keeps the deadline it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, overload

from airflow.sdk.bases.xcom import BaseXCom
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from airflow_provider_nextleg.exceptions import (
    NextLegError,
    NextLegInputError,
    NextLegWaitTimeoutError,
    error_from_payload,
    error_to_payload,
    job_failure,
)
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.hooks.session import account_session
from airflow_provider_nextleg.models import JobResult, Message, MessageStatus, excerpt
from airflow_provider_nextleg.polling import TRANSIENT_ERRORS, Updates, watch_message
from airflow_provider_nextleg.webhooks.inbox import Waiter

TIMEOUT = "timeout"
ERROR = "error"
"""Event statuses besides a :class:`MessageStatus` value: the deadline passed; the wait cannot go on."""


class NextLegMessageTrigger(BaseTrigger):
    """
    Wait for a NextLeg message to reach a final state, then fire one event.

    The event's payload: ``status`` (``done``, ``failed``, ``incomplete``, ``timeout`` or ``error``),
    ``message_id``, ``try_number`` (the kwarg), ``result`` (the finished job, :meth:`JobResult.to_xcom`;
    ``None`` for ``timeout`` and ``error``) and, for ``timeout`` and ``error``, ``error``: the error,
    whole, as :func:`~airflow_provider_nextleg.exceptions.error_to_payload` describes it.
    :func:`read_event` is its one reader.
    429s, 5xx answers, dropped connections and garbled answers delay the wait without ending it; a
    refused token or an unknown message ends it.

    While a task is deferred on it, the task's image link follows the job's progress images (the XCom is
    written aside, never holding up the wait; a write that fails is logged at debug).

    Waits of the same account share their polls' budget: the account's poll scheduler polls first the
    jobs expected to finish first (see :mod:`airflow_provider_nextleg.polling`).

    :param message_id: the job's message id.
    :param nextleg_conn_id: the nextleg connection (its id only: the token never enters the kwargs).
    :param deadline: when to give up, as a UNIX timestamp; ``None`` waits as long as the job runs.
    :param poll_interval: the least time between two polls of this job, in seconds; the scheduler polls
        less often when the account's budget is better spent on other jobs.
    :param expire_mins: the ``expireMins`` of each poll; ``None`` takes the connection's.
    :param route_id: the submission's ``route_id`` (its ``loadBalanceId`` or ``ppuId``), in mode
        ``load_balancer`` or ``pay_per_use``.
    :param job_key: for a job that completes by webhook, its key: the wait takes the result from the
        connection's webhook inbox and polls only to reconcile (a lost webhook costs latency, not the job).
    :param reconcile_after: with ``job_key``, seconds until the first reconciliation poll (after the job's
        expected end), then between two of them.
    :param try_number: the try of the task that deferred, echoed in the event (``try_number``): Airflow
        3.1 hands a failed deferral's event to the task's retries too (it keeps the resume method), and
        the task tells its own event from a replayed one by it.
    """

    def __init__(
        self,
        *,
        message_id: str,
        nextleg_conn_id: str = NextLegHook.default_conn_name,
        deadline: float | None = None,
        poll_interval: float = 5.0,
        expire_mins: int | None = None,
        route_id: str | None = None,
        job_key: str | None = None,
        reconcile_after: float | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        self.message_id = message_id
        self.nextleg_conn_id = nextleg_conn_id
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.expire_mins = expire_mins
        self.route_id = route_id
        self.job_key = job_key
        self.reconcile_after = reconcile_after
        self.try_number = try_number

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and the plain kwargs a triggerer needs to start the wait again."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "message_id": self.message_id,
                "nextleg_conn_id": self.nextleg_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "expire_mins": self.expire_mins,
                "route_id": self.route_id,
                "job_key": self.job_key,
                "reconcile_after": self.reconcile_after,
                "try_number": self.try_number,
            },
        )

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        """Wait until the job ends or the deadline passes; yield exactly one event."""
        yield TriggerEvent(await self._wait())

    async def _wait(self) -> dict[str, Any]:
        """The event's payload; the message's watch is over (cancelled or not) before it is returned."""
        shown: Progress | None = None
        preview = None if self.task_instance is None else _PreviewLink(self)
        # The first answer is awaited even past the deadline, so that a trigger resumed late still
        # reports a job that finished meanwhile; after it, the time left applies.
        timeout: float | None = None
        try:
            async with self._answers() as updates:
                while True:
                    try:
                        message = await updates.next(timeout)
                    except asyncio.TimeoutError:
                        deadline = NextLegWaitTimeoutError(
                            "the job had not finished by the deadline", message_id=self.message_id
                        )
                        return self._stopped(TIMEOUT, deadline)
                    except TRANSIENT_ERRORS as exc:
                        self.log.warning(
                            "NextLeg job %s: could not poll (%s); waiting on.", self.message_id, exc
                        )
                        continue
                    finally:
                        timeout = self._time_left()
                    if message.status.is_terminal:
                        result = JobResult.from_message(message)
                        # A pool's results may not repeat the route id the submission got: keep it.
                        return self._ended(replace(result, route_id=result.route_id or self.route_id))
                    shown = log_progress(self.log, message, shown)
                    if preview is not None and message.progress_image_url:
                        preview.show(message.progress_image_url)
        except Exception as exc:  # the event carries it to the task, which raises it again
            return self._stopped(ERROR, exc)
        finally:
            if preview is not None:
                preview.close()

    async def on_kill(self) -> None:
        """Airflow 3.3+: the deferred task was marked failed or success, or cleared: the job goes on at
        Midjourney (the API has no cancel) and is paid for."""
        self.log.warning(
            "NextLeg job %s keeps running at Midjourney and is paid for (the API cannot cancel it); its "
            "result stays readable by that message id.",
            self.message_id,
        )

    def _answers(self) -> contextlib.AbstractAsyncContextManager[Updates | _Delivered]:
        """Where the job's answers come from: its polls, or its webhook with a rare reconciling poll."""
        watch = functools.partial(
            watch_message,
            self.nextleg_conn_id,
            self.message_id,
            expire_mins=self.expire_mins,
            min_interval=self.poll_interval,
            route_id=self.route_id,
        )
        if self.job_key is None:
            return watch()
        return _delivered(self.nextleg_conn_id, self.message_id, self.job_key, self.reconcile_after, watch)

    def _time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.time())

    def _ended(self, result: JobResult) -> dict[str, Any]:
        return {
            "status": result.status.value,
            "message_id": self.message_id,
            "try_number": self.try_number,
            "result": result.to_xcom(),
        }

    def _stopped(self, status: str, error: Exception) -> dict[str, Any]:
        return {
            "status": status,
            "message_id": self.message_id,
            "try_number": self.try_number,
            "result": None,
            "error": error_to_payload(error, message_id=self.message_id),
        }


class _PreviewLink:
    """
    Points a deferred task's image link (:class:`~airflow_provider_nextleg.operators.links.NextLegImageLink`)
    at its job's latest progress image while the trigger waits, as the worker's wait does; the task
    overwrites it with the result once it resumes.

    The XCom is written by a task of its own, one write at a time, so a slow supervisor or database never
    holds up this wait nor the triggerer's event loop (Airflow 3.1 has no ``aset``: the write takes
    asgiref's thread); images that come during a write are not queued, only the latest is written next.
    A failed write is logged at debug: the link lags behind, the wait goes on. When the wait ends, a write
    under way is finished (its request reaches the supervisor before the trigger's event), and none
    starts after, so no preview follows the result.

    :param trigger: the waiting trigger, with its ``task_instance``.
    """

    def __init__(self, trigger: BaseTrigger) -> None:
        self.ti = trigger.task_instance
        self.log = trigger.log
        self.latest: str | None = None
        self.closed = False
        self.changed = asyncio.Event()
        self.writer = asyncio.create_task(self._write_latest())

    def show(self, image_url: str) -> None:
        """Point the link at ``image_url`` soon (now, unless a write is under way)."""
        if image_url != self.latest:
            self.latest = image_url
            self.changed.set()

    def close(self) -> None:
        """Write nothing more; a write under way ends on its own."""
        self.closed = True
        self.changed.set()

    async def _write_latest(self) -> None:
        written = None
        while True:
            await self.changed.wait()
            self.changed.clear()
            latest = self.latest
            if self.closed:
                return
            if latest is not None and latest != written:
                written = latest
                await self._write(latest)

    async def _write(self, image_url: str) -> None:
        # Imported here: the links module imports this one (its wait on a worker runs this trigger).
        from airflow_provider_nextleg.operators.links import image_link_xcom

        key_and_value, place = image_link_xcom(self.ti, image_url)
        try:
            if hasattr(BaseXCom, "aset"):  # not on Airflow 3.1
                await BaseXCom.aset(*key_and_value, **place)
            else:
                await sync_to_async(self._set_unless_closed)(key_and_value, place)
        except Exception as exc:
            self.log.debug("Could not point the image link at %s: %s", image_url, exc)

    def _set_unless_closed(self, key_and_value: tuple[str, str], place: dict[str, Any]) -> None:
        """Airflow 3.1's write, in asgiref's thread: skipped when the wait ended while it was queued."""
        if not self.closed:
            BaseXCom.set(*key_and_value, **place)


class _Delivered:
    """
    The answers of a job that completes by webhook: its result from the inbox, or, when none came by the
    next reconciliation, one poll (a lost or late webhook costs latency, never the job).

    :param waiter: the inbox's waiter for the job.
    :param message_id: the job's message id.
    :param reconcile_after: seconds until the first reconciling poll, then between two of them.
    :param poll: one poll of the job, through its account's scheduler.
    """

    def __init__(
        self,
        waiter: Waiter,
        message_id: str,
        reconcile_after: float,
        poll: Callable[[], Awaitable[Message]],
    ) -> None:
        self.waiter = waiter
        self.message_id = message_id
        self.reconcile_after = reconcile_after
        self.poll = poll
        self.next_poll = time.monotonic() + reconcile_after

    def poll_due(self) -> float:
        """
        When the next reconciling poll is due (``time.monotonic()``): ``reconcile_after`` after the wait
        began or the latest poll; while other jobs' results keep coming in, ``reconcile_after`` after the
        latest of those (the account is working through its queue, this job most likely in it), but at
        most :data:`RECONCILE_POSTPONE` times ``reconcile_after`` in all.
        """
        latest = self.waiter.latest_delivery
        if latest is None:
            return self.next_poll
        latest_allowed = self.next_poll + (RECONCILE_POSTPONE - 1) * self.reconcile_after
        return min(max(self.next_poll, latest + self.reconcile_after), latest_allowed)

    async def next(self, timeout: float | None = None) -> Message:
        """The webhook's result, or a reconciling poll's answer when it is due; ``asyncio.TimeoutError``
        when ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            due = self.poll_due()
            if due <= now:
                self.next_poll = now + self.reconcile_after
                return await self.poll()
            if deadline is not None and deadline <= now:
                raise asyncio.TimeoutError
            delivered = await self.waiter.result(due - now if deadline is None else min(due, deadline) - now)
            if delivered is not None:
                return Message.from_api(delivered, self.message_id)


@contextlib.asynccontextmanager
async def _delivered(
    conn_id: str,
    message_id: str,
    job_key: str,
    reconcile_after: float | None,
    watch: Callable[[], contextlib.AbstractAsyncContextManager[Updates]],
) -> AsyncIterator[_Delivered]:
    """Watch the connection's inbox for a job's webhook; polls go through the account's scheduler."""

    async def poll() -> Message:
        async with watch() as updates:
            return await updates.next()

    async with account_session(conn_id) as session:
        webhooks = session.settings.webhooks
        if webhooks is None or not webhooks.enabled:
            raise NextLegInputError(
                f"job {message_id} completes by webhook, but connection {conn_id!r} no longer names a "
                "webhook_url and webhook_secret",
                advice="Set them again, or clear the task to submit with completion='poll'.",
            )
        after = reconcile_after or DEFAULT_RECONCILE_AFTER
        async with webhooks.inbox().watch(message_id, job_key) as waiter:
            yield _Delivered(waiter, message_id, after, poll)


RECONCILE_POSTPONE = 3
"""Most times ``reconcile_after`` a job's reconciling poll waits while other jobs' results keep coming:
a lost webhook costs at most that much latency."""
DEFAULT_RECONCILE_AFTER = 120.0
"""Seconds before a job waiting for its webhook is polled to reconcile, when its trigger does not say."""


class _Log(Protocol):
    """What :func:`log_progress` needs of a logger: a trigger's, a task's (their types vary by version)."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...


Progress = tuple[MessageStatus, int | None]


def log_progress(log: _Log, message: Message, shown: Progress | None) -> Progress:
    """
    Say how far a running job is (queued, or its progress with the link to its preview image), when
    that changed since the last time: a line per step, not per poll.

    :param shown: what the last call returned (``None`` at first).
    :return: what the job shows now, for the next call.
    """
    now = (message.status, message.progress)
    if now == shown:
        return now
    if message.status is MessageStatus.QUEUED:
        log.info("NextLeg job %s is queued at Midjourney (progress 0).", message.message_id)
    else:
        log.info(
            "NextLeg job %s is %s%% done; preview: %s",
            message.message_id,
            message.progress,
            message.progress_image_url or "none yet",
        )
    return now


def job_result(message: Message) -> JobResult:
    """
    The result of a job whose poll says it ended, or its failure, raised: what a task makes of a finished
    job it looked at itself (the sensor's pokes, a look before deferring, a retry's earlier job).

    :param message: the poll, in a final state.
    """
    return _succeeded(JobResult.from_message(message))


def read_event(event: dict[str, Any]) -> JobResult:
    """
    The finished job an event reports, or the error it stands for, raised.

    A failed or incomplete job raises :func:`~airflow_provider_nextleg.exceptions.job_failure`'s error
    (terminal codes fail the task without retries); ``timeout`` raises
    :class:`~airflow_provider_nextleg.exceptions.NextLegWaitTimeoutError`, and ``error`` the very error
    the wait met, of the same class (a refused token, an unknown message id...).

    :param event: the payload of a :class:`NextLegMessageTrigger` event.
    """
    payload = event if isinstance(event, dict) else {}
    status = payload.get("status")
    if status in (TIMEOUT, ERROR) and isinstance(payload.get("error"), dict):
        raise error_from_payload(payload["error"])
    try:
        result: JobResult | None = JobResult.from_xcom(payload.get("result"))
    except ValueError:
        result = None
    if result is None or result.status.value != status:
        raise NextLegError(f"the wait ended with an event this provider does not know: {excerpt(event)}")
    return _succeeded(result)


def _succeeded(result: JobResult) -> JobResult:
    """The result of a job done; the failure of one that ended without a result, raised."""
    if result.status is not MessageStatus.DONE:
        raise job_failure(result, endpoint="GET /v2/message")
    return result


@overload
async def wait_in_process(trigger: NextLegMessageTrigger, within: None = None) -> dict[str, Any]: ...
@overload
async def wait_in_process(trigger: NextLegMessageTrigger, within: float) -> dict[str, Any] | None: ...
async def wait_in_process(
    trigger: NextLegMessageTrigger, within: float | None = None
) -> dict[str, Any] | None:
    """
    Run a trigger to its event in the current process (the waits of a worker).

    Waiting on a worker thus follows exactly the rules of waiting in the triggerer. The shared async
    clients of this event loop are closed afterwards.

    :param trigger: the trigger to run.
    :param within: the most seconds to wait; without it, the wait lasts until the event. ``None`` is
        returned when no event came in time: the same trigger can then be deferred (its deadline is an
        absolute time, so the wait so far counts).
    """
    events = trigger.run()
    try:
        event = await asyncio.wait_for(anext(events), within)
    except asyncio.TimeoutError:
        return None
    except StopAsyncIteration:
        raise RuntimeError("the NextLeg trigger ended without an event") from None
    finally:
        await events.aclose()
        await NextLegHook.aclose_clients()
    return dict(event.payload)
