"""A client-side rate limiter per NextLeg account, shared by every process of a host.

NextLeg allows one request every 3 seconds per account ("a sliding window rate limiting algorithm"),
whatever process or task sends it: the workers that submit jobs and the triggerer that polls them draw on
one budget. Every hook instance, sync or async, draws its request slots from its account's
:class:`RateLimiter` (see :func:`rate_limiter_for`), whose state lives in a small file of the user's
temporary directory, named by a digest of the account and locked for each change: the workers and the
triggerer of one machine (the LocalExecutor, or Celery workers beside a triggerer) space their requests
together, and a hundred triggers never keep timers of their own. Where no such file can be used, the
limiter keeps its state in its process.

Processes on different hosts cannot see each other's requests. There, bound the jobs submitted at once
with an Airflow pool (as many slots as the account runs jobs at once), and the 429s that remain are
absorbed by the hook, which pauses every caller of its host for the answer's ``Retry-After``.

The limiter only hands out times; the caller sleeps (``time.sleep`` or ``await asyncio.sleep``), so one
object serves threads and event loops alike. Times are read from the wall clock, which every process of
the host shares.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: each process keeps its own state
    fcntl = None  # type: ignore[assignment]

from airflow_provider_nextleg.redis_budget import RedisBudget
from airflow_provider_nextleg.redis_connection import BudgetUnavailable, RedisSettings

log = logging.getLogger(__name__)

_STATE = struct.Struct("4d")  # the next free slot, the end of a 429's hold, the margin, clean bookings

MARGIN_SHARE = 0.02
"""Share of the interval added to every spacing: sends leave a little early or arrive a little late."""
MARGIN_MIN = 0.01
"""Seconds added to every spacing besides :data:`MARGIN_SHARE` (timer and network jitter)."""
MARGIN_STEP = 0.05
"""Seconds a 429 adds to the learned margin: the service still saw two requests too close."""
MARGIN_CAP = 0.5
"""Largest learned margin, in seconds."""
CONNECT_LEAD = 0.5
"""Seconds before its turn an async request starts, so that its connection is up when the turn comes
and its first byte leaves on it (a new connection took up to 63 ms on this machine, a TLS one across the
internet takes longer); the request then waits out the rest of the turn (see ``hooks/transport.py``)."""
HOSTS_MARGIN = 0.05
"""Seconds added to every spacing when several hosts share a budget (:class:`SharedRateLimiter`): their
requests reach the service over paths of their own, sent by processes that a busy host wakes late, and
arrive tens of milliseconds off their turns (up to 35 ms on the multi-host test's 2 busy cores)."""
DECAY_AFTER = 200
"""Bookings without a 429 after which the learned margin halves."""
REBOOKINGS = 3
"""Most turns a request books anew after waking too late for one (a starved process sends after that)."""


class Slot:
    """
    One booked turn to send a request of an account: taken from its limiter, spent by one request.

    The request that spends it waits for its turn (:meth:`wait` or :meth:`await_turn`) and sends. A
    caller that books a slot and decides only later what to send with it (the poll scheduler) passes the
    slot on to the request.

    :param limiter: the limiter it was booked from.
    :param due: when its turn comes (``time.time()``).
    :param confirmed: whether the booking stands as it is (no confirmation right before sending).
    """

    def __init__(self, limiter: RateLimiter, due: float, *, confirmed: bool = False) -> None:
        self.limiter = limiter
        self.due = due
        self.confirmed = confirmed

    @property
    def delay(self) -> float:
        """Seconds until the booked turn (0 once it has come)."""
        return max(0.0, self.due - time.time())

    @property
    def start_in(self) -> float:
        """Seconds until a request on this turn should start connecting: :data:`CONNECT_LEAD` ahead, or
        half a spacing where that is shorter (a poll's job is chosen then, and the closer to its turn the
        better the choice)."""
        return max(0.0, self.delay - min(CONNECT_LEAD, self.limiter.spacing / 2))

    @property
    def late(self) -> bool:
        """
        Whether the turn has passed by more than half the spacing's margin: the caller woke too late (a
        busy loop, a starved process), so a request sent now could reach the service too close to the
        next turn, which another caller holds.
        """
        margin = self.limiter.spacing - self.limiter.interval
        return margin > 0 and time.time() - self.due > margin / 2

    def wait(self) -> None:
        """Sleep until the turn has come (a turn missed by waking late is booked anew, at the back) and
        the limiter confirms it (a 429 since may move it)."""
        time.sleep(self.delay)
        for _ in range(REBOOKINGS):
            if not self.late:
                break
            self._take(self.limiter.book())
            time.sleep(self.delay)
        while not self.confirmed and (wait := self.limiter.confirm(self)) > 0:
            time.sleep(wait)

    async def await_turn(self) -> None:
        """The async face of :meth:`wait`."""
        await asyncio.sleep(self.delay)
        for _ in range(REBOOKINGS):
            if not self.late:
                break
            self._take(await self.limiter.abook())
            await asyncio.sleep(self.delay)
        while not self.confirmed and (wait := await self.limiter.aconfirm(self)) > 0:
            await asyncio.sleep(wait)

    def _take(self, other: Slot) -> None:
        self.limiter, self.due, self.confirmed = other.limiter, other.due, other.confirmed


@dataclass(frozen=True)
class PollTurn:
    """
    What a poll of one message may do now (:meth:`RateLimiter.abook_poll`): spend ``slot``; or, without a
    slot, take ``shared``, the answer another process of the account just had; or, with neither, leave
    the job to the process that is polling it now. ``leased``: the slot came with the message's poll
    lease (a budget shared in Redis), so it must poll that message, whose lease its answer releases.
    """

    slot: Slot | None = None
    shared: str | None = None
    leased: bool = False


class RateLimiter(abc.ABC):
    """
    The request budget of one account: who may send when.

    Requests are paced by when they are sent, as the service's sliding window counts them when they
    arrive: each request books a :class:`Slot` (:meth:`book`) at least :attr:`spacing` after the previous
    one, waits for it, and confirms it right before sending (:meth:`confirm`: a 429 seen since moves it
    past the hold). A 429 holds every caller of the account for its ``Retry-After`` and widens the
    spacing by a learned margin (:meth:`penalize`). Implementations keep the state where the callers that
    must share it can see it: :class:`HostRateLimiter` in a file of the host, :class:`SharedRateLimiter`
    in Redis. The async faces run the sync ones by default, which suits state that is local.

    :param interval: seconds between two requests; 0 turns the limiter off.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval

    @property
    def spacing(self) -> float:
        """The least time between two sends: the interval and a small fixed margin (none when off)."""
        return self.interval * (1 + MARGIN_SHARE) + MARGIN_MIN if self.interval > 0 else 0.0

    @abc.abstractmethod
    def book(self) -> Slot:
        """Book the next free turn of the account; returns at once."""

    @abc.abstractmethod
    def confirm(self, slot: Slot) -> float:
        """
        Right before sending on ``slot``: 0 to send now, or the seconds to wait for it, moved past a hold.

        :param slot: a slot this limiter booked.
        """

    @abc.abstractmethod
    def penalize(self, seconds: float) -> None:
        """
        Send nothing for ``seconds`` from now, for every caller of this account, booked or not.

        Used when the service answers 429 (its ``Retry-After``, or one interval when it gives none).

        :param seconds: how long the account must stay quiet.
        """

    async def abook(self) -> Slot:
        """The async face of :meth:`book`."""
        return self.book()

    async def abook_poll(self, message_id: str, *, lease: float) -> PollTurn:
        """
        A turn for a poll of ``message_id``: a slot, unless another process of the account is polling it
        or has just shared its answer (:class:`SharedRateLimiter`; a host's pollers share one scheduler).

        :param message_id: the message to poll.
        :param lease: the most seconds the poll may hold the message for itself.
        """
        return PollTurn(slot=await self.abook())

    async def ashare(self, message_id: str, answer: str) -> None:
        """
        Let the account's other processes read a poll's answer for a moment, instead of polling again.

        :param message_id: the message polled.
        :param answer: the answer, encoded by the poll scheduler.
        """
        return  # a host's pollers share one scheduler per account: nothing to share but in Redis

    async def aconfirm(self, slot: Slot) -> float:
        """The async face of :meth:`confirm`."""
        return self.confirm(slot)

    async def apenalize(self, seconds: float) -> None:
        """The async face of :meth:`penalize`."""
        self.penalize(seconds)


class HostRateLimiter(RateLimiter):
    """
    Spaces the requests of an account on this host by :attr:`spacing`, in the order they ask, for every
    process of the host. Thread-safe: each change happens under a lock (and the shared file's lock).

    :param interval: seconds between two requests; 0 turns the limiter off.
    :param shared: the file through which the processes of the host share the state; ``None`` keeps it
        in this object alone.
    """

    def __init__(self, interval: float, shared: Path | None = None) -> None:
        super().__init__(interval)
        self.shared = shared
        self._next_free = 0.0  # when the next free slot is (time.time())
        self._quiet_until = 0.0  # the end of the latest 429's hold
        self._margin = 0.0  # learned from 429s
        self._clean = 0.0  # bookings since the latest 429 or halving of the margin
        self._lock = threading.Lock()
        self._opened: tuple[int, int] | None = None  # (pid, file descriptor) of the shared file

    def book(self) -> Slot:
        """Book the next free slot: after the previous one by the spacing, and after any hold."""
        with self._current() as now:
            return Slot(self, self._book(now))

    def confirm(self, slot: Slot) -> float:
        """0 unless a hold covers now; then the slot moves to a new one after it."""
        with self._current() as now:
            if now >= self._quiet_until:
                return 0.0
            slot.due = self._book(now)
            return slot.due - now

    def penalize(self, seconds: float) -> None:
        """Hold every caller of the account for ``seconds``, booked or not, and widen the margin."""
        with self._current() as now:
            self._quiet_until = max(self._quiet_until, now + seconds)
            self._next_free = max(self._next_free, self._quiet_until)
            self._margin = min(self._margin + MARGIN_STEP, MARGIN_CAP)
            self._clean = 0.0

    @property
    def margin(self) -> float:
        """The margin learned from 429s, in seconds (added to :attr:`spacing`)."""
        with self._current():
            return self._margin

    def next_turn_in(self) -> float:
        """Seconds until this host's next free turn (0: now), as its own pacing stands."""
        with self._current() as now:
            return max(self._next_free, self._quiet_until, now) - now

    def follow(self, due: float) -> None:
        """
        Note a request this host sent on a turn booked elsewhere (in Redis), so that, should this limiter
        have to stand in, it starts from the host's own latest send instead of from nothing.

        :param due: when that request's turn was (``time.time()``).
        """
        with self._current():
            self._next_free = max(self._next_free, due + self.spacing + self._margin)

    def _book(self, now: float) -> float:
        self._clean += 1
        if self._clean >= DECAY_AFTER:
            self._margin, self._clean = (self._margin / 2 if self._margin >= 0.001 else 0.0), 0.0
        slot = max(now, self._next_free, self._quiet_until)
        self._next_free = slot + (self.spacing + self._margin if self.interval > 0 else 0.0)
        return slot

    @contextlib.contextmanager
    def _current(self) -> Iterator[float]:
        """
        Hold the state, up to date with the other processes' changes, and yield the time; the changes
        made meanwhile are saved for them.
        """
        with self._lock:
            descriptor = self._shared_file()
            if descriptor is None:
                yield time.time()
                return
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                saved = os.pread(descriptor, _STATE.size, 0)
                now = time.time()
                if len(saved) == _STATE.size:
                    state = _sane(_STATE.unpack(saved), now)
                    self._next_free, self._quiet_until, self._margin, self._clean = state
                yield now
                state = (self._next_free, self._quiet_until, self._margin, self._clean)
                os.pwrite(descriptor, _STATE.pack(*state), 0)
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _shared_file(self) -> int | None:
        """The shared file, opened once per process (a forked child opens its own, for its own lock)."""
        if self.shared is None or fcntl is None:
            return None
        if self._opened is None or self._opened[0] != os.getpid():
            try:
                self.shared.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._opened = (os.getpid(), os.open(self.shared, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                log.warning(
                    "Cannot share NextLeg's rate limit through %s (%s): pacing this process alone.",
                    self.shared,
                    exc,
                )
                self.shared = None
                return None
        return self._opened[1]


class Reconnect:
    """
    When to try Redis again after it failed, and one warning per outage.

    ``if policy.should_try(): try: wait = budget.book(i); policy.succeeded() except BudgetUnavailable as
    e: policy.failed(e); wait = host.reserve()`` — after a failure, :meth:`should_try` is ``False`` for
    ``retry_every`` seconds, so a dead Redis costs one timeout per period, not one per request. The first
    failure of an outage logs a warning naming the connection; the first success after it, an info.
    Thread-safe.

    :param conn_id: the redis connection, for the messages.
    :param retry_every: seconds between two tries while Redis is down.
    :param clock: monotonic seconds (a test may move it).
    """

    def __init__(
        self, conn_id: str, *, retry_every: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.conn_id = conn_id
        self.retry_every = retry_every
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def down(self) -> bool:
        """Whether an outage is going on (the latest try failed)."""
        return self._down_since is not None

    def should_try(self) -> bool:
        """Whether to use Redis now: always while it answers, once per ``retry_every`` while it is down."""
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_every  # one caller tries; the others keep to the host
            return True

    def failed(self, error: BaseException | None = None) -> None:
        """Redis failed: pace on the host until the next try; a warning if this starts an outage."""
        with self._lock:
            now = self._clock()
            self._next_try = now + self.retry_every
            if self._down_since is not None:
                return
            self._down_since = now
        log.warning(
            "Redis connection %r unreachable (%s): pacing on this host only until it answers; "
            "trying again every %g s.",
            self.conn_id,
            getattr(error, "cause", None) or error or "no answer",
            self.retry_every,
        )

    def succeeded(self) -> None:
        """Redis answered: an info if that ends an outage."""
        with self._lock:
            if self._down_since is None:
                return
            outage = self._clock() - self._down_since
            self._down_since = None
        log.info(
            "Redis connection %r answers again after %.0f s: pacing with every host of the account.",
            self.conn_id,
            outage,
        )


class SharedRateLimiter(RateLimiter):
    """
    The account's budget held in Redis, for every process on every host that uses the account; the
    host's limiter stands in while Redis does not answer.

    Each request costs at most two round trips to Redis: the booking and the confirmation right before
    sending (a 429 adds a third, the hold). When Redis fails, the request is paced by the host limiter
    instead, one warning says so (:class:`Reconnect`), and Redis
    is tried again every few seconds; no request waits for Redis longer than its short timeout.

    :param interval: seconds between two requests.
    :param budget: the account's budget in Redis.
    :param host: the host's limiter of the account, for when Redis does not answer.
    """

    def __init__(self, interval: float, budget: RedisBudget, host: HostRateLimiter) -> None:
        super().__init__(interval)
        self.budget = budget
        self.host = host
        self.reconnect = Reconnect(budget.settings.conn_id)

    @property
    def spacing(self) -> float:
        """The host's spacing and :data:`HOSTS_MARGIN`: requests from several hosts arrive less exactly
        on their turns than those of one."""
        return super().spacing + HOSTS_MARGIN if self.interval > 0 else 0.0

    def book(self) -> Slot:
        """Book the next turn in Redis, or on the host while Redis does not answer."""
        if self.reconnect.should_try():
            try:
                wait = self.budget.book(self.spacing, not_before=self._rejoining())
            except BudgetUnavailable as exc:
                self.reconnect.failed(exc)
            else:
                self.reconnect.succeeded()
                return self._booked(time.time() + wait)
        return self.host.book()

    async def abook(self) -> Slot:
        """The async face of :meth:`book`."""
        if self.reconnect.should_try():
            try:
                wait = await self.budget.abook(self.spacing, not_before=self._rejoining())
            except BudgetUnavailable as exc:
                self.reconnect.failed(exc)
            else:
                self.reconnect.succeeded()
                return self._booked(time.time() + wait)
        return await self.host.abook()

    async def abook_poll(self, message_id: str, *, lease: float) -> PollTurn:
        """In one round trip: another process's fresh answer, or the message's lease and a slot (a poll
        needs no confirmation: a 429 on a poll loses nothing but the poll), or neither."""
        if self.reconnect.should_try():
            try:
                booking = await self.budget.abook_poll(
                    message_id, self.spacing, lease, not_before=self._rejoining()
                )
            except BudgetUnavailable as exc:
                self.reconnect.failed(exc)
            else:
                self.reconnect.succeeded()
                if booking.wait is None:
                    return PollTurn(shared=booking.answer)
                return PollTurn(slot=self._booked(time.time() + booking.wait, confirmed=True), leased=True)
        return PollTurn(slot=await self.host.abook())

    async def ashare(self, message_id: str, answer: str) -> None:
        """Share the answer for most of a spacing (this process's own next poll of it comes later), and
        end the message's lease."""
        if self.reconnect.down:
            return
        try:
            await self.budget.aremember(message_id, answer, max(0.05, 0.8 * self.spacing))
        except BudgetUnavailable as exc:
            self.reconnect.failed(exc)

    def confirm(self, slot: Slot) -> float:
        """Confirm in Redis; a Redis that fails meanwhile hands the slot to the host limiter."""
        try:
            return self.budget.confirm(self.spacing)
        except BudgetUnavailable as exc:
            self.reconnect.failed(exc)
            return self._on_host(slot)

    async def aconfirm(self, slot: Slot) -> float:
        """The async face of :meth:`confirm`."""
        try:
            return await self.budget.aconfirm(self.spacing)
        except BudgetUnavailable as exc:
            self.reconnect.failed(exc)
            return self._on_host(slot)

    def penalize(self, seconds: float) -> None:
        """Hold every caller on every host (and on this one, should Redis fail before the hold ends)."""
        self.host.penalize(seconds)
        if self.reconnect.should_try():
            try:
                self.budget.hold(seconds)
            except BudgetUnavailable as exc:
                self.reconnect.failed(exc)

    async def apenalize(self, seconds: float) -> None:
        """The async face of :meth:`penalize`."""
        self.host.penalize(seconds)
        if self.reconnect.should_try():
            try:
                await self.budget.ahold(seconds)
            except BudgetUnavailable as exc:
                self.reconnect.failed(exc)

    def _rejoining(self) -> float:
        """
        Back from an outage, the earliest a Redis turn may be: this host's own next turn, for it paced
        alone meanwhile and Redis (perhaps restarted empty) has not seen those requests. 0 otherwise:
        the host follows Redis then, and its own margin may be older than the one in Redis.
        """
        return self.host.next_turn_in() if self.reconnect.down else 0.0

    def _booked(self, due: float, *, confirmed: bool = False) -> Slot:
        """A slot booked in Redis, which the host limiter follows (see :meth:`HostRateLimiter.follow`)."""
        self.host.follow(due)
        return Slot(self, due, confirmed=confirmed)

    def _on_host(self, slot: Slot) -> float:
        """Move a slot booked in Redis to the host limiter: the seconds to wait for its new turn there."""
        moved = self.host.book()
        slot.limiter, slot.due = self.host, moved.due
        return moved.delay


MAX_STATE_AHEAD = 3600.0
"""Furthest into the future a saved time may lie; a later one (or NaN, infinity) is a damaged file."""


def _sane(state: tuple[float, ...], now: float) -> tuple[float, float, float, float]:
    """
    The saved state, or a fresh one when a value in it cannot be right (not finite, far in the future).

    A file written by a process with an absurd interval, or damaged on disk, must not hold every process
    of the host for ever; a fresh state costs at most one early request, which the service's 429 corrects.
    """
    next_free, quiet_until, margin, clean = state
    limit = now + MAX_STATE_AHEAD
    # Comparisons with NaN are false, so NaN fails every check.
    if (
        all(0 <= value <= limit for value in (next_free, quiet_until))
        and 0 <= margin <= MARGIN_CAP
        and clean >= 0
    ):
        return next_free, quiet_until, margin, clean
    log.warning("NextLeg's shared rate-limit state held impossible values: starting it afresh.")
    return 0.0, 0.0, 0.0, 0.0


_host_limiters: dict[tuple[str, str], HostRateLimiter] = {}
_shared_limiters: dict[tuple[tuple[str, str], str], SharedRateLimiter] = {}
_limiters_lock = threading.Lock()


def account_key(base_url: str, token: str) -> tuple[str, str]:
    """
    Identify an account without keeping its token: the base URL and a SHA-256 digest of the token.

    :param base_url: the API's base URL.
    :param token: the API token.
    """
    return base_url, hashlib.sha256(token.encode()).hexdigest()


def rate_limiter_for(
    base_url: str, token: str, interval: float, redis: RedisSettings | None = None
) -> RateLimiter:
    """
    The process's one limiter for the account behind ``token`` at ``base_url``: shared with the host,
    or, given a redis connection, with every host.

    The limiter takes the ``interval`` of the latest caller, so a changed connection applies at once.

    :param base_url: the API's base URL.
    :param token: the API token (only its digest is kept).
    :param interval: seconds between two requests of this account.
    :param redis: the redis connection holding the account's budget for every host, if any.
    """
    account = account_key(base_url, token)
    with _limiters_lock:
        host = _host_limiters.get(account)
        if host is None:
            host = _host_limiters[account] = HostRateLimiter(interval, shared=_shared_path(account))
        host.interval = interval
        if redis is None:
            return host
        key = (account, redis.conn_id)
        limiter = _shared_limiters.get(key)
        if limiter is None:
            budget = RedisBudget(redis, "\n".join(account), decay_after=DECAY_AFTER)
            limiter = _shared_limiters[key] = SharedRateLimiter(interval, budget, host)
        limiter.interval = interval
        return limiter


def _shared_path(key: tuple[str, str]) -> Path | None:
    """Where the processes of this host keep the account's limiter: a digest names it, no token."""
    if fcntl is None:
        return None
    name = hashlib.sha256("\n".join(key).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"airflow-provider-nextleg-{os.getuid()}" / f"{name}.limiter"
