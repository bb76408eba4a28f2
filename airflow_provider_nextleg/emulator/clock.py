"""The simulated clock every job, delay and rate-limit window is measured on."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class SimClock:
    """Simulated seconds since the emulator started: real monotonic time divided by the time scale.

    Job state is computed from these timestamps when asked for, so the clock is all the emulator needs to
    run thousands of jobs without a task per job. Changing the scale at run time re-anchors the clock, so
    simulated time never jumps.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._real_anchor = time.monotonic()
        self._sim_anchor = 0.0
        self._wall_offset = time.time() - self._real_anchor

    def now(self) -> float:
        """The current simulated time, in seconds."""
        return self._sim_anchor + (time.monotonic() - self._real_anchor) / self.scale

    def rescale(self, scale: float) -> None:
        """Change how fast simulated time runs from now on."""
        self._sim_anchor, self._real_anchor = self.now(), time.monotonic()
        self.scale = scale

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time last in real time."""
        return sim_seconds * self.scale

    def wall(self, sim_time: float) -> datetime:
        """The real date and time at which the simulated clock reads (or will read) ``sim_time``."""
        real = self._real_anchor + (sim_time - self._sim_anchor) * self.scale
        return datetime.fromtimestamp(self._wall_offset + real, tz=timezone.utc)


def iso(moment: datetime) -> str:
    """A timestamp the way the service writes them: ``2023-04-04T13:07:01.927Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
