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
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: each process keeps its own state
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_STATE = struct.Struct("3d")  # the next free slot, the latest request, the end of a 429's pause


class Slot:
    """
    One booked turn to send a request of an account: taken from its limiter, spent by one request.

    The request that spends it waits for its turn (:meth:`wait` or :meth:`await_turn`), sends, and calls
    :meth:`release` when the answer (or the failure) is in. A caller that books a slot and decides only
    later what to send with it (the poll scheduler) passes the slot on to the request.

    :param limiter: the limiter it was booked from.
    :param due: when its turn comes (``time.time()``).
    """

    def __init__(self, limiter: RateLimiter, due: float) -> None:
        self.limiter = limiter
        self.due = due

    @property
    def delay(self) -> float:
        """Seconds until the booked turn (0 once it has come)."""
        return max(0.0, self.due - time.time())

    def wait(self) -> None:
        """Sleep until the turn has come and the limiter clears the request to go."""
        time.sleep(self.delay)
        while (wait := self.limiter.clear_to_send()) > 0:
            time.sleep(wait)

    async def await_turn(self) -> None:
        """The async face of :meth:`wait`."""
        await asyncio.sleep(self.delay)
        while (wait := await self.limiter.aclear_to_send()) > 0:
            await asyncio.sleep(wait)

    def release(self) -> None:
        """The request came back (answered or failed)."""
        self.limiter.answered()

    async def arelease(self) -> None:
        """The async face of :meth:`release`."""
        await self.limiter.aanswered()


