"""Waiting on NextLeg jobs within the account's rate limit: figures for the shared poll scheduler.

Every figure comes from the provider's real trigger code against ``nextleg-emulator`` processes on
127.0.0.1 with the documented rate limit (one request every 3 s, a sliding window) and all times scaled
by one factor (real seconds per API second); times are reported in API seconds, as the real service would
take them. Each measurement runs in a process of its own, so CPU time and memory are its own::

    .venv/bin/python benchmarks/waiting.py                 # burst, single, scale: about 5 minutes
    .venv/bin/python benchmarks/waiting.py webhooks        # the burst by webhook beside polling: 4 minutes
    .venv/bin/python benchmarks/waiting.py latency         # the burst at 0, 0.2, 0.5 s latency: 2 minutes
    .venv/bin/python benchmarks/waiting.py hosts outage    # several hosts, Redis down: about 10 minutes
    .venv/bin/python benchmarks/waiting.py airflow         # real Airflow services: about 5 minutes

Scenarios, each with its targets (printed with PASS or FAIL):

* ``burst``: 60 imagine jobs submitted at once (account concurrency 12, jobs of 30 to 75 s), waited on
  side by side, each variant against an emulator of its own, by (a) this provider's trigger, all 60 in
  one event loop as the triggerer runs them; (b) a fixed 5 s poll per job on one shared client, as the
  NextLeg docs' example does; (c) a new HTTP session for every 5 s poll, as Airflow's generic
  ``HttpSensorTrigger`` does. Targets for (a): no 429, no QUEUE_FULL, a makespan within 1.25 times the
  lower bound (the larger of the concurrency's bound on the jobs' durations and two requests per job at
  the rate limit). ``--latency SECONDS`` (API seconds, default 0) holds every API answer back.
* ``webhooks``: the burst's (a) beside the same burst completing by webhook, at the same time: each job
  submitted with its own ``webhookOverride``, its result posted by the emulator to a
  ``nextleg-webhook-receiver`` process and taken by the trigger from the receiver's local inbox. Targets
  for the webhooks: at most 1.1 requests per job, a makespan within 1.1 times the lower bound (the
  account's schedule at one request per job), p95 detection latency under 1 s, no 429. Time scale 0.5:
  the inbox's watcher looks every 0.2 real seconds, which a smaller scale would inflate in API seconds.
  ``--reconcile-intervals N`` reconciles after N request intervals instead of the operators' 40.
* ``latency``: the burst's (a) at 0, 0.2 and 0.5 API seconds of latency, with today's limiter (requests
  paced by when they are sent) and with the rule it replaced (paced by when answers came back, as
  5654e70's limiter did), side by side; target: today's at 0.5 s within 1.05x its bound, no 429.
* ``single``: ten jobs one after another; target: p95 detection latency within one window (3 s).
* ``scale``: 2,000 triggers waiting in one event loop, added as the triggerer adds them (one per loop
  iteration); targets: at most 50 KB per trigger, no event-loop stall over 0.1 s, at most 10 connections.
* ``hosts`` and ``outage`` (``hosts.py``): 1, 2 and 4 hosts on one account, host file vs Redis; Redis
  stopped for 30 s mid-burst.
* ``airflow``: the batch example DAG with 30 prompts (30 grids, 120 upscales) on real Airflow services
  (api-server, scheduler, dag-processor, triggerer; LocalExecutor on SQLite, parallelism 4), deferrable;
  targets: no 429, and no worker slot held while a job runs (beyond the hand-off to the triggerer).

Every run stops by itself: a burst waiter not done by three lower bounds is cancelled and counted as
undetected, and the other scenarios give up after fixed limits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import math
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from harness import (
    BURST_JOBS,
    CONCURRENCY,
    HEADERS,
    HERE,
    MAX_DURATION,
    MIN_DURATION,
    WINDOW,
    Figures,
    GcClock,
    Usage,
    collect,
    counted,
    counted_apart,
    emulator,
    job_flags,
    latencies,
    load,
    lower_bound,
    machine,
    measure,
    quantile,
    secs,
    table,
    use_emulator,
    verdict,
    wait_with_trigger,
    webhook_receiver,
)
from hosts import OUTAGE_FOR, report_hosts, report_outage, run_host, run_hosts

from airflow_provider_nextleg.operators.nextleg import RECONCILE_INTERVALS
from airflow_provider_nextleg.ratelimit import MARGIN_MIN, MARGIN_SHARE, HostRateLimiter, Slot
from airflow_provider_nextleg.webhooks.tokens import REF_JOB_FIELD, new_job_key

SINGLE_JOBS = 10
BATCH_DAG, BATCH_PROMPTS = "nextleg_daily_batch", 30
WEBHOOK_SECRET = "whsec-benchmark-" + "9d4c2a7e1f5b8c3d"
"""The connection's ``webhook_secret`` in the ``webhook`` variant."""
SEED_POLL = 5.0
"""The fixed poll interval of the docs' example and of ``HttpSensorTrigger``, in API seconds."""
HAND_OFF = 2.0
"""Real seconds a task may stay on its worker after submitting, while it hands the wait over."""
LATENCIES = (0.0, 0.2, 0.5)
"""API seconds of latency the ``latency`` run compares."""
SCALE_PACED = 0.5
"""The time scale of ``latency``, ``hosts`` and ``outage``, which measure the limiter's pacing: its margins
are real milliseconds (10 ms and 2 % of the interval, 50 ms more per 429), which a smaller scale would
shrink against the timers' and the network's real jitter (at 0.1, 2 hosts on Redis drew 2 x 429 and took
1.36x their bound; at 0.5 and at 1.0, none and 1.04x)."""


