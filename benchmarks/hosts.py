"""Scenarios ``hosts`` and ``outage``: one account's budget across several hosts, host file or Redis.

A host here is a process with a temporary directory of its own (``TMPDIR``), so the host limiter's file
cannot join it with the others, as on separate machines. It submits its share of 60 imagine jobs
through ``NextLegHook``'s sync face, four at a time in worker threads (a worker's slots), with the
hook's default retries (5 attempts, the first pause 1 API second), and waits for each submitted job
with a ``NextLegMessageTrigger`` in its own event loop (its triggerer). With the Redis backend the
connection's extra has ``redis_conn_id`` naming ``nextleg_redis``, which ``AIRFLOW_CONN_NEXTLEG_REDIS``
gives as a private ``redis-server`` on a free port (``tests/servers.py``'s ``RedisServer``). Each
configuration runs against an emulator, and a redis-server, of its own; the hosts start together.

* ``hosts``: 1, 2 and 4 hosts, host file and Redis, the two backends of one host count at the same time.
* ``outage``: 2 hosts with Redis, which is stopped for 30 API seconds during the burst's submissions
  (from 90 API seconds after the start, the submissions taking the first 180) and started again on
  its port, empty, as a restarted Redis without persistence is.

Redis round trips are counted in each host by a counting wrapper around redis-py's ``read_response``
(sync and async connections): every reply read is one round trip, as the provider sends no pipelines;
the connections' handshakes and script loads count too. redis-server's ``INFO commandstats`` (after
the run less before) cross-checks the scripts run (``EVAL``, ``EVALSHA``); it cannot give the round
trips, for it also counts the commands a script runs inside the server.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness import (
    BURST_JOBS,
    CONCURRENCY,
    ENTRY,
    HERE,
    MAX_DURATION,
    MIN_DURATION,
    WINDOW,
    Figures,
    counted,
    emulator,
    job_flags,
    lower_bound,
    table,
    use_emulator,
    verdict,
    wait_with_trigger,
)

from airflow_provider_nextleg.ratelimit import Reconnect

WORKER_SLOTS = 4
"""Submissions a host sends at once: the slots of its worker."""
OUTAGE_AT, OUTAGE_FOR, REJOIN = 90.0, 30.0, 30.0
"""When Redis stops, in API seconds after the start, for how long, and the time after its return
reported apart (the hosts rejoin it one by one, each at its next try)."""
REDIS_CONN_ID = "nextleg_redis"


def redis_calls(server: Any) -> dict[str, int]:
    """Calls per command since redis-server started, from ``INFO commandstats``."""
    text = server.command("INFO", "commandstats").decode(errors="replace")
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", text, flags=re.MULTILINE)
    }


class RoundTrips:
    """Replies read from Redis in this process, by every sync and async connection of redis-py."""

    def __init__(self) -> None:
        import redis.asyncio.connection
        import redis.connection

        self.count = 0
        sync, asynchronous = redis.connection.AbstractConnection, redis.asyncio.connection.AbstractConnection
        read, aread = sync.read_response, asynchronous.read_response

        def read_response(connection: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return read(connection, *args, **kwargs)

        async def aread_response(connection: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await aread(connection, *args, **kwargs)

        sync.read_response = read_response  # type: ignore[method-assign]
        asynchronous.read_response = aread_response  # type: ignore[method-assign]


class LateTurns:
    """Turns booked anew because their caller woke too late for them (``Slot.late``), in this process."""

    def __init__(self) -> None:
        from airflow_provider_nextleg.ratelimit import Slot

        self.count = 0
        take = Slot._take

        def counted_take(slot: Any, other: Any) -> None:
            self.count += 1
            take(slot, other)

        Slot._take = counted_take  # type: ignore[method-assign]


class PollTurns:
    """What the account's limiter answered the poll scheduler in this process: a slot, another process's
    fresh answer, or the job's lease held (with Redis; ``RateLimiter.abook_poll``)."""

    def __init__(self) -> None:
        from airflow_provider_nextleg.ratelimit import SharedRateLimiter

        self.counts = {"slot": 0, "shared": 0, "leased": 0}
        book = SharedRateLimiter.abook_poll

        async def counted_book(limiter: Any, message_id: str, *, lease: float) -> Any:
            turn = await book(limiter, message_id, lease=lease)
            kind = "slot" if turn.slot is not None else "shared" if turn.shared is not None else "leased"
            self.counts[kind] += 1
            return turn

        SharedRateLimiter.abook_poll = counted_book  # type: ignore[method-assign]


