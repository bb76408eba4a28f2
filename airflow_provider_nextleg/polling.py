"""Shared waiting for NextLeg jobs: one poll scheduler per account and event loop.

NextLeg allows one request every 3 seconds per account, so waiting on many jobs comes down to choosing
which job each request polls. Every wait on a job of one account in one event loop (the triggers of a
triggerer process; the non-deferrable wait of a worker, in a loop of its own) registers its message with
that account's :class:`PollScheduler` through :func:`watch_message`; the waits of one connection share
one reading of it and one HTTP client. The scheduler's one task takes the account's rate-limiter slots,
the same slots every other request of the host takes, and spends each on the watched job most likely to
have finished:

* A job's finish is estimated from its own progress: when each progress value was first seen, and how
  long the jobs seen from start to finish took (their median, once :data:`LEARN_AFTER` have been seen;
  :data:`PRIOR_SECONDS` before, which only orders the polls).
* Among the jobs due a poll, the one expected to finish first goes first, so the budget goes to jobs
  about to finish; a job seen queued (progress 0) is expected a whole duration after that poll, so it
  comes after every running one.
* Once durations are known, a job is not polled again before it could have finished: the next poll comes
  halfway to its earliest plausible finish (so the estimate sharpens as the job advances), which polls a
  queued job about every quarter of a typical duration. Before that, and from its earliest finish on, a
  job is polled as often as its watchers' ``min_interval`` and the budget allow.
* A job past its latest plausible finish drops back in the order by as much as it is late, and is polled
  less often, so a stuck job never starves the others.
* A 429 holds the account's limiter for its ``Retry-After`` (the hook does it), which stops every
  poller and every submission of the account at once; a job whose poll failed is asked again after a
  growing pause, and its watchers hear of the failure.

A scheduler holds hints, never an outcome: what decides a wait is the API's answer, which every watcher of
the message receives. A triggerer that restarts loses the hints, and its triggers simply register again.
A watcher that leaves (its trigger finished, cancelled or moved to another triggerer) is forgotten at
once; the scheduler and its task end with the last watcher.

The workers that submit jobs and the triggerer that polls them are different processes: they keep
within the account's limit together through the limiter, which the processes of a host share (see
:mod:`airflow_provider_nextleg.ratelimit`, also for processes on several hosts). Two triggerers that run
the same trigger (HA) each poll its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import statistics
import time
import weakref
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_nextleg.exceptions import NextLegMalformedResponseError
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.hooks.session import AccountSession, loop_sessions
from airflow_provider_nextleg.hooks.transport import RETRYABLE_ERRORS
from airflow_provider_nextleg.models import Message, MessageStatus
from airflow_provider_nextleg.ratelimit import RateLimiter, Slot

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (*RETRYABLE_ERRORS, NextLegMalformedResponseError)
"""Errors that say nothing about the job: the wait goes on (a garbled answer too, unlike for the hook)."""

PRIOR_SECONDS = 50.0
"""A typical job's duration before any was seen (a fast Midjourney job takes 30 to 75 s): orders polls."""
LEARN_AFTER = 3
"""Jobs seen from start to finish before their durations gate the polls."""
REMEMBERED = 25
"""Durations remembered per account: the latest ones, so a switch to relax mode is soon learned."""
RETRY_PAUSE = 1.0
"""Least pause before polling again a job whose poll failed; it doubles with each failure in a row."""
MAX_RETRY_PAUSE = 60.0
"""Longest pause before polling again a job whose poll failed."""


def time_left(progress: int) -> float:
    """
    The share of a job's time still to run when it first shows ``progress``.

    Progress shows the steps already completed: a four-step job shows 31, 62, then 93 with a quarter of
    its time still to go, so ``p`` percent leaves about ``1 - p/125`` of the time.

    :param progress: 0 to 99.
    """
    return 1.0 - progress / 125.0


class Durations:
    """How long an account's jobs take, learned from the jobs seen from start to finish."""

    def __init__(self) -> None:
        self._seen: deque[float] = deque(maxlen=REMEMBERED)

    def add(self, seconds: float) -> None:
        """Remember one job's duration (positive durations only; a clock glitch is not a duration)."""
        if seconds > 0:
            self._seen.append(seconds)

    @property
    def typical(self) -> float | None:
        """The median duration, once :data:`LEARN_AFTER` jobs were seen; ``None`` until then."""
        return statistics.median(self._seen) if len(self._seen) >= LEARN_AFTER else None


