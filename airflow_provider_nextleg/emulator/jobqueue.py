"""The account's queue: its concurrency slots, the jobs waiting for one, refusals, and the usage it adds up.

Slots are handed out in submission order when a job is submitted, not when one frees: a job's start is
the moment the first slot frees after every earlier job took one. So the queue holds numbers only (when
each slot frees, when each waiting job starts), never a task.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from airflow_provider_nextleg.emulator.settings import EmulatorSettings


@dataclass
class Usage:
    """Image jobs of one kind of GPU time (fast or relaxed) and the simulated seconds they took."""

    images: int = 0
    seconds: float = 0.0

    @property
    def hours(self) -> float:
        return self.seconds / 3600


class AccountQueue:
    """FIFO concurrency slots, the waiting line in front of them, and fast and relaxed usage.

    It reads ``concurrency``, ``queue_length`` and ``fast_hours`` from the live settings on every
    submission, so changes at run time apply to the next job.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        #: per concurrency slot, when it frees (a heap).
        self._slots: list[float] = []
        #: start time and mode, in order, of the jobs queued when submitted; those started are dropped lazily.
        self._waiting: deque[tuple[float, str]] = deque()
        self.fast = Usage()
        self.relax = Usage()

    def refusal(self, now: float, mode: str) -> str | None:
        """Why an image job in ``mode`` cannot even queue: the queue is full, or fast hours are used up."""
        while len(self._slots) < self.settings.concurrency:
            heapq.heappush(self._slots, now)
        while len(self._slots) > self.settings.concurrency:
            heapq.heappop(self._slots)
        while self._waiting and self._waiting[0][0] <= now:
            self._waiting.popleft()
        if self._slots[0] > now and len(self._waiting) >= self.settings.queue_length:
            return "QUEUE_FULL"
        if mode != "Relax" and self.fast.seconds >= self.settings.fast_hours * 3600:
            return "NO_FAST_HOURS"
        return None

    def take_slot(self, now: float, mode: str, duration: float) -> float:
        """Give an admitted job the first slot that frees, book its usage, and return when it starts.

        Call :meth:`refusal` first: it fits the slots to the current concurrency.
        """
        start = max(now, heapq.heappop(self._slots))
        heapq.heappush(self._slots, start + duration)
        if start > now:
            self._waiting.append((start, mode))
        usage = self.relax if mode == "Relax" else self.fast
        usage.images += 1
        usage.seconds += duration
        return start

    def report(self, now: float) -> dict[str, str]:
        """The usage and queue lines of ``/v2/info``, worded as the service words them."""
        total = self.settings.fast_hours
        remaining = max(0.0, total - self.fast.hours)
        percent = 100 * remaining / total if total else 0.0
        lifetime_hours = (self.fast.seconds + self.relax.seconds) / 3600
        queued = [mode for start, mode in self._waiting if start > now]
        return {
            "Fast Time Remaining": f"{remaining:.2f}/{total:.1f} hours ({percent:.2f}%)",
            "Lifetime Usage": f"{self.fast.images + self.relax.images} images ({lifetime_hours:.2f} hours)",
            "Relaxed Usage": f"{self.relax.images} images ({self.relax.hours:.2f} hours)",
            "Queued Jobs (fast)": str(sum(mode != "Relax" for mode in queued)),
            "Queued Jobs (relax)": str(queued.count("Relax")),
        }