# --- the waiters and the limiter of before ---------------------------------------------------------------


class AnsweredPacing(HostRateLimiter):
    """
    The limiter's rule before requests were paced by their sends (``git show
    5654e70:airflow_provider_nextleg/ratelimit.py``), re-added on today's code for the ``latency`` run:
    a request goes no sooner than one interval after the previous one was sent or answered, so every
    round trip adds to the spacing. Bookings as today's (the spacing's margin, a late turn booked anew);
    the wait for the previous answer is what is re-added. In this process only (a burst is one).
    """

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        self._latest = -math.inf  # when the latest request was sent or answered

    def confirm(self, slot: Slot) -> float:
        with self._current() as now:
            ready = max(self._latest + self.interval, self._quiet_until)
            if now < ready:
                return ready - now
            self._latest = now
            return 0.0

    def answered(self) -> None:
        with self._current() as now:
            self._latest = max(self._latest, now)


def pace_by_answers(interval: float) -> None:
    """Give this process's async requests :class:`AnsweredPacing`: the connection's limiter, told when
    each answer (or failure) is in by a wrapper around the one async send."""
    from airflow_provider_nextleg.hooks import connection, session

    limiter = AnsweredPacing(interval)
    connection.rate_limiter_for = lambda *args, **kwargs: limiter  # type: ignore[assignment]
    send = session.asend

    async def asend(*args: Any, **kwargs: Any) -> Any:
        try:
            return await send(*args, **kwargs)
        finally:
            limiter.answered()

    session.asend = asend  # type: ignore[assignment]


async def wait_on_timer(
    message_id: str, every: float, base_url: str, shared: httpx.AsyncClient | None
) -> str:
    """
    Poll on the job's own timer straight to the API: on one ``shared`` client (the docs' example), or on
    a new session per poll (``HttpSensorTrigger``; its aiohttp caches the TLS context, so do these). Any
    answer but a final one, a 429 included, means "poll again in ``every`` seconds".
    """
    from airflow_provider_nextleg.models import Message

    while True:
        client = shared or httpx.AsyncClient(headers=HEADERS, verify=TLS_CONTEXT, trust_env=False)
        try:
            response = await client.get(f"{base_url}/v2/message/{message_id}", params={"expireMins": 12})
        finally:
            if shared is None:
                await client.aclose()
        if response.status_code == 200:
            message = Message.from_api(response.json(), message_id)
            if message.status.is_terminal:
                return message.status.value
        await asyncio.sleep(every)


TLS_CONTEXT = ssl.create_default_context()


# --- the scenarios, each run in a process of its own ----------------------------------------------------