class _Warnings(logging.Handler):
    """Counts the limiter's warnings (one per Redis outage is the promise)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:240])


async def run_host(number: int, hosts: int, time_scale: float, folder: Path, out: Path) -> Figures:
    """One host: its share of the jobs submitted by worker threads, waited on by triggers in its loop."""
    from airflow_provider_nextleg.exceptions import NextLegError
    from airflow_provider_nextleg.hooks.connection import read_connection
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

    warnings, round_trips, late, turns = _Warnings(), RoundTrips(), LateTurns(), PollTurns()
    logging.getLogger("airflow_provider_nextleg.ratelimit").addHandler(warnings)
    read_connection(NextLegHook.default_conn_name).limiter  # noqa: B018 (imported, read, built before the start)
    (folder / f"ready-{number}").touch()
    go, give_up = folder / "go", time.time() + 600
    while not go.exists():
        if time.time() > give_up:
            raise RuntimeError("no start came")
        await asyncio.sleep(0.05)
    start = float(go.read_text())
    await asyncio.sleep(max(0.0, start - time.time()))

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(WORKER_SLOTS)
    limit = 3 * 2 * BURST_JOBS * WINDOW * time_scale
    failed: list[str] = []
    events: dict[str, float] = {}
    statuses: dict[str, str] = {}

    async def job(n: int) -> None:
        hook = NextLegHook(retry_wait=1.0 * time_scale)  # the default retries, in API time
        try:
            submitted = await loop.run_in_executor(pool, hook.imagine, f"hosts job {n}: a lighthouse at dawn")
        except NextLegError as exc:
            failed.append(f"{type(exc).__name__} (HTTP {exc.status})")
            return
        finally:
            hook.close()
        statuses[submitted.message_id] = await wait_with_trigger(
            submitted.message_id, time_scale, start + limit
        )
        events[submitted.message_id] = time.time()

    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(job(n) for n in range(number, BURST_JOBS, hosts))), limit)
    await asyncio.wait_for(NextLegHook.aclose_clients(), 10)
    pool.shutdown(wait=False, cancel_futures=True)
    figures = {
        "events": events,
        "statuses": statuses,
        "failed": failed,
        "warnings": warnings.messages,
        "round_trips": round_trips.count,
        "late": late.count,
        "poll_turns": turns.counts,
        "stuck": await _stuck_tasks(),
    }
    if figures["stuck"]:  # asyncio.run would wait for them for ever: leave with what was measured
        out.write_text(json.dumps(figures))
        sys.stdout.flush()
        os._exit(0)
    return figures


async def _stuck_tasks() -> list[str]:
    """Cancel what is left in the loop; the stacks of the tasks that do not end within 5 s."""
    left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in left:
        task.cancel()
    pending = (await asyncio.wait(left, timeout=5))[1] if left else set()
    stuck = []
    for task in pending:
        frames = task.get_stack(limit=8)
        where = " < ".join(f"{frame.f_code.co_name}:{frame.f_lineno}" for frame in reversed(frames))
        stuck.append(f"{task.get_name()}: {where or repr(task)[:200]}")
    return stuck


async def run_hosts(hosts: int, backend: str, time_scale: float, outage: float) -> Figures:
    """
    One configuration: ``hosts`` host processes on one account (``backend`` ``file`` or ``redis``);
    with ``outage`` (API seconds), Redis is stopped for that long from :data:`OUTAGE_AT` on.
    """
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers import RedisServer

    with (
        tempfile.TemporaryDirectory(prefix="nextleg-hosts-") as work,
        emulator(time_scale, *job_flags()) as admin,
    ):
        folder = Path(work)
        redis = RedisServer(folder / "redis").start() if backend == "redis" else None
        processes: list[subprocess.Popen[bytes]] = []
        try:
            env = {
                **os.environ,
                "AIRFLOW_CONN_NEXTLEG_DEFAULT": use_emulator(
                    admin, time_scale, REDIS_CONN_ID if redis is not None else None
                ),
            }
            if redis is not None:
                env["AIRFLOW_CONN_" + REDIS_CONN_ID.upper()] = redis.uri()
            for number in range(hosts):
                (folder / f"tmp-{number}").mkdir()
                command = [
                    sys.executable,
                    str(ENTRY),
                    "--child",
                    "host",
                    "--out",
                    str(folder / f"{number}.json"),
                ]
                command += ["--host", str(number), "--hosts", str(hosts), "--time-scale", str(time_scale)]
                command += ["--folder", str(folder)]
                processes.append(
                    subprocess.Popen(command, env={**env, "TMPDIR": str(folder / f"tmp-{number}")})
                )
            give_up = time.time() + 300
            while not all((folder / f"ready-{number}").exists() for number in range(hosts)):
                if time.time() > give_up or any(process.poll() is not None for process in processes):
                    raise RuntimeError("the hosts did not all start")
                await asyncio.sleep(0.1)
            calls_before = redis_calls(redis) if redis is not None else {}
            start = time.time() + 0.5
            (folder / "go").write_text(repr(start))
            during: Figures = {}
            after: Figures = {}
            if outage and redis is not None:
                await asyncio.sleep(start + OUTAGE_AT * time_scale - time.time())
                at_stop = counted(admin)
                redis.stop()
                await asyncio.sleep(outage * time_scale)
                at_start = counted(admin)
                redis.start()
                await asyncio.sleep(REJOIN * time_scale)
                rejoined = counted(admin)
                during = {key: at_start[key] - at_stop[key] for key in at_stop}
                after = {key: rejoined[key] - at_start[key] for key in at_stop}
            deadline = time.time() + 3 * 2 * BURST_JOBS * WINDOW * time_scale + 120
            for process in processes:
                with suppress(subprocess.TimeoutExpired):  # killed below; its share is then empty
                    process.wait(timeout=max(0.0, deadline - time.time()))
            calls_after = redis_calls(redis) if redis is not None else {}
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
            if redis is not None:
                redis.stop()
        shares = [_share(folder / f"{number}.json") for number in range(hosts)]
        jobs = admin.jobs()
        figures = counted(admin)
        duplicates = admin.duplicate_submissions()
    events = {message_id: when for share in shares for message_id, when in share["events"].items()}
    calls = {name: calls_after.get(name, 0) - calls_before.get(name, 0) for name in calls_after}
    calls.pop("info", None)
    return {
        **figures,
        **lower_bound(jobs, time_scale),
        "hosts": hosts,
        "backend": backend,
        "makespan": (max(events.values(), default=start) - start) / time_scale,
        "detected": len(events),
        "done": sum(status == "done" for share in shares for status in share["statuses"].values()),
        "failed": [failure for share in shares for failure in share["failed"]],
        "paid_twice": sum(len(group) - 1 for group in duplicates),
        "round_trips": sum(share["round_trips"] for share in shares) if redis is not None else None,
        "late": sum(share["late"] for share in shares),
        "stuck": [task for share in shares for task in share["stuck"]],
        "poll_turns": {
            kind: sum(share["poll_turns"][kind] for share in shares) for kind in ("slot", "shared", "leased")
        },
        "redis_calls": calls if not outage else None,
        "during_outage": during,
        "after_outage": after,
        "warnings": [len(share["warnings"]) for share in shares],
        "warning_texts": sorted({text for share in shares for text in share["warnings"]})[:3],
    }


def _scripts_run(calls: dict[str, int]) -> int:
    """The budget's scripts redis-server ran: sent whole (``EVAL``) or by digest (``EVALSHA``)."""
    return calls.get("eval", 0) + calls.get("evalsha", 0)