class Updates:
    """
    The answers of the polls of one watched message, for one watcher, in order.

    A triggerer holds one per trigger, so it holds little for the garbage collector to trace: the answers
    not yet taken, and a future only while its watcher waits (an ``asyncio.Queue`` is six objects).

    :param watch: the watched message.
    """

    __slots__ = ("_answers", "_waiter", "watch")

    def __init__(self, watch: _Watch) -> None:
        self.watch = watch
        self._answers: deque[Message | Exception] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, answer: Message | Exception) -> None:
        """Hand over a poll's answer (the scheduler's side)."""
        self._answers.append(answer)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout: float | None = None) -> Message:
        """
        The next poll's message; raises the error that poll met, or ``asyncio.TimeoutError``.

        :param timeout: the most seconds to wait; ``None`` waits as long as it takes. An answer already
            in is returned whatever the timeout.
        """
        if not self._answers:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await (waiter if timeout is None else asyncio.wait_for(waiter, timeout))
            finally:
                self._waiter = None
        answer = self._answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass(eq=False)
class _Watch:
    """One watched message: who waits for it, and what its polls have shown so far (hints only)."""

    message_id: str
    expire_mins: int
    route_id: str | None
    registered: float
    watchers: dict[Updates, float] = field(default_factory=dict)  # each watcher's min_interval
    next_poll: float = 0.0
    expected: float = 0.0  # the order among due jobs: when it is expected to finish
    in_flight: bool = False
    last_poll: float | None = None  # when the latest answered poll was sent
    progress: int = 0
    reached: tuple[float, float] = (0.0, 0.0)  # the current progress was reached after [0], by [1]
    first: tuple[int, float] | None = None  # first progress seen after a 0, and about when it was reached
    failures: int = 0
    answered_at: float = 0.0  # wall-clock time of the poll whose answer the watch took last

    @property
    def min_interval(self) -> float:
        return min(self.watchers.values(), default=0.0)