class RateLimiter(abc.ABC):
    """
    The request budget of one account: who may send when.

    A request books a :class:`Slot` (:meth:`book`), waits for its turn, sends, and releases the slot;
    a 429 holds every caller of the account (:meth:`penalize`). Implementations keep the state where the
    callers that must share it can see it: :class:`HostRateLimiter` in a file of the host. The async
    faces run the sync ones by default, which suits state that is local and quick to reach.

    :param interval: seconds between two requests; 0 turns the limiter off.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def book(self) -> Slot:
        """Book the next free turn of the account; returns at once."""
        return Slot(self, time.time() + self.reserve())

    async def abook(self) -> Slot:
        """The async face of :meth:`book`."""
        return self.book()

    @abc.abstractmethod
    def reserve(self) -> float:
        """Book the next free slot and return how many seconds to wait before sending (0 if now)."""

    @abc.abstractmethod
    def clear_to_send(self) -> float:
        """Seconds still to wait before sending (0: send now, which counts as the latest request)."""

    @abc.abstractmethod
    def answered(self) -> None:
        """A request came back (answered or failed)."""

    @abc.abstractmethod
    def penalize(self, seconds: float) -> None:
        """
        Send nothing for ``seconds`` from now, for every caller of this account, booked or not.

        Used when the service answers 429 (its ``Retry-After``, or one interval when it gives none).

        :param seconds: how long the account must stay quiet.
        """

    async def aclear_to_send(self) -> float:
        """The async face of :meth:`clear_to_send`."""
        return self.clear_to_send()

    async def aanswered(self) -> None:
        """The async face of :meth:`answered`."""
        self.answered()

    async def apenalize(self, seconds: float) -> None:
        """The async face of :meth:`penalize`."""
        self.penalize(seconds)


class HostRateLimiter(RateLimiter):
    """
    Spaces requests ``interval`` seconds apart, in the order they ask, for every process of the host.

    Thread-safe: :meth:`reserve` books the next free slot under a lock and returns at once. A caller
    sleeps until its slot, waits while :meth:`clear_to_send` says so, sends, and calls :meth:`answered`
    when the answer (or the failure) comes. The service counts a request when it handles it, somewhere
    between its sending and its answer, so a request goes out no sooner than one interval after the
    previous one was answered: neither a caller woken late (a busy event loop, a loaded machine) nor a
    request slow to reach the service (a new connection) leaves the service less than an interval between
    two requests, which its sliding window would refuse.

    :param interval: seconds between two requests; 0 turns the limiter off.
    :param shared: the file through which the processes of the host share the state; ``None`` keeps it
        in this object alone.
    """

    def __init__(self, interval: float, shared: Path | None = None) -> None:
        super().__init__(interval)
        self.shared = shared
        self._next_free = 0.0  # when the next free slot is (time.time())
        self._latest = -math.inf  # when the latest request was sent or answered
        self._quiet_until = 0.0  # the end of the latest 429's pause
        self._lock = threading.Lock()
        self._opened: tuple[int, int] | None = None  # (pid, file descriptor) of the shared file

    def reserve(self) -> float:
        """Book the next free slot and return how many seconds to wait before sending (0 if now)."""
        with self._current() as now:
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def clear_to_send(self) -> float:
        """Seconds still to wait before sending (0: send now, which this counts as the latest request)."""
        with self._current() as now:
            ready = max(self._latest + self.interval, self._quiet_until)
            if now < ready:
                return ready - now
            self._latest = now
            return 0.0

    def answered(self) -> None:
        """A request came back (answered or failed): the next one goes no sooner than an interval from now."""
        with self._current() as now:
            self._latest = max(self._latest, now)

    def penalize(self, seconds: float) -> None:
        """Hold every caller of the account for ``seconds``, booked or not."""
        with self._current() as now:
            self._next_free = max(self._next_free, now + seconds)
            self._quiet_until = max(self._quiet_until, now + seconds)

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
                    self._next_free, self._latest, self._quiet_until = _sane(_STATE.unpack(saved), now)
                yield now
                os.pwrite(descriptor, _STATE.pack(self._next_free, self._latest, self._quiet_until), 0)
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


MAX_STATE_AHEAD = 3600.0
"""Furthest into the future a saved time may lie; a later one (or NaN, infinity) is a damaged file."""


def _sane(state: tuple[float, ...], now: float) -> tuple[float, float, float]:
    """
    The saved state, or a fresh one when any time in it cannot be right (not finite, far in the future).

    A file written by a process with an absurd interval, or damaged on disk, must not hold every process
    of the host for ever; a fresh state costs at most one early request, which the service's 429 corrects.
    """
    limit = now + MAX_STATE_AHEAD
    next_free, latest, quiet_until = state
    if all(-math.inf < value <= limit for value in (next_free, quiet_until)) and latest <= limit:
        return next_free, latest, quiet_until  # (comparisons with NaN are false; latest starts at -inf)
    log.warning("NextLeg's shared rate-limit state held impossible times: starting it afresh.")
    return 0.0, -math.inf, 0.0


_limiters: dict[tuple[str, str], HostRateLimiter] = {}
_limiters_lock = threading.Lock()


def account_key(base_url: str, token: str) -> tuple[str, str]:
    """
    Identify an account without keeping its token: the base URL and a SHA-256 digest of the token.

    :param base_url: the API's base URL.
    :param token: the API token.
    """
    return base_url, hashlib.sha256(token.encode()).hexdigest()


def rate_limiter_for(base_url: str, token: str, interval: float) -> HostRateLimiter:
    """
    The process's one limiter for the account behind ``token`` at ``base_url``, shared with the host.

    The limiter takes the ``interval`` of the latest caller, so a changed connection applies at once.

    :param base_url: the API's base URL.
    :param token: the API token (only its digest is kept).
    :param interval: seconds between two requests of this account.
    """
    key = account_key(base_url, token)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = HostRateLimiter(interval, shared=_shared_path(key))
        limiter.interval = interval
        return limiter


def _shared_path(key: tuple[str, str]) -> Path | None:
    """Where the processes of this host keep the account's limiter: a digest names it, no token."""
    if fcntl is None:
        return None
    name = hashlib.sha256("\n".join(key).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"airflow-provider-nextleg-{os.getuid()}" / f"{name}.limiter"