async def run_burst(
    variant: str, time_scale: float, latency: float = 0.0, reconcile_intervals: int = 0
) -> Figures:
    """
    60 jobs submitted at once through the hook, each then waited on by the variant's waiter; variant
    ``answered`` is (a) with :class:`AnsweredPacing`, and ``webhook`` is (a) for jobs that complete by
    webhook: each submitted with the ``webhookOverride`` of its own key, which the emulator posts the
    result to, a ``nextleg-webhook-receiver`` process stores in its local inbox, and the trigger finds
    there. ``latency``: API seconds each answer is held back; ``reconcile_intervals``: see
    :func:`~harness.wait_with_trigger`.
    """
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

    bound = 2 * BURST_JOBS * WINDOW * time_scale
    async with contextlib.AsyncExitStack() as stack:
        admin = stack.enter_context(emulator(time_scale, *job_flags(latency=latency, time_scale=time_scale)))
        use_emulator(admin, time_scale)
        if variant == "answered":
            pace_by_answers(WINDOW * time_scale)
            variant = "a"
        if variant == "webhook":
            # The receiver's inbox is in a temporary directory of its own, which this process takes too.
            tempfile.tempdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nextleg-inbox-"))
            use_emulator(admin, time_scale, webhook_secret=WEBHOOK_SECRET)
            url = stack.enter_context(webhook_receiver(Path(tempfile.tempdir)))
            use_emulator(admin, time_scale, webhook_url=url, webhook_secret=WEBHOOK_SECRET)
        shared = await stack.enter_async_context(httpx.AsyncClient(headers=HEADERS, trust_env=False))
        waiters: dict[str, Callable[[str, str | None], Awaitable[str]]] = {
            "a": lambda message_id, _: wait_with_trigger(message_id, time_scale, time.time() + 3 * bound),
            "webhook": lambda message_id, job_key: wait_with_trigger(
                message_id, time_scale, time.time() + 3 * bound, job_key, reconcile_intervals
            ),
            "b": lambda message_id, _: wait_on_timer(
                message_id, SEED_POLL * time_scale, admin.base_url, shared
            ),
            "c": lambda message_id, _: wait_on_timer(
                message_id, SEED_POLL * time_scale, admin.base_url, None
            ),
        }
        # Submissions go through the hook in every variant, paced by the account's limiter and retried
        # on a 429 with many attempts, so that a storm of polls delays them but loses none.
        hook = NextLegHook(max_attempts=100, retry_wait=WINDOW * time_scale)
        webhooks = hook.webhooks if variant == "webhook" else None
        events: dict[str, float] = {}
        statuses: dict[str, str] = {}

        async def job(number: int) -> None:
            prompt = f"burst job {number}: a lighthouse at dawn"
            if webhooks is None:
                job_key, submitted = None, await hook.aimagine(prompt)
            else:  # as the job operators submit: the job's key in the ref and in the webhook's URL
                job_key = new_job_key()
                submitted = await hook.aimagine(
                    prompt,
                    ref=json.dumps({REF_JOB_FIELD: job_key}),
                    webhook_override=webhooks.override_url(job_key),
                )
            statuses[submitted.message_id] = await waiters[variant](submitted.message_id, job_key)
            events[submitted.message_id] = time.time()

        usage, started = Usage(), time.time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(job(n) for n in range(BURST_JOBS))), 3 * bound)
        ended = max(events.values(), default=time.time())
        await NextLegHook.aclose_clients()
        jobs = admin.jobs()
        deliveries = admin.webhooks()
        return {
            **usage.figures(),
            **counted(admin),
            **lower_bound(jobs, time_scale, requests_per_job=1 if webhooks else 2),
            "makespan": (ended - started) / time_scale,
            "detected": len(events),
            "queue_full": sum(status == "failed" for status in statuses.values()),
            "latencies": latencies(events, jobs, time_scale),
            "to_result": sorted((job["finished"] - job["created"]) / time_scale for job in jobs),
            "webhooks_stored": sum(delivery["status"] == 200 for delivery in deliveries),
            "webhooks_failed": sum(delivery["status"] != 200 for delivery in deliveries),
        }


async def run_single(time_scale: float) -> Figures:
    """Ten jobs one after another, each submitted once the previous one's event came."""
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

    with emulator(time_scale, *job_flags()) as admin:
        use_emulator(admin, time_scale)
        hook = NextLegHook()
        events: dict[str, float] = {}
        for number in range(SINGLE_JOBS):
            message_id = (await hook.aimagine(f"single job {number}: a lighthouse at dusk")).message_id
            await wait_with_trigger(message_id, time_scale, time.time() + 3 * MAX_DURATION * time_scale)
            events[message_id] = time.time()
        await NextLegHook.aclose_clients()
        return {**counted(admin), "latencies": latencies(events, admin.jobs(), time_scale)}


