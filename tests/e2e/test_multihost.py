"""The batch example on a production-shaped deployment: the CeleryExecutor with a Redis broker, PostgreSQL
as the metadata database, and two "hosts", each a Celery worker and a triggerer with a temporary
directory of its own, so that the host limiter's file cannot join them. One NextLeg account on the
emulator, with its documented limit (one request per 3 s, time-scaled like every duration here).

The batch runs twice over 30 prompts (30 grids, 120 upscales, 151 task instances): first with the host
limiter alone, which prints the 429s that two hosts draw from one account; then with the connection's
``redis_conn_id``, where the target is 0 × 429. Both runs must succeed in every task instance and pay
for no job twice.

Marked ``multihost``: it takes minutes and most of the machine, so only ``make test-multihost`` (``-m
multihost``) runs it, once per CI run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import PostgresServer, RedisServer

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, duplicate_submissions

from .services import MultiHostServices, connection_with

pytestmark = pytest.mark.multihost

DAG_ID = "nextleg_daily_batch"
POOL = "nextleg"
"""The example's pool of the account's jobs: without it the batch's job tasks are never scheduled."""
PROMPTS = 30
TIME_SCALE = 0.05
"""Real seconds per simulated second: the limit is one request every 0.15 s, jobs last 1.5 to 3.75 s."""
REDIS_CONN_ID = "nextleg_redis"
RUN_TIMEOUT = 420.0


@dataclass
class BatchRun:
    """What one run of the batch left: its task instances, its submissions, the emulator's counters."""

    label: str
    run_id: str
    state: str
    seconds: float
    instances: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    counters: dict[str, dict[str, int]]
    logs: str

    @property
    def rate_limited(self) -> int:
        """Every 429 the account answered during the run, submissions and polls."""
        return sum(self.counters.get("rate_limited", {}).values())

    @property
    def paid(self) -> list[dict[str, Any]]:
        return [entry for entry in self.ledger if entry["messageId"] is not None]

    def report(self) -> str:
        requests = sum(self.counters.get("requests", {}).values())
        limited = self.counters.get("rate_limited", {})
        submissions_refused = sum(1 for entry in self.ledger if entry["status"] == 429)
        retried = sum(1 for ti in self.instances if ti["try_number"] > 1)
        states = Counter(ti["state"] for ti in self.instances)
        return (
            f"[multihost, {self.label}] run {self.state} in {self.seconds:.0f} s: "
            f"{dict(states)} task instances ({retried} retried); {len(self.paid)} jobs paid; "
            f"{self.rate_limited} x 429 ({submissions_refused} on submissions; by endpoint {limited}); "
            f"{requests} requests, {requests / max(len(self.paid), 1):.2f} per job"
        )


def prompts(label: str) -> list[str]:
    return [
        f"{label} batch, study {index}: a lighthouse on a cliff at dawn, watercolour"
        for index in range(PROMPTS)
    ]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Celery's broker (db 1) and the NextLeg budget's store (db 2)."""
    with RedisServer(tmp_path_factory.mktemp("multihost-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # The documented limit, time-scaled; a Pro plan's 12 jobs at once and a long queue, so that nothing
    # but the rate limit is at stake.
    settings = EmulatorSettings(time_scale=TIME_SCALE, rate_limit=True, concurrency=12, queue_length=1000)
    with EmulatorServer(settings) as server:
        yield server


def nextleg_connection(emulator: EmulatorServer, **extra: Any) -> str:
    # expire_mins 60: a job that queues for long must not turn incomplete at this time scale
    return connection_with(emulator.airflow_connection_json(), expire_mins=60, **extra)


@pytest.fixture(scope="module")
def deployment(
    emulator: EmulatorServer,
    redis: RedisServer,
    postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MultiHostServices]:
    home: Path = tmp_path_factory.mktemp("multihost-airflow")
    services = MultiHostServices(
        home,
        nextleg_connection(emulator),
        dag_id=DAG_ID,
        database_url=postgres.url,
        broker_url=redis.url(db=1),
        worker_concurrency=4,  # the tasks mostly wait for their slots of the account, not for a CPU
        triggerer_capacity=40,  # more deferred tasks than that at once: both triggerers take some
        env={f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": redis.uri(db=2)},
    )
    started = time.monotonic()
    with services:
        print(f"\n[multihost] deployment healthy in {time.monotonic() - started:.0f} s")
        services.create_pool(POOL, 12, "NextLeg account (Pro): jobs at once")  # as the emulator's account
        yield services


def run_batch(deployment: MultiHostServices, emulator: EmulatorServer, label: str) -> BatchRun:
    emulator.reset()
    started = time.monotonic()
    run_id = deployment.trigger({"prompts": prompts(label)})
    state = deployment.wait_finished(run_id, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    ledger = [
        entry for entry in emulator.ledger() if json.loads(entry["ref"] or "{}").get("run_id") == run_id
    ]
    run = BatchRun(
        label=label,
        run_id=run_id,
        state=state,
        seconds=seconds,
        instances=deployment.task_instances(run_id),
        ledger=ledger,
        counters=emulator.counters(),
        logs=deployment.logs(),
    )
    print("\n" + run.report())
    return run


@pytest.fixture(scope="module")
def host_file_run(deployment: MultiHostServices, emulator: EmulatorServer) -> BatchRun:
    return run_batch(deployment, emulator, "host-file")


@pytest.fixture(scope="module")
def redis_run(deployment: MultiHostServices, emulator: EmulatorServer, host_file_run: BatchRun) -> BatchRun:
    deployment.restart_hosts(nextleg_connection(emulator, redis_conn_id=REDIS_CONN_ID))
    return run_batch(deployment, emulator, "redis")


def assert_complete_and_paid_once(run: BatchRun) -> None:
    assert run.state == "success", run.report() + "\n" + run.logs
    assert len(run.instances) == 1 + PROMPTS + 4 * PROMPTS
    assert {ti["state"] for ti in run.instances} == {"success"}, run.report()
    endpoints = Counter(entry["endpoint"] for entry in run.paid)
    assert endpoints == {"/v2/imagine": PROMPTS, "/v2/button": 4 * PROMPTS}, run.report()
    assert not duplicate_submissions(run.ledger)


def test_host_files_alone_the_batch_completes_paying_nothing_twice(host_file_run: BatchRun):
    """Each host paces itself: the 429s two hosts draw from one account are printed, not asserted."""
    assert_complete_and_paid_once(host_file_run)


def test_with_redis_the_batch_completes_paying_nothing_twice(redis_run: BatchRun):
    assert_complete_and_paid_once(redis_run)


def test_with_redis_no_request_draws_a_429(redis_run: BatchRun):
    assert redis_run.rate_limited == 0, redis_run.report()