class PollScheduler:
    """
    The polls of one account in one event loop: one queue of polls within the account's rate limit.

    Each account session has one (:attr:`AccountSession.scheduler`); use :func:`watch_message`.

    :param session: the account's session in this loop, whose budget the polls take turns of.
    """

    def __init__(self, session: AccountSession) -> None:
        self.session = session
        self.limiter = session.limiter
        self.durations = durations_for(self.limiter)
        self._watches: dict[tuple[str, int, str | None], _Watch] = {}
        self._watchers = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._polls: set[asyncio.Task[None]] = set()

    @property
    def watched(self) -> int:
        """How many messages are being polled."""
        return len(self._watches)

    def add(
        self, message_id: str, *, expire_mins: int | None, min_interval: float, route_id: str | None = None
    ) -> Updates:
        """
        Register a watcher of a message until :meth:`discard`; see :func:`watch_message`.

        Watchers of the same message (and ``expire_mins``) share its polls.
        """
        expire = self.session.settings.expire_mins if expire_mins is None else expire_mins
        key = (message_id, expire, route_id)
        watch = self._watches.get(key)
        if watch is None:
            now = time.monotonic()
            watch = _Watch(message_id, expire, route_id, registered=now, next_poll=now)
            watch.expected = now + (self.durations.typical or PRIOR_SECONDS)
            self._watches[key] = watch
        updates = Updates(watch)
        watch.watchers[updates] = min_interval
        self._watchers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"nextleg-poll-scheduler-{id(self):x}")
        self._wake.set()
        return updates

    def discard(self, updates: Updates) -> None:
        """Forget a watcher, however its wait ended; the scheduler stops with the last one."""
        watch = updates.watch
        del watch.watchers[updates]
        key = (watch.message_id, watch.expire_mins, watch.route_id)
        if not watch.watchers and self._watches.get(key) is watch:
            del self._watches[key]
        self._watchers -= 1
        if not self._watchers:
            self.close()

    def close(self) -> None:
        """Stop the task and the polls in flight (the last watcher left, or the session closes)."""
        for task in (self._task, *self._polls):
            if task is not None:
                task.cancel()
        self._task = None

    async def _run(self) -> None:
        """Take the account's slots while a poll is due, and spend each on the most promising job."""
        while True:
            now = time.monotonic()
            due = min(
                (watch.next_poll for watch in self._watches.values() if not watch.in_flight), default=None
            )
            if due is None or due > now:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if due is None else due - now)
                continue
            candidate = self._pick(now)
            if candidate is None:
                continue
            turn = await self.limiter.abook_poll(candidate.message_id, lease=self._lease())
            if turn.slot is None:  # another process polls the job, or has just shared what it saw
                shared = _shared_answer(turn.shared, candidate.message_id, newer_than=candidate.answered_at)
                if shared is not None:
                    self._take(candidate, time.monotonic(), shared[0], answered_at=shared[1])
                else:
                    candidate.next_poll = time.monotonic() + max(self.limiter.spacing, RETRY_PAUSE)
                continue
            await asyncio.sleep(turn.slot.start_in)
            # The slot goes to the job most worth it when it comes (a poll that came back meanwhile may
            # have changed which one that is), unless it holds the candidate's lease, which only the
            # candidate's answer releases. The poll connects meanwhile, and sends on the turn.
            watch = candidate if turn.leased else (self._pick(time.monotonic()) or candidate)
            if watch.watchers and not watch.in_flight:
                watch.in_flight = True
                self._spawn(self._poll(watch, turn.slot))

    def _lease(self) -> float:
        """How long a poll holds its job for this process alone, where processes share a budget: about
        until its answer is shared, and no longer than a slow answer takes (a dead poller frees it soon)."""
        return min(self.session.settings.timeout, 5 * self.limiter.spacing) + self.limiter.spacing

    def _pick(self, now: float) -> _Watch | None:
        """The due job expected to finish first (the longest unpolled among equals)."""
        due = [watch for watch in self._watches.values() if not watch.in_flight and watch.next_poll <= now]
        return min(due, key=lambda watch: (watch.expected, watch.last_poll or 0.0), default=None)

    def _spawn(self, poll: Coroutine[Any, Any, None]) -> None:
        """Poll in a task of its own, so a slow answer holds up no other poll."""
        task = asyncio.create_task(poll)
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)

    async def _poll(self, watch: _Watch, slot: Slot) -> None:
        """Poll a job once, spending ``slot``: what comes back goes to its watchers and the job's estimate,
        and to the account's other processes, where they share a budget (so they need not poll it too)."""
        sent, answered_at = time.monotonic(), time.time()
        answer: Message | Exception
        try:
            try:
                answer = await self.session.send(
                    calls.message(watch.message_id, watch.expire_mins, watch.route_id), slot
                )
            except Exception as exc:  # the watchers' business: a transient error delays, any other ends it
                answer = exc
            if isinstance(answer, Message):
                await self.limiter.ashare(watch.message_id, _encoded(answer, answered_at))
            self._take(watch, sent, answer, answered_at=answered_at)
        finally:  # in flight until its answer is shared and planned: no second turn booked on its lease
            watch.in_flight = False
            self._wake.set()

    def _take(self, watch: _Watch, sent: float, answer: Message | Exception, *, answered_at: float) -> None:
        """What a poll sent at ``sent`` (or another process's, at ``answered_at``) answered: to the job's
        watchers, and into its estimate."""
        final = isinstance(answer, Exception) and not isinstance(answer, TRANSIENT_ERRORS)
        if isinstance(answer, Message):
            final = answer.status.is_terminal
            watch.answered_at = answered_at
            self._learn(watch, sent, answer)
        elif not final:
            watch.failures += 1
            base = max(RETRY_PAUSE, watch.min_interval, self.limiter.interval)
            pause = min(MAX_RETRY_PAUSE, base * 2 ** (watch.failures - 1))
            watch.next_poll = time.monotonic() + pause
            log.debug("NextLeg job %s: poll failed (%s); next in %.1f s", watch.message_id, answer, pause)
        if final:  # nothing more to learn: the watchers have the answer and leave
            key = (watch.message_id, watch.expire_mins, watch.route_id)
            if self._watches.get(key) is watch:
                del self._watches[key]
        for updates in watch.watchers:
            updates.put(answer)

    def _learn(self, watch: _Watch, sent: float, message: Message) -> None:
        """Take in what a poll sent at ``sent`` showed, then plan the job's next poll."""
        if message.status is MessageStatus.DONE and watch.first is not None and watch.last_poll is not None:
            progress, reached = watch.first
            finished = (watch.last_poll + sent) / 2
            self.durations.add((finished - reached) / time_left(progress))
        if message.status.is_terminal:
            return
        progress = message.progress or 0
        if progress != watch.progress:
            after = watch.registered if watch.last_poll is None else watch.last_poll
            if watch.progress == 0 and watch.last_poll is not None and watch.first is None:
                watch.first = (progress, (after + sent) / 2)
            watch.progress, watch.reached = progress, (after, sent)
        watch.last_poll = sent
        watch.failures = 0
        self._plan(watch)

    def _plan(self, watch: _Watch) -> None:
        """When to poll the job again, and how soon it is expected to finish (its place among the due)."""
        assert watch.last_poll is not None
        last = watch.last_poll
        typical = self.durations.typical
        remaining = (typical or PRIOR_SECONDS) * time_left(watch.progress)  # from `start` on
        if watch.progress:  # the job's clock: when it reached its current progress
            start_lo, start = watch.reached[0], sum(watch.reached) / 2
        else:  # not started when last seen, as far as a poll can tell
            start_lo = start = last
        overdue = last - (start + 1.5 * remaining)
        watch.expected = last + overdue if overdue > 0 else start + remaining
        gap = watch.min_interval
        if typical is not None:  # halfway to the earliest plausible finish; rarer the more overdue
            gap = max(gap, (start_lo + remaining / 2 - last) / 2, overdue / 4)
        watch.next_poll = last + gap