async def run_scale(time_scale: float, triggers: int, seconds: float) -> Figures:
    """Triggers that wait (their jobs outlast the run), added as the triggerer adds them."""
    from airflow_provider_nextleg import polling
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

    # Jobs of 5,000 API seconds (and the fast hours for them all) outlast the run; the queue holds them.
    flags = ("--concurrency", str(CONCURRENCY), "--queue-length", str(triggers + 10), "--fast-hours", "1e9")
    flags += ("--min-duration", "5000", "--max-duration", "6000", "--no-rate-limit")
    with emulator(time_scale, *flags) as admin:
        async with httpx.AsyncClient(base_url=admin.base_url, headers=HEADERS, trust_env=False) as client:
            message_ids = [
                (await client.post("/v2/imagine", json={"msg": f"scale job {n}"})).json()["messageId"]
                for n in range(triggers + 1)
            ]
        admin.configure(rate_limit=True)
        admin.close()  # its keep-alive connection is not the triggers'
        use_emulator(admin, time_scale)
        port = int(admin.base_url.rsplit(":", 1)[1])

        def connections() -> int:
            return sum(
                1
                for conn in psutil.Process().net_connections(kind="tcp")
                if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
            )

        def wait(message_id: str) -> asyncio.Task[str]:
            return asyncio.create_task(wait_with_trigger(message_id, time_scale))

        # One trigger first, so that what all triggers share (modules, the client) is in the baseline.
        warm = wait(message_ids[0])
        await asyncio.sleep(1.0)
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        gc.collect()
        usage = Usage()

        stalls: list[tuple[float, float]] = []  # how late each heartbeat came, and the GC's part of it
        collector = GcClock()

        async def heartbeat() -> None:
            while True:
                before, collected = time.monotonic(), collector.total
                await asyncio.sleep(0.01)
                stalls.append((time.monotonic() - before - 0.01, collector.total - collected))

        gc.callbacks.append(collector)
        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.2)
        added = time.monotonic()
        waits = []
        for message_id in message_ids[1:]:  # one per loop iteration, as the triggerer's create_triggers does
            waits.append(wait(message_id))
            await asyncio.sleep(0)
        give_up = time.monotonic() + 120
        while sum(scheduler.watched for scheduler in polling.schedulers()) < triggers:
            if time.monotonic() > give_up or any(task.done() for task in waits):
                raise RuntimeError("the triggers did not all register and wait")
            await asyncio.sleep(0.05)
        registered = time.monotonic() - added
        polls_before = counted_apart(admin.base_url)["polls"]  # blocks the loop a little: not counted
        adding = list(stalls)
        await asyncio.sleep(0.02)
        stalls.clear()
        peak_connections = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            peak_connections = max(peak_connections, connections())
            await asyncio.sleep(0.25)
        waiting = list(stalls)
        polls = counted_apart(admin.base_url)["polls"] - polls_before
        beat.cancel()
        gc.callbacks.remove(collector)
        gc.collect()
        per_trigger = (psutil.Process().memory_info().rss - usage.rss) / triggers
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.sleep(0.1)
        left = {"schedulers": len(polling.schedulers()), "tasks": len(asyncio.all_tasks()) - 1}
        await NextLegHook.aclose_clients()
        return {
            "triggers": triggers,
            "seconds": seconds,
            "per_trigger_kb": per_trigger / 1024,
            "registered": registered,
            "adding": (max(lag for lag, _ in adding), max(lag - gc for lag, gc in adding)),
            "waiting": (max(lag for lag, _ in waiting), max(lag - gc for lag, gc in waiting)),
            "connections": peak_connections,
            "polls": polls,
            "rate_limited": counted_apart(admin.base_url)["rate_limited"],
            "left": left,
        }


