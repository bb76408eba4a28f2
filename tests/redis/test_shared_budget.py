"""One account's budget in Redis for every host: the hook and the poll scheduler on a real redis-server.

"Hosts" are processes with temp dirs of their own (so the host limiter's file cannot join them) or event
loops of their own (two triggerers); the account is an emulator with its rate limit on. The fixtures are
here, as in ``test_redis_budget.py`` (this directory has no conftest of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import RedisServer

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger

REDIS_CONN = "nextleg_budget_redis"
#: One request per 0.15 s (3 s at the API's time) and jobs of 1.5 to 3.75 s.
TIME_SCALE = 0.05


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may stop and start again (same port)."""
    with RedisServer(tmp_path / "redis", password="pw-budget-7d1e") as server:
        yield server


@pytest.fixture
def account() -> Iterator[EmulatorServer]:
    """An account of its own, with the documented rate limit (scaled)."""
    settings = EmulatorSettings(time_scale=TIME_SCALE, rate_limit=True, concurrency=12, cdn_403_rate=0.0)
    with EmulatorServer(settings) as server:
        yield server


def connections(account: EmulatorServer, redis: RedisServer | None) -> dict[str, str]:
    """The environment naming the NextLeg connection (with the budget in ``redis`` if given) and Redis's."""
    conn = json.loads(account.airflow_connection_json())
    env = {}
    if redis is not None:
        conn["extra"]["redis_conn_id"] = REDIS_CONN
        env[f"AIRFLOW_CONN_{REDIS_CONN.upper()}"] = redis.uri(db=2)
    env["AIRFLOW_CONN_NEXTLEG_DEFAULT"] = json.dumps(conn)
    return env


def jobs(account: EmulatorServer) -> list[dict[str, Any]]:
    """The submissions that made a job (the ledger lists refused ones too)."""
    return [entry for entry in account.ledger() if entry["messageId"]]


def rate_limited(account: EmulatorServer) -> int:
    return sum(account.counters()["rate_limited"].values())


_SUBMITTER = """
import sys
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
hook = NextLegHook(max_attempts=20, retry_wait=0.05)
for number in range(int(sys.argv[1])):
    hook.imagine(f"host {sys.argv[2]} job {number}: a lighthouse")
"""


def submit_from_hosts(account: EmulatorServer, redis: RedisServer | None, hosts: int, jobs: int, tmp: Path):
    """``jobs`` submissions from each of ``hosts`` processes, each with a temp dir of its own."""
    processes = []
    for host in range(hosts):
        tmpdir = tmp / f"host{host}"
        tmpdir.mkdir()
        env = {**subprocess_env(), **connections(account, redis), "TMPDIR": str(tmpdir)}
        command = [sys.executable, "-c", _SUBMITTER, str(jobs), str(host)]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]


def subprocess_env() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW_CONN_")}


class TestConnection:
    @pytest.mark.parametrize(
        ("redis_conn", "problem"),
        [
            (None, "no Airflow connection 'nextleg_budget_redis'"),
            ('{"conn_type": "http", "host": "127.0.0.1"}', "is of type 'http', not 'redis'"),
        ],
        ids=["missing", "not-redis"],
    )
    def test_a_redis_conn_id_that_cannot_serve_is_refused_before_any_request(
        self, account: EmulatorServer, monkeypatch: pytest.MonkeyPatch, redis_conn: str | None, problem: str
    ):
        conn = json.loads(account.airflow_connection_json())
        conn["extra"]["redis_conn_id"] = REDIS_CONN
        monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", json.dumps(conn))
        if redis_conn is not None:
            monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN.upper()}", redis_conn)
        else:
            monkeypatch.delenv(f"AIRFLOW_CONN_{REDIS_CONN.upper()}", raising=False)
        with pytest.raises(NextLegInputError, match=problem):
            NextLegHook().imagine("a lighthouse")
        assert account.ledger() == []
        assert account.counters()["requests"] == {}


