"""A process-wide, client-side rate limiter per NextLeg account.

NextLeg allows one request every 3 seconds per account ("a sliding window rate limiting algorithm"),
whatever process or task sends it. Every hook instance in a process, sync or async, draws its request
slots from the one :class:`RateLimiter` of its account (see :func:`rate_limiter_for`), so a hundred
triggers polling through one token space their requests instead of each keeping its own timer. The
limiter only hands out times; the caller sleeps (``time.sleep`` or ``await asyncio.sleep``), so one
object serves threads and event loops alike.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time


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
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next_free = 0.0  # time.monotonic() of the next free slot
        self._latest = -math.inf  # when the latest request was sent or answered
        self._quiet_until = 0.0  # the end of the latest 429's pause
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Book the next free slot and return how many seconds to wait before sending (0 if now)."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def clear_to_send(self) -> float:
        """Seconds still to wait before sending (0: send now, which this counts as the latest request)."""
        with self._lock:
            now = time.monotonic()
            ready = max(self._latest + self.interval, self._quiet_until)
            if now < ready:
                return ready - now
            self._latest = now
            return 0.0

    def answered(self) -> None:
        """A request came back (answered or failed): the next one goes no sooner than an interval from now."""
        with self._lock:
            self._latest = max(self._latest, time.monotonic())

    def penalize(self, seconds: float) -> None:
        """
        Send nothing for ``seconds`` from now, for every caller of this account, booked or not.

        Used when the service answers 429 (its ``Retry-After``, or one interval when it gives none).

        :param seconds: how long the account must stay quiet.
        """
        with self._lock:
            until = time.monotonic() + seconds
            self._next_free = max(self._next_free, until)
            self._quiet_until = max(self._quiet_until, until)


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
    The process's one limiter for the account behind ``token`` at ``base_url``.

    The limiter takes the ``interval`` of the latest caller, so a changed connection applies at once.

    :param base_url: the API's base URL.
    :param token: the API token (only its digest is kept).
    :param interval: seconds between two requests of this account.
    """
    key = account_key(base_url, token)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RateLimiter(interval)
        limiter.interval = interval
        return limiter
