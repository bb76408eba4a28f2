"""What the benchmarks' scenarios share: the emulator process, the connection, the counts, the report.

Every scenario module (``waiting.py``, the entry point, and ``hosts.py``) starts its emulators with
:func:`emulator`, points the provider at them with :func:`use_emulator`, runs each measurement in a
process of its own through :func:`measure` (which runs ``waiting.py --child``), and prints Markdown
tables with :func:`table` and :func:`verdict`.
"""

from __future__ import annotations

import heapq
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil

from airflow_provider_nextleg.emulator import EmulatorAdmin
from airflow_provider_nextleg.emulator.settings import DEFAULT_TOKEN

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "waiting.py"
"""The script every measurement process runs (``--child <scenario>``)."""
WINDOW = 3.0
"""The documented rate limit: one request every 3 API seconds per account."""
CONCURRENCY = 12
MIN_DURATION, MAX_DURATION = 30.0, 75.0
BURST_JOBS = 60
HEADERS = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
Figures = dict[str, Any]


# --- the emulator and what it counted -------------------------------------------------------------------


@contextmanager
def emulator(time_scale: float, *flags: str) -> Iterator[EmulatorAdmin]:
    """
    A ``nextleg-emulator`` process on a free port of 127.0.0.1, with the documented rate limit.

    It has answered a submission and a poll before it is handed over, then been reset: its first request
    takes it tens of milliseconds (imports, caches), which would shift when it counts the next one.
    """
    command = shutil.which("nextleg-emulator", path=str(Path(sys.executable).parent)) or "nextleg-emulator"
    process = subprocess.Popen(
        [command, "--port", "0", "--time-scale", str(time_scale), "--log-level", "warning", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    admin = EmulatorAdmin(process.stdout.readline().split()[4])
    try:
        with httpx.Client(base_url=admin.base_url, headers=HEADERS, trust_env=False) as client:
            for _ in range(500):
                with suppress(httpx.TransportError):
                    message_id = client.post("/v2/imagine", json={"msg": "warm-up"}).json()["messageId"]
                    break
                time.sleep(0.01)
            time.sleep(WINDOW * time_scale)
            client.get(f"/v2/message/{message_id}")
        admin.reset()
        yield admin
    finally:
        admin.close()
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def webhook_receiver(inbox_temp: Path) -> Iterator[str]:
    """
    A ``nextleg-webhook-receiver`` process on a free port of 127.0.0.1, reading the connections of this
    process's environment (set them first); its URL, the connections' ``webhook_url``.

    :param inbox_temp: its ``TMPDIR``, under which its local inbox is (the waiters' must be the same).

    It has looked up ``nextleg_default`` once (a forged webhook, refused) before it is handed over: its
    first lookup imports Airflow, seconds that would otherwise delay the burst's first webhook.
    """
    command = shutil.which("nextleg-webhook-receiver", path=str(Path(sys.executable).parent))
    process = subprocess.Popen(
        [command or "nextleg-webhook-receiver", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(inbox_temp)},
    )
    assert process.stdout is not None
    try:
        url = process.stdout.readline().split()[-1]
        forged = f"{url}/webhook/nextleg_default/{'k' * 24}?token={'A' * 43}"
        for _ in range(500):
            with suppress(httpx.TransportError):
                if httpx.post(forged, json={}, timeout=30, trust_env=False).status_code == 403:
                    break
            time.sleep(0.01)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def job_flags(queue: int = 100, latency: float = 0.0, time_scale: float = 1.0) -> tuple[str, ...]:
    """
    Fast jobs of 30 to 75 s on an account running 12 at once, drawn from one seed in every run.

    :param latency: API seconds every API answer is held back (the emulator's ``--latency`` takes real
        seconds: this times ``time_scale``).
    """
    flags = (
        *("--concurrency", str(CONCURRENCY), "--queue-length", str(queue)),
        *("--min-duration", str(MIN_DURATION), "--max-duration", str(MAX_DURATION), "--seed", "7"),
    )
    return (*flags, "--latency", str(latency * time_scale)) if latency else flags


def use_emulator(
    admin: EmulatorAdmin, time_scale: float, redis_conn_id: str | None = None, **webhooks: str
) -> str:
    """
    Point ``nextleg_default`` at the emulator, paced at one request per (scaled) window; its JSON.

    :param redis_conn_id: the redis connection holding the account's budget for every host, if any.
    :param webhooks: ``webhook_url`` and ``webhook_secret``, for jobs completing by webhook.
    """
    extra: dict[str, Any] = {"rate_limit_interval": WINDOW * time_scale, "timeout": 30.0, **webhooks}
    if redis_conn_id:
        extra["redis_conn_id"] = redis_conn_id
    os.environ["AIRFLOW_CONN_NEXTLEG_DEFAULT"] = json.dumps(
        {"conn_type": "nextleg", "host": admin.base_url, "password": DEFAULT_TOKEN, "extra": extra}
    )
    return os.environ["AIRFLOW_CONN_NEXTLEG_DEFAULT"]


def counted(admin: EmulatorAdmin) -> Figures:
    """What the emulator counted: requests, polls, 429s."""
    counters = admin.counters()
    return {
        "requests": sum(counters["requests"].values()),
        "polls": counters["requests"].get("GET /v2/message", 0),
        "rate_limited": sum(counters["rate_limited"].values()),
    }


def counted_apart(base_url: str) -> Figures:
    """What the emulator counted, asked on a connection of its own that is closed at once."""
    admin = EmulatorAdmin(base_url)
    try:
        return counted(admin)
    finally:
        admin.close()


def lower_bound(
    jobs: list[Figures], time_scale: float, count: int = BURST_JOBS, requests_per_job: int = 2
) -> dict[str, float]:
    """
    A burst's lower bounds in API seconds: the jobs' requests at the rate limit (two per job when a poll
    finds each done, one when a webhook brings it), and the account's concurrency working through the
    jobs' durations (or the longest job, if longer).

    ``bound_schedule`` joins the two for one request per job: the account running these jobs (their
    durations, in submission order, first come first served on its concurrency) were the k-th submitted
    k intervals after the first, the soonest the rate limit allows. No client does better: a later
    submission never starts a job sooner.
    """
    durations = [(job["finished"] - job["started"]) / time_scale for job in jobs if job.get("finished")]
    free = [0.0] * CONCURRENCY  # when each of the account's slots is free next
    for number, duration in enumerate(durations):
        heapq.heapreplace(free, max(free[0], number * WINDOW) + duration)
    return {
        "bound_rate": requests_per_job * count * WINDOW,
        "bound_concurrency": max(sum(durations) / CONCURRENCY, max(durations, default=0.0)),
        "bound_schedule": max(free),
    }


def latencies(events: dict[str, float], jobs: list[Figures], time_scale: float) -> list[float]:
    """API seconds from each job's result appearing on the server to its waiter's event."""
    finished = {job["messageId"]: job["finished"] for job in jobs}
    return sorted((when - finished[message_id]) / time_scale for message_id, when in events.items())


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile, interpolated between the closest ranks."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class GcClock:
    """The time CPython's garbage collector has taken since this object was made (a ``gc`` callback)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.total += time.monotonic() - self._started


class Usage:
    """CPU seconds and the peak memory added since this object was made, in this process."""

    def __init__(self) -> None:
        self.cpu = self._cpu()
        self.rss = psutil.Process().memory_info().rss

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def figures(self) -> Figures:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"cpu": self._cpu() - self.cpu, "peak_mb": max(0, peak - self.rss) / 2**20}


async def wait_with_trigger(
    message_id: str,
    time_scale: float,
    deadline: float | None = None,
    job_key: str | None = None,
    reconcile_intervals: int = 0,
) -> str:
    """
    This provider's trigger, as its operators defer it (polls no closer than the connection's pace).

    :param job_key: for a job submitted to complete by webhook, its key: the trigger then waits on the
        connection's inbox and polls only to reconcile, as the operators set it up.
    :param reconcile_intervals: with ``job_key``, request intervals until a reconciling poll instead of the
        operators' ``RECONCILE_INTERVALS`` (0), to measure another choice.
    """
    from airflow_provider_nextleg.operators.nextleg import RECONCILE_INTERVALS
    from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger

    interval = WINDOW * time_scale
    reconcile_after = max((reconcile_intervals or RECONCILE_INTERVALS) * interval, 1.0)  # as operators do
    trigger = NextLegMessageTrigger(
        message_id=message_id,
        poll_interval=interval,
        deadline=deadline,
        job_key=job_key,
        reconcile_after=None if job_key is None else reconcile_after,
    )
    async for event in trigger.run():
        return str(event.payload["status"])
    raise RuntimeError(f"the trigger of {message_id} ended without an event")


# --- measurements in processes of their own -------------------------------------------------------------


def measure(folder: Path, scenario: str, **options: Any) -> tuple[subprocess.Popen[bytes], Path]:
    """Start one measurement in a process of its own: the process, and the file its figures go to."""
    out = folder / ("-".join([scenario, *map(str, options.values())]) + ".json")
    command = [sys.executable, str(ENTRY), "--child", scenario, "--out", str(out)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    with (folder / "children.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), out


def collect(measurement: tuple[subprocess.Popen[bytes], Path]) -> Figures:
    process, out = measurement
    if process.wait() != 0 or not out.exists():
        sys.exit("a measurement failed:\n" + (out.parent / "children.log").read_text()[-3000:])
    return json.loads(out.read_text())


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> str:
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load()} at the start, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB; Python {platform.python_version()}, "
        f"apache-airflow {version('apache-airflow')}"
    )


# --- the report -----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def secs(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def table(rows: list[list[str]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)