def _share(path: Path) -> Figures:
    """A host's figures, or an empty share for a host that had to be killed."""
    if path.exists():
        return dict(json.loads(path.read_text()))
    empty: Figures = {"events": {}, "statuses": {}, "failed": [], "warnings": [], "round_trips": 0}
    return {
        **empty,
        "late": 0,
        "poll_turns": dict.fromkeys(("slot", "shared", "leased"), 0),
        "stuck": [path.name],
    }


# --- the report -----------------------------------------------------------------------------------------


def _makespan(result: Figures) -> str:
    bound = max(result["bound_rate"], result["bound_concurrency"])
    figure = f"{result['makespan']:.0f} s ({result['makespan'] / bound:.2f}x)"
    return figure if result["detected"] == BURST_JOBS else f"{figure}, {result['detected']} done"


def _round_trips(result: Figures) -> str:
    trips = result["round_trips"]
    return "-" if trips is None else f"{trips / result['requests']:.2f}"


def _turns(result: Figures) -> str:
    if result["backend"] != "redis":
        return "-"
    return " / ".join(str(result["poll_turns"][kind]) for kind in ("slot", "shared", "leased"))


def report_hosts(results: dict[tuple[int, str], Figures], time_scale: float) -> str:
    keys = sorted(results, key=lambda key: (key[1] != "file", key[0]))
    bound = max(results[keys[0]]["bound_rate"], results[keys[0]]["bound_concurrency"])

    def within(result: Figures) -> bool:
        return result["detected"] == BURST_JOBS and result["makespan"] <= 1.25 * bound

    def calls_ok(result: Figures) -> bool:
        return result["round_trips"] <= 2 * result["requests"]

    redis = [results[key] for key in keys if key[1] == "redis" and key[0] > 1]
    rows = [
        [
            "",
            *(f"{n} host{'s' if n > 1 else ''}, {backend}" for n, backend in keys),
            "target (Redis, 2 and 4)",
            "",
        ],
        [
            "429 responses",
            *(str(results[key]["rate_limited"]) for key in keys),
            "0",
            verdict(all(not r["rate_limited"] for r in redis)),
        ],
        [
            "failed submissions",
            *(str(len(results[key]["failed"])) for key in keys),
            "0",
            verdict(all(not r["failed"] for r in redis)),
        ],
        [
            "makespan (x lower bound)",
            *(_makespan(results[key]) for key in keys),
            "<= 1.25x",
            verdict(all(map(within, redis))),
        ],
        ["API requests per job", *(f"{results[key]['requests'] / BURST_JOBS:.2f}" for key in keys), "", ""],
        [
            "Redis round trips per API request",
            *(_round_trips(results[key]) for key in keys),
            "<= 2",
            verdict(all(map(calls_ok, redis))),
        ],
        [
            "poll turns: slot / shared answer / lease held",
            *(_turns(results[key]) for key in keys),
            "",
            "",
        ],
        ["late turns booked anew", *(str(results[key]["late"]) for key in keys), "", ""],
        ["jobs paid twice", *(str(results[key]["paid_twice"]) for key in keys), "", ""],
    ]
    failures = sorted({failure for result in results.values() for failure in result["failed"]})
    return "\n".join(
        [
            f"### hosts: {BURST_JOBS} imagine jobs from 1, 2 and 4 hosts on one account",
            "",
            f"Each host submits its share through the sync hook ({WORKER_SLOTS} worker threads, the hook's "
            "default 5 attempts) and waits with triggers in its own loop; host file (each host a limiter of "
            f"its own) or Redis (`redis_conn_id`). Concurrency {CONCURRENCY}, jobs of {MIN_DURATION:g} to "
            f"{MAX_DURATION:g} s, one request every {WINDOW:g} s, time scale {time_scale:.3g}; "
            f"lower bound {bound:.0f} s as for the burst. Redis round trips: replies read, counted in the "
            "hosts' redis-py.",
            "",
            table(rows),
            "",
            f"Failed submissions: {', '.join(failures) or 'none'}. Scripts run, by redis-server's count "
            "(EVAL and EVALSHA, with the SCRIPT LOADs among them): "
            + ", ".join(
                f"{n} host{'s' if n > 1 else ''} {_scripts_run(results[(n, backend)]['redis_calls'])}"
                f" ({results[(n, backend)]['redis_calls'].get('script|load', 0)})"
                for n, backend in keys
                if backend == "redis"
            )
            + "".join(
                f" {n} host(s), {backend}: left stuck: {'; '.join(results[(n, backend)]['stuck'])}."
                for n, backend in keys
                if results[(n, backend)].get("stuck")
            )
            + "; round trips counted in the hosts: "
            + ", ".join(str(results[key]["round_trips"]) for key in keys if key[1] == "redis")
            + ".",
        ]
    )


