"""The account-wide sliding-window rate limit ("one request every 3 seconds")."""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """At most ``limit`` admitted requests in any ``window`` of simulated seconds.

    Only admitted requests enter the window: a client refused with 429 does not push its own next slot
    further away, which is what a sliding-window limiter in front of a service does.
    """

    def __init__(self) -> None:
        self._admitted: deque[float] = deque()

    def admit(self, now: float, limit: int, window: float) -> float | None:
        """Admit a request at ``now``, or return the simulated seconds until the full window frees a slot."""
        while self._admitted and self._admitted[0] <= now - window:
            self._admitted.popleft()
        if len(self._admitted) >= limit:
            return self._admitted[0] + window - now
        self._admitted.append(now)
        return None


def retry_after(real_seconds: float, scaled: bool) -> str:
    """A ``Retry-After`` value: whole seconds rounded up, or a decimal when time runs scaled.

    Integer seconds are what the header's grammar allows; a time-scaled emulator needs sub-second waits,
    which clients that parse the header as a float honour (``0.03``).
    """
    if not scaled:
        return str(max(1, math.ceil(real_seconds)))
    return f"{max(0.001, math.ceil(real_seconds * 1000) / 1000):g}"
