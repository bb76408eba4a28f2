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


class RateLimiter:
    """
    Spaces requests ``interval`` seconds apart, in the order they ask.

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
        self.interval = interval
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
        """
        Send nothing for ``seconds`` from now, for every caller of this account, booked or not.

        Used when the service answers 429 (its ``Retry-After``, or one interval when it gives none).

        :param seconds: how long the account must stay quiet.
        """
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
                if len(saved) == _STATE.size:
                    self._next_free, self._latest, self._quiet_until = _STATE.unpack(saved)
                yield time.time()
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


_limiters: dict[tuple[str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def account_key(base_url: str, token: str) -> tuple[str, str]:
    """
    Identify an account without keeping its token: the base URL and a SHA-256 digest of the token.

    :param base_url: the API's base URL.
    :param token: the API token.
    """
    return base_url, hashlib.sha256(token.encode()).hexdigest()


def rate_limiter_for(base_url: str, token: str, interval: float) -> RateLimiter:
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
            limiter = _limiters[key] = RateLimiter(interval, shared=_shared_path(key))
        limiter.interval = interval
        return limiter


def _shared_path(key: tuple[str, str]) -> Path | None:
    """Where the processes of this host keep the account's limiter: a digest names it, no token."""
    if fcntl is None:
        return None
    name = hashlib.sha256("\n".join(key).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"airflow-provider-nextleg-{os.getuid()}" / f"{name}.limiter"