def report_outage(result: Figures, time_scale: float) -> str:
    during, after = result["during_outage"], result.get("after_outage", {})
    complete = result["done"] == BURST_JOBS
    retry = inspect.signature(Reconnect).parameters["retry_every"].default
    rows = [
        ["", "figure", "target", ""],
        ["jobs done", f"{result['done']}/{BURST_JOBS}", f"{BURST_JOBS}", verdict(complete)],
        ["jobs paid twice", str(result["paid_twice"]), "0", verdict(not result["paid_twice"])],
        ["failed submissions", str(len(result["failed"])), "0", verdict(not result["failed"])],
        [
            "429 responses during the outage",
            f"{during.get('rate_limited', 0)} of {during.get('requests', 0)} requests",
            "",
            "",
        ],
        [
            f"429 responses in the {REJOIN:g} s after Redis came back",
            f"{after.get('rate_limited', 0)} of {after.get('requests', 0)} requests",
            "",
            "",
        ],
        ["429 responses, whole run", f"{result['rate_limited']} of {result['requests']} requests", "", ""],
        ["makespan (x lower bound)", _makespan(result), "", ""],
        ["warnings per host", ", ".join(map(str, result["warnings"])), "", ""],
    ]
    return "\n".join(
        [
            f"### outage: Redis stopped for {OUTAGE_FOR:g} s in the middle of a burst, 2 hosts",
            "",
            f"As `hosts` with 2 hosts and Redis; redis-server stopped {OUTAGE_AT:g} s (API) after the start, "
            f"during the submissions, and started again empty on its port {OUTAGE_FOR:g} s later; time "
            f"scale {time_scale:.3g} (the limiter tries Redis again every {retry:g} real seconds, "
            f"{retry / time_scale:.0f} API seconds here).",
            "",
            table(rows),
            "",
            "Warnings: " + (" / ".join(result["warning_texts"]) or "none"),
            *(
                [f"Left stuck at the end (cancelled, not ending): {'; '.join(result['stuck'])}"]
                * bool(result.get("stuck"))
            ),
        ]
    )