async def run_airflow(time_scale: float, pool: int) -> Figures:
    """The batch example DAG on real Airflow services, deferrable, against the emulator. Its job tasks
    run in the example's pool ``nextleg``: with ``pool``, that many slots counting deferred tasks, which
    bounds the jobs in flight; else as many as the batch has tasks."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from e2e.services import AirflowServices

    prompts = [
        f"batch prompt {n}: a lighthouse on a cliff at dawn, oil painting" for n in range(BATCH_PROMPTS)
    ]
    with emulator(time_scale, *job_flags(queue=200)) as admin, tempfile.TemporaryDirectory() as home:
        with AirflowServices(Path(home), use_emulator(admin, time_scale), dag_id=BATCH_DAG) as services:
            services.create_pool("nextleg", pool or 5 * BATCH_PROMPTS, "NextLeg account: jobs at once")
            admin.reset()
            started = time.time()
            response = services.api.post(
                f"/api/v2/dags/{BATCH_DAG}/dagRuns", json={"logical_date": None, "conf": {"prompts": prompts}}
            )
            response.raise_for_status()
            run = f"/api/v2/dags/{BATCH_DAG}/dagRuns/{response.json()['dag_run_id']}"
            samples: list[tuple[float, dict[tuple[str, int], str]]] = []  # task instances' states over time
            state = "queued"
            while state not in ("success", "failed") and time.time() < started + 1800:
                instances = services.api.get(f"{run}/taskInstances", params={"limit": 1000}).json()
                states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances["task_instances"]}
                samples.append((time.time(), states))
                state = services.api.get(run).json()["state"]
                await asyncio.sleep(0.5)
            ended = time.time()
        finished = {job["messageId"]: job["finished"] for job in admin.jobs()}
        jobs = {  # (task, map index) -> when its job was submitted, and when it finished
            (ref["task_id"], ref["map_index"]): (
                datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp(),
                finished[entry["messageId"]],
            )
            for entry in admin.ledger()
            if entry["messageId"] and (ref := json.loads(entry["ref"]))
        }
        figures = counted(admin)
    held = dict.fromkeys(jobs, 0.0)  # real seconds each task was seen on a worker while its own job ran
    for (when, states), (later, _) in itertools.pairwise(samples):
        for key, task_state in states.items():
            if task_state == "running" and key in jobs and jobs[key][0] < when < jobs[key][1]:
                held[key] += later - when
    return {
        **figures,
        "state": state,
        "makespan": (ended - started) / time_scale,
        "jobs": len(jobs),
        "held_max": max(held.values(), default=0.0),
        "held_share": sum(held.values()) / sum(end - start for start, end in jobs.values()),
        "deferred_peak": max(sum(state == "deferred" for state in states.values()) for _, states in samples),
    }


# --- the report -----------------------------------------------------------------------------------------


def report_burst(results: dict[str, Figures], time_scale: float, latency: float = 0.0) -> str:
    ours = results["a"]
    bound = max(ours["bound_rate"], ours["bound_concurrency"])
    within = ours["detected"] == BURST_JOBS and ours["makespan"] <= 1.25 * bound
    columns = {
        "a": "(a) this trigger",
        "b": "(b) own 5 s timer, shared client",
        "c": "(c) own 5 s timer, session per poll",
    }

    def makespan(result: Figures) -> str:
        figure = f"{result['makespan']:.0f} s ({result['makespan'] / bound:.2f}x)"
        return figure if result["detected"] == BURST_JOBS else f"{figure}, {result['detected']} done"

    rows = [
        ["", *columns.values(), "target (a)", ""],
        ["makespan (x lower bound)", *map(makespan, results.values()), "<= 1.25x", verdict(within)],
        ["API requests per job", *(f"{r['requests'] / BURST_JOBS:.1f}" for r in results.values()), "", ""],
        [
            "429 responses",
            *(str(r["rate_limited"]) for r in results.values()),
            "0",
            verdict(not ours["rate_limited"]),
        ],
        [
            "QUEUE_FULL",
            *(str(r["queue_full"]) for r in results.values()),
            "0",
            verdict(not ours["queue_full"]),
        ],
        ["detection latency p50", *(secs(quantile(r["latencies"], 0.5)) for r in results.values()), "", ""],
        ["detection latency p95", *(secs(quantile(r["latencies"], 0.95)) for r in results.values()), "", ""],
        ["CPU seconds (real)", *(f"{r['cpu']:.1f}" for r in results.values()), "", ""],
        ["peak memory added", *(f"{r['peak_mb']:.0f} MB" for r in results.values()), "", ""],
    ]
    return "\n".join(
        [
            f"### burst: {BURST_JOBS} imagine jobs at once",
            "",
            f"Concurrency {CONCURRENCY}, jobs of {MIN_DURATION:g} to {MAX_DURATION:g} s, one request every "
            f"{WINDOW:g} s, time scale {time_scale:.3g}. Lower bound {bound:.0f} s: the rate limit at two "
            f"requests per job ({ours['bound_rate']:.0f} s) against the concurrency working through the "
            f"jobs' durations ({ours['bound_concurrency']:.0f} s). The three variants ran at the same time"
            + (f"; every API answer held back {latency:g} API seconds." if latency else "."),
            "",
            table(rows),
        ]
    )


def report_webhooks(results: dict[str, Figures], time_scale: float, reconcile_intervals: int) -> str:
    polled, hooked = results["a"], results["webhook"]
    bounds = {  # polling: its rate bound; webhooks: the schedule at one request per job, which is tighter
        "a": max(polled["bound_rate"], polled["bound_concurrency"]),
        "webhook": max(hooked["bound_rate"], hooked["bound_concurrency"], hooked["bound_schedule"]),
    }
    ratio = {variant: results[variant]["makespan"] / bound for variant, bound in bounds.items()}

    def makespan(variant: str) -> str:
        result = results[variant]
        figure = f"{result['makespan']:.0f} s ({ratio[variant]:.2f}x)"
        return figure if result["detected"] == BURST_JOBS else f"{figure}, {result['detected']} done"

    def both(figure: Callable[[Figures], str]) -> list[str]:
        return [figure(polled), figure(hooked)]

    per_job = hooked["requests"] / BURST_JOBS
    p95 = quantile(hooked["latencies"], 0.95)
    rows = [
        ["", "polling (this trigger)", "webhooks (this trigger on the inbox)", "target (webhooks)", ""],
        ["lower bound", *(f"{bound:.0f} s" for bound in bounds.values()), "", ""],
        [
            "makespan (x lower bound)",
            *map(makespan, bounds),
            "<= 1.1x",
            verdict(hooked["detected"] == BURST_JOBS and ratio["webhook"] <= 1.1),
        ],
        [
            "  x max(rate, concurrency)",
            *(
                f"{r['makespan'] / max(r['bound_rate'], r['bound_concurrency']):.2f}x"
                for r in results.values()
            ),
            "",
            "",
        ],
        [
            "API requests per job",
            *both(lambda r: f"{r['requests'] / BURST_JOBS:.2f}"),
            "<= 1.1",
            verdict(per_job <= 1.1),
        ],
        ["  of which polls", *both(lambda r: str(r["polls"])), "", ""],
        [
            f"jobs submitted over {reconcile_intervals} intervals before their result",
            *both(lambda r: str(sum(wait > reconcile_intervals * WINDOW for wait in r["to_result"]))),
            "",
            "",
        ],
        ["429 responses", *both(lambda r: str(r["rate_limited"])), "0", verdict(not hooked["rate_limited"])],
        ["detection latency p50", *both(lambda r: secs(quantile(r["latencies"], 0.5))), "", ""],
        [
            "detection latency p95",
            *both(lambda r: secs(quantile(r["latencies"], 0.95), 2)),
            "< 1 s",
            verdict(p95 is not None and p95 < 1.0),
        ],
        ["detection latency max", *both(lambda r: secs(max(r["latencies"], default=None), 2)), "", ""],
        ["webhooks stored (not)", "", f"{hooked['webhooks_stored']} ({hooked['webhooks_failed']})", "", ""],
        ["CPU seconds (real)", *both(lambda r: f"{r['cpu']:.1f}"), "", ""],
    ]
    return "\n".join(
        [
            f"### webhooks: the burst of {BURST_JOBS} jobs by webhook, beside polling",
            "",
            f"Concurrency {CONCURRENCY}, jobs of {MIN_DURATION:g} to {MAX_DURATION:g} s, one request every "
            f"{WINDOW:g} s, time scale {time_scale:.3g}; the two ran at the same time, each against an "
            "emulator of its own. Webhooks: each job submitted with the `webhookOverride` of its own key, "
            "the emulator posts its result to a `nextleg-webhook-receiver` process, which stores it in its "
            "local inbox, where the trigger finds it (and polls to reconcile after "
            f"{reconcile_intervals} request intervals"
            + (", as the operators set" if reconcile_intervals == RECONCILE_INTERVALS else "")
            + "). Lower bounds: polling, the rate limit at two requests per job "
            f"({polled['bound_rate']:.0f} s) or the concurrency working through the jobs' durations "
            f"({polled['bound_concurrency']:.0f} s); webhooks, the account running these jobs had the k-th "
            f"been submitted k intervals after the first ({hooked['bound_schedule']:.0f} s; the rate limit "
            f"alone, {hooked['bound_rate']:.0f} s). Detection latency: from a job's result appearing in the "
            "emulator to its trigger's event, in API seconds.",
            "",
            table(rows),
        ]
    )


def report_latency(results: dict[tuple[str, float], Figures], time_scale: float) -> str:
    keys = sorted(results, key=lambda key: (key[0] != "a", key[1]))
    names = {"a": "send-paced", "answered": "answer-paced"}
    target = results[("a", max(LATENCIES))]

    def ratio(result: Figures) -> float:
        return result["makespan"] / max(result["bound_rate"], result["bound_concurrency"])

    def makespan(result: Figures) -> str:
        figure = f"{result['makespan']:.0f} s ({ratio(result):.2f}x)"
        return figure if result["detected"] == BURST_JOBS else f"{figure}, {result['detected']} done"

    within = target["detected"] == BURST_JOBS and ratio(target) <= 1.05
    rows = [
        ["", *(f"{names[variant]}, {latency:g} s" for variant, latency in keys), "target", ""],
        [
            "makespan (x lower bound)",
            *(makespan(results[key]) for key in keys),
            f"<= 1.05x (send-paced, {max(LATENCIES):g} s)",
            verdict(within),
        ],
        ["API requests per job", *(f"{results[key]['requests'] / BURST_JOBS:.2f}" for key in keys), "", ""],
        [
            "429 responses",
            *(str(results[key]["rate_limited"]) for key in keys),
            "0",
            verdict(not target["rate_limited"]),
        ],
        ["detection latency p50", *(secs(quantile(results[key]["latencies"], 0.5)) for key in keys), "", ""],
    ]
    return "\n".join(
        [
            "### latency: the burst's (a) at "
            + ", ".join(f"{value:g}" for value in LATENCIES)
            + " s of API latency",
            "",
            f"Latency in API seconds: the emulator holds every API answer back by latency x time scale "
            f"({time_scale:.3g}) real seconds. Send-paced: today's limiter, a request one spacing (the "
            f"interval, {MARGIN_SHARE:.0%} and {MARGIN_MIN * 1000:g} real ms) after the previous one was "
            "sent. Answer-paced: the rule it replaced "
            "(5654e70), a request one interval after the previous one was answered, re-added in the "
            "benchmark on today's code (`AnsweredPacing`). The six ran at the same time.",
            "",
            table(rows),
        ]
    )


def report_single(result: Figures, time_scale: float) -> str:
    p95 = quantile(result["latencies"], 0.95)
    rows = [
        ["", "this trigger", "target", ""],
        ["jobs detected", f"{len(result['latencies'])}/{SINGLE_JOBS}", "", ""],
        ["detection latency p50", secs(quantile(result["latencies"], 0.5)), "", ""],
        ["detection latency p95", secs(p95), f"<= {WINDOW:g} s", verdict(p95 is not None and p95 <= WINDOW)],
        ["detection latency max", secs(max(result["latencies"], default=None)), "", ""],
        ["polls per job", f"{result['polls'] / SINGLE_JOBS:.1f}", "", ""],
        ["429 responses", str(result["rate_limited"]), "0", verdict(not result["rate_limited"])],
    ]
    return "\n".join(
        [
            f"### single: {SINGLE_JOBS} jobs one after another",
            "",
            f"Jobs of {MIN_DURATION:g} to {MAX_DURATION:g} s, one request every {WINDOW:g} s, time scale "
            f"{time_scale:.3g}.",
            "",
            table(rows),
        ]
    )


def report_scale(result: Figures, time_scale: float) -> str:
    (adding, adding_code), (waiting, waiting_code) = result["adding"], result["waiting"]
    left = result["left"]
    kb = result["per_trigger_kb"]
    rows = [
        ["", "figure", "target", ""],
        ["memory per waiting trigger", f"{kb:.1f} KB", "<= 50 KB", verdict(kb <= 50)],
        [
            "largest event-loop stall",
            f"{max(adding, waiting) * 1000:.0f} ms",
            "<= 100 ms",
            verdict(max(adding, waiting) <= 0.1),
        ],
        [
            "  while the triggers are added",
            f"{adding * 1000:.0f} ms ({adding_code * 1000:.0f} ms besides GC)",
            "",
            "",
        ],
        ["  while they wait", f"{waiting * 1000:.0f} ms ({waiting_code * 1000:.0f} ms besides GC)", "", ""],
        [
            "open connections to the API",
            str(result["connections"]),
            "<= 10",
            verdict(result["connections"] <= 10),
        ],
        ["all registered within", f"{result['registered']:.1f} s (real)", "", ""],
        [
            f"polls while they waited {result['seconds']:g} s (real)",
            f"{result['polls']} (the limit allows {result['seconds'] / (WINDOW * time_scale):.0f})",
            "",
            "",
        ],
        ["429 responses", str(result["rate_limited"]), "0", verdict(not result["rate_limited"])],
        [
            "left once all are cancelled",
            f"{left['schedulers']} schedulers, {left['tasks']} tasks",
            "none",
            verdict(left == {"schedulers": 0, "tasks": 0}),
        ],
    ]
    return "\n".join(
        [
            f"### scale: {result['triggers']} triggers waiting in one event loop",
            "",
            f"Queued and running jobs that outlast the run, one request every {WINDOW:g} s, time scale "
            f"{time_scale:.3g}. GC: the stall's share spent in CPython's garbage collector.",
            "",
            table(rows),
        ]
    )


def report_airflow(result: Figures, time_scale: float, pool: int) -> str:
    bound = 2 * result["jobs"] * WINDOW
    pooled = f", the pool 'nextleg' sized to {pool} slots counting deferred tasks" if pool else ""
    rows = [
        ["", "figure", "target", ""],
        [
            "the run",
            f"{result['state']}, {result['jobs']} jobs",
            "success",
            verdict(result["state"] == "success"),
        ],
        ["429 responses", str(result["rate_limited"]), "0", verdict(not result["rate_limited"])],
        [
            "makespan",
            f"{result['makespan']:.0f} s ({result['makespan'] / bound:.1f}x the API's bound)",
            "",
            "",
        ],
        ["API requests per job", f"{result['requests'] / result['jobs']:.1f}", "", ""],
        ["polls per job", f"{result['polls'] / result['jobs']:.1f}", "", ""],
        [
            "longest a task held a worker slot while its job ran",
            f"{result['held_max']:.1f} s (real)",
            f"hand-off only, < {HAND_OFF:g} s",
            verdict(result["held_max"] < HAND_OFF),
        ],
        ["worker slot time while jobs ran / job time", f"{result['held_share']:.1%}", "", ""],
        ["most tasks deferred at once", str(result["deferred_peak"]), "", ""],
    ]
    return "\n".join(
        [
            f"### airflow: the batch example DAG, {BATCH_PROMPTS} prompts",
            "",
            f"{BATCH_PROMPTS} grids and {4 * BATCH_PROMPTS} upscales on real Airflow services (LocalExecutor "
            f"on SQLite, parallelism 4), deferrable{pooled}; time scale {time_scale:.3g}, so jobs of "
            f"{MIN_DURATION * time_scale:g} to {MAX_DURATION * time_scale:g} real seconds. The API's bound "
            f"is two requests per job at the rate limit ({bound:.0f} s); Airflow's own pace (about 300 task "
            "runs, four at a time) sets the makespan here. Task states sampled every 0.5 s.",
            "",
            table(rows),
        ]
    )


# --- running it all -------------------------------------------------------------------------------------


CHILDREN: dict[str, Callable[[argparse.Namespace], Awaitable[Figures]]] = {
    "burst": lambda args: run_burst(args.variant, args.time_scale, args.latency, args.reconcile_intervals),
    "single": lambda args: run_single(args.time_scale),
    "scale": lambda args: run_scale(args.time_scale, args.triggers, args.seconds),
    "hosts": lambda args: run_hosts(args.hosts, args.backend, args.time_scale, args.outage),
    "host": lambda args: run_host(args.host, args.hosts, args.time_scale, args.folder, args.out),
    "airflow": lambda args: run_airflow(args.time_scale, args.pool),
}
SCENARIOS = ("burst", "webhooks", "latency", "single", "scale", "hosts", "outage", "airflow")


def run(scenario: str, folder: Path, args: argparse.Namespace) -> str:
    """One scenario's measurements, each in a process of its own, and its report."""
    if scenario == "burst":
        scale = args.time_scale or 1 / 6
        options = {"time_scale": scale, "latency": args.latency}
        running = {v: measure(folder, "burst", variant=v, **options) for v in "abc"}
        return report_burst({variant: collect(run) for variant, run in running.items()}, scale, args.latency)
    if scenario == "webhooks":
        scale = args.time_scale or SCALE_PACED
        intervals = args.reconcile_intervals or RECONCILE_INTERVALS
        running = {
            variant: measure(
                folder, "burst", variant=variant, time_scale=scale, latency=0.0, reconcile_intervals=intervals
            )
            for variant in ("a", "webhook")
        }
        return report_webhooks({variant: collect(run) for variant, run in running.items()}, scale, intervals)
    if scenario == "latency":
        scale = args.time_scale or SCALE_PACED
        keys = [(variant, latency) for variant in ("a", "answered") for latency in LATENCIES]
        running = {
            (variant, latency): measure(folder, "burst", variant=variant, time_scale=scale, latency=latency)
            for variant, latency in keys
        }
        return report_latency({key: collect(run) for key, run in running.items()}, scale)
    if scenario == "single":
        scale = args.time_scale or 1 / 6
        return report_single(collect(measure(folder, "single", time_scale=scale)), scale)
    if scenario == "scale":
        scale = args.time_scale or 0.1
        options = {"time_scale": scale, "triggers": args.triggers, "seconds": args.seconds}
        return report_scale(collect(measure(folder, "scale", **options)), scale)
    if scenario == "hosts":
        scale = args.time_scale or SCALE_PACED
        results = {}
        for hosts in (1, 2, 4):  # the two backends of one host count at a time
            running = {
                backend: measure(folder, "hosts", hosts=hosts, backend=backend, time_scale=scale, outage=0)
                for backend in ("file", "redis")
            }
            results.update({(hosts, backend): collect(run) for backend, run in running.items()})
            print(f"<!-- hosts: {hosts} done, load average {load()} -->", flush=True)
        return report_hosts(results, scale)
    if scenario == "outage":
        scale = args.time_scale or SCALE_PACED
        options = {"hosts": 2, "backend": "redis", "time_scale": scale, "outage": OUTAGE_FOR}
        return report_outage(collect(measure(folder, "hosts", **options)), scale)
    scale = args.time_scale or 0.1
    return report_airflow(
        collect(measure(folder, "airflow", time_scale=scale, pool=args.pool)), scale, args.pool
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenarios", nargs="*", help=f"{', '.join(SCENARIOS)} (default: burst, single, scale)"
    )
    parser.add_argument(
        "--time-scale", type=float, help="real seconds per API second (default: per scenario)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="burst: API seconds every API answer is held back"
    )
    parser.add_argument(
        "--reconcile-intervals",
        type=int,
        default=0,
        help=f"webhooks: request intervals before a reconciling poll (default: the operators' "
        f"{RECONCILE_INTERVALS})",
    )
    parser.add_argument("--triggers", type=int, default=2000, help="scale: how many triggers wait")
    parser.add_argument("--seconds", type=float, default=20.0, help="scale: how long they wait (real)")
    parser.add_argument(
        "--pool", type=int, default=0, help="airflow: the pool nextleg's slots (deferred tasks counted)"
    )
    for hidden in ("--child", "--variant", "--backend"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--hosts", "--host"):
        parser.add_argument(hidden, type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--outage", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.out.write_text(json.dumps(asyncio.run(CHILDREN[args.child](args))))
        return
    if set(args.scenarios) - set(SCENARIOS):
        parser.error(f"scenarios are {', '.join(SCENARIOS)}")

    print(f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/waiting.py', *sys.argv[1:]])}`")
    print(f"Machine: {machine()}; {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.")
    print()
    with tempfile.TemporaryDirectory(prefix="nextleg-benchmark-") as work:
        for scenario in args.scenarios or ["burst", "single", "scale"]:
            print(run(scenario, Path(work), args))
            print(f"\n<!-- {scenario} done, load average {load()} -->\n", flush=True)


if __name__ == "__main__":
    main()
