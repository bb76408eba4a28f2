"""The batch example backfilled for 3 days on real Airflow services, in a pool sized to the account.

The emulator plays a Standard account strictly: 3 jobs at once and no queue, so a fourth job in flight
would end with ``QUEUE_FULL`` and be submitted again. The DAG is paused, as a new DAG is; the backfill is
made over REST as the UI's form makes it (without the form's unpause), with a prompt that names its day.
Its runs stay queued until the DAG is unpaused, then go together (the backfill's own ``max_active_runs``,
not the DAG's 1). With the pool (3 slots, deferred tasks counted), every task succeeds, each run pays
for exactly its N grids and 4N upscales, none twice, and the emulator's job timelines never show more
than 3 jobs at once.

About 2.5 minutes, most of it the 15 jobs in 5 waves of 3: each job outlasts the operators' 5 s on the
worker by 10 s or more, so every job task defers (and keeps its slot in the triggerer) and none meets
Airflow's deferral race (see the README).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, duplicate_submissions

from .services import AirflowServices

pytestmark = pytest.mark.services

DAG_ID = "nextleg_daily_batch"
POOL = "nextleg"  # the example's NEXTLEG_POOL
SLOTS = 3
"""A Standard account's jobs at once."""
FROM_DATE, TO_DATE = "2026-11-01", "2026-11-03"
DAYS = 3
PROMPTS = ["a lighthouse on a cliff on {ds}, watercolour"]
"""N = 1: one grid and four upscales a day, each day's prompt (and so its jobs) its own."""
PAUSED_LOOK = 5.0
"""Seconds the paused DAG's backfill is watched: five scheduler loops."""
RUN_TIMEOUT = 480.0


@dataclass
class Backfilled:
    """What the backfill left: its runs (queued while paused, then done), the pool, the emulator's view."""

    queued_while_paused: list[str]
    backfill: dict[str, Any]
    pool: dict[str, Any]
    runs: list[dict[str, Any]]
    instances: dict[str, list[dict[str, Any]]]
    ledger: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    seconds: float
    logs: str

    def paid_by(self, run_id: str) -> Counter[str]:
        """The jobs a run paid for, by endpoint."""
        return Counter(
            entry["endpoint"]
            for entry in self.ledger
            if entry["messageId"] is not None and json.loads(entry["ref"])["run_id"] == run_id
        )


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (one that ends as another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
    return most


def job_intervals(jobs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each job from its submission to its result: the time the account holds it."""
    return [(job["created"], job["finished"]) for job in jobs]


def run_intervals(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    def moment(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return [(moment(run["start_date"]), moment(run["end_date"])) for run in runs]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # Jobs of 15 to 19 s: 10 s and more past the operators' 5 s wait on the worker, so each job task
    # defers (holding its slot in the triggerer) and its trigger fires well after the deferral.
    settings = EmulatorSettings(
        time_scale=0.25,
        rate_limit=False,
        concurrency=SLOTS,
        queue_length=0,
        min_duration=60.0,
        max_duration=76.0,
    )
    with EmulatorServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def backfilled(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Backfilled:
    home: Path = tmp_path_factory.mktemp("airflow-backfill")
    with AirflowServices(home, emulator.airflow_connection_json(), dag_id=DAG_ID) as services:
        started = time.monotonic()
        services.create_pool(POOL, SLOTS, "NextLeg account: jobs at once")
        set_paused(services, True)
        backfill = services.backfill(FROM_DATE, TO_DATE, conf={"prompts": PROMPTS})
        time.sleep(PAUSED_LOOK)
        queued = backfill_runs(services)
        set_paused(services, False)
        run_ids = [run["dag_run_id"] for run in queued]
        for run_id in run_ids:
            services.wait_finished(run_id, timeout=RUN_TIMEOUT)
        result = Backfilled(
            queued_while_paused=[run["state"] for run in queued],
            backfill=backfill,
            pool=services.api.get(f"/api/v2/pools/{POOL}").json(),
            runs=backfill_runs(services),
            instances={run_id: services.task_instances(run_id) for run_id in run_ids},
            ledger=emulator.ledger(),
            jobs=emulator.jobs(),
            seconds=time.monotonic() - started,
            logs=services.logs(),
        )
    retried = sum(ti["try_number"] > 1 for instances in result.instances.values() for ti in instances)
    jobs_at_once, runs_at_once = (
        most_at_once(job_intervals(result.jobs)),
        most_at_once(run_intervals(result.runs)),
    )
    print(
        f"\n[backfill] {DAYS} days backfilled in {result.seconds:.0f} s: {len(result.jobs)} jobs, at most "
        f"{jobs_at_once} at once; at most {runs_at_once} runs at once (the backfill's max_active_runs: "
        f"{backfill['max_active_runs']}); {retried} tries retried"
    )
    return result


def set_paused(services: AirflowServices, paused: bool) -> None:
    services.api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": paused}).raise_for_status()


def backfill_runs(services: AirflowServices) -> list[dict[str, Any]]:
    runs = services.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()["dag_runs"]
    return [run for run in runs if run["run_type"] == "backfill"]


def test_the_pool_counts_deferred_tasks(backfilled: Backfilled):
    assert (backfilled.pool["slots"], backfilled.pool["include_deferred"]) == (SLOTS, True)


def test_a_paused_dags_backfill_waits_queued(backfilled: Backfilled):
    assert backfilled.queued_while_paused == ["queued"] * DAYS


def test_the_backfill_has_its_own_max_active_runs(backfilled: Backfilled):
    assert backfilled.backfill["max_active_runs"] >= DAYS  # not the DAG's max_active_runs=1


def test_every_run_and_task_succeeds(backfilled: Backfilled):
    assert len(backfilled.runs) == DAYS
    assert {run["state"] for run in backfilled.runs} == {"success"}, backfilled.logs
    for run_id, instances in backfilled.instances.items():
        assert len(instances) == 1 + 5 * len(PROMPTS), run_id
        assert {ti["state"] for ti in instances} == {"success"}, run_id


def test_each_run_pays_for_its_grids_and_upscales_once(backfilled: Backfilled):
    for run in backfilled.runs:
        paid = backfilled.paid_by(run["dag_run_id"])
        assert paid == {"/v2/imagine": len(PROMPTS), "/v2/button": 4 * len(PROMPTS)}, run["dag_run_id"]
    assert len(backfilled.jobs) == DAYS * 5 * len(PROMPTS)
    assert not duplicate_submissions(backfilled.ledger)
    assert [job["error"] for job in backfilled.jobs if job["error"]] == []  # no QUEUE_FULL


def test_no_more_jobs_at_once_than_the_pool_has_slots(backfilled: Backfilled):
    assert most_at_once(job_intervals(backfilled.jobs)) <= SLOTS