_durations: weakref.WeakKeyDictionary[RateLimiter, Durations] = weakref.WeakKeyDictionary()


def durations_for(limiter: RateLimiter) -> Durations:
    """
    What the schedulers of the account behind ``limiter`` learned of its durations, in this process.

    It outlives them: the account's next scheduler starts from it.
    """
    return _durations.setdefault(limiter, Durations())


def schedulers() -> list[PollScheduler]:
    """The running event loop's schedulers: one per account that has waits in it."""
    return [
        session.scheduler
        for session in loop_sessions().by_account.values()
        if session._scheduler is not None and session.scheduler.watched
    ]


def watch_message(
    conn_id: str,
    message_id: str,
    *,
    expire_mins: int | None = None,
    min_interval: float = 0.0,
    route_id: str | None = None,
) -> MessageWatch:
    """
    Wait on a message through its account's scheduler: ``async with watch_message(conn_id, id) as updates:``.

    Every poll's answer (``await updates.next(timeout)``) reaches every watcher of the message; leaving
    the block, however it is left, stops the watch. The waits of one connection in the loop share its
    account session (:func:`~airflow_provider_nextleg.hooks.session.account_session`), which reads the
    connection once, when the first of them starts.

    :param conn_id: the nextleg connection of the message.
    :param message_id: the job's message id.
    :param expire_mins: the ``expireMins`` of each poll; ``None`` takes the connection's.
    :param min_interval: the least time between two polls of this message.
    :param route_id: the submission's ``route_id``, through the load balancer or pay-per-use.
    """
    return MessageWatch(conn_id, message_id, expire_mins, min_interval, route_id)


class MessageWatch:
    """
    The ``async with`` block of :func:`watch_message`: a user of the account session, and a watcher of
    the message with its scheduler.

    A plain object rather than generators' context managers: a triggerer holds one per trigger, and each
    of those would add four objects for its garbage collector to trace.
    """

    __slots__ = (
        "_session",
        "_sessions",
        "_updates",
        "conn_id",
        "expire_mins",
        "message_id",
        "min_interval",
        "route_id",
    )

    def __init__(
        self,
        conn_id: str,
        message_id: str,
        expire_mins: int | None,
        min_interval: float,
        route_id: str | None,
    ) -> None:
        self.conn_id = conn_id
        self.message_id = message_id
        self.expire_mins = expire_mins
        self.min_interval = min_interval
        self.route_id = route_id

    async def __aenter__(self) -> Updates:
        self._sessions = loop_sessions()
        self._session = await self._sessions.join(self.conn_id)
        try:
            self._updates = self._session.scheduler.add(
                self.message_id,
                expire_mins=self.expire_mins,
                min_interval=self.min_interval,
                route_id=self.route_id,
            )
        except BaseException:
            await self._sessions.part(self.conn_id, self._session)
            raise
        return self._updates

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            self._session.scheduler.discard(self._updates)
        finally:
            await self._sessions.part(self.conn_id, self._session)


def _encoded(message: Message, answered_at: float) -> str:
    """A poll's answer as the account's other processes read it (:func:`_shared_answer`)."""
    fields = dataclasses.asdict(message)
    return json.dumps({"at": answered_at, "message": {**fields, "status": message.status.value}})


def _shared_answer(text: str | None, message_id: str, *, newer_than: float) -> tuple[Message, float] | None:
    """
    Another process's answer to a poll of ``message_id`` and when it was polled, if it is newer than
    ``newer_than`` and readable (a garbled one is ignored: the job is simply polled again).
    """
    if text is None:
        return None
    try:
        shared = json.loads(text)
        fields = dict(shared["message"])
        message = Message(
            **{
                **fields,
                "status": MessageStatus(fields["status"]),
                "buttons": tuple(fields["buttons"]),
                "image_urls": tuple(fields["image_urls"]),
            }
        )
        at = float(shared["at"])
    except (ValueError, KeyError, TypeError):
        return None
    return (message, at) if message.message_id == message_id and at > newer_than else None