class TestHosts:
    def test_submissions_of_several_hosts_keep_one_budget(
        self, account: EmulatorServer, redis: RedisServer, tmp_path: Path
    ):
        submit_from_hosts(account, redis, hosts=3, jobs=8, tmp=tmp_path)
        assert len(jobs(account)) == 24
        assert not account.duplicate_submissions()
        assert rate_limited(account) <= 1  # a learned margin may cost one, on a loaded machine

    def test_two_triggerers_running_the_same_triggers_poll_each_job_once_at_a_time(
        self, account: EmulatorServer, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
    ):
        for name, value in connections(account, redis).items():
            monkeypatch.setenv(name, value)
        hook = NextLegHook()
        message_ids = [hook.imagine(f"job {number}: a lighthouse").message_id for number in range(6)]
        before = account.counters()["requests"].get("GET /v2/message", 0)

        events: dict[int, list[dict[str, Any]]] = {}

        def triggerer(number: int) -> None:
            async def wait_all() -> list[dict[str, Any]]:
                triggers = [NextLegMessageTrigger(message_id=id_, poll_interval=0.0) for id_ in message_ids]
                try:
                    return await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))
                finally:
                    await NextLegHook.aclose_clients()

            events[number] = [dict(event.payload) for event in asyncio.run(wait_all())]

        threads = [threading.Thread(target=triggerer, args=(number,)) for number in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert [event["status"] for event in events[0]] == ["done"] * 6
        assert [event["status"] for event in events[1]] == ["done"] * 6
        polls = account.counters()["requests"]["GET /v2/message"] - before
        # Each job's last poll (the one that saw it done) is shared: two triggerers that each polled every
        # job themselves would need 12 such polls, and more in between.
        timelines = {job["messageId"]: job for job in account.jobs()}
        duration = max(job["finished"] for job in timelines.values()) - min(
            job["started"] for job in timelines.values()
        )
        assert polls <= duration / account.settings.rate_limit_interval + 6
        assert rate_limited(account) <= 1

    def test_one_triggerer_never_finds_its_own_polls_lease_held(
        self, account: EmulatorServer, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
    ):
        """A poll's turn holds its job's lease until its answer is shared: the turn must go to that job,
        however the others' estimates change while it comes (else the job finds its lease held later)."""
        from airflow_provider_nextleg.ratelimit import SharedRateLimiter

        for name, value in connections(account, redis).items():
            monkeypatch.setenv(name, value)
        hook = NextLegHook()
        message_ids = [hook.imagine(f"job {number}: a lighthouse").message_id for number in range(8)]
        turns: list[Any] = []
        book_poll = SharedRateLimiter.abook_poll

        async def counted(limiter: SharedRateLimiter, message_id: str, *, lease: float) -> Any:
            turns.append(turn := await book_poll(limiter, message_id, lease=lease))
            return turn

        monkeypatch.setattr(SharedRateLimiter, "abook_poll", counted)

        async def wait_all() -> list[dict[str, Any]]:
            triggers = [NextLegMessageTrigger(message_id=id_, poll_interval=0.0) for id_ in message_ids]
            try:
                return [
                    dict(event.payload) for event in await asyncio.gather(*(anext(t.run()) for t in triggers))
                ]
            finally:
                await NextLegHook.aclose_clients()

        events = asyncio.run(wait_all())
        assert [event["status"] for event in events] == ["done"] * 8
        assert turns
        assert [turn for turn in turns if turn.slot is None and turn.shared is None] == []


class TestOutage:
    def test_redis_stopped_mid_burst_costs_no_job_and_is_said_once(
        self,
        account: EmulatorServer,
        redis: RedisServer,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ):
        for name, value in connections(account, redis).items():
            monkeypatch.setenv(name, value)
        caplog.set_level(logging.INFO, logger="airflow_provider_nextleg.ratelimit")
        hook = NextLegHook(max_attempts=20, retry_wait=0.05)
        submitted = [hook.imagine(f"before {number}").message_id for number in range(3)]
        redis.stop()
        started = time.monotonic()
        submitted += [hook.imagine(f"during {number}").message_id for number in range(4)]
        assert time.monotonic() - started < 10  # each request waited for Redis a short timeout at most
        redis.start()
        time.sleep(5.5)  # the next try of Redis (every 5 s)
        submitted += [hook.imagine(f"after {number}").message_id for number in range(3)]

        assert len(set(submitted)) == 10
        assert len(jobs(account)) == 10
        assert not account.duplicate_submissions()
        warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert len([record for record in warnings if "unreachable" in record.getMessage()]) == 1
        assert any("answers again" in record.getMessage() for record in caplog.records)
        assert redis.password is not None
        assert redis.password not in caplog.text
