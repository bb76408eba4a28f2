"""The fault campaign of issue 12, on real Airflow services (api-server, scheduler, dag-processor,
triggerer on SQLite, LocalExecutor): does anything get paid twice, stuck, or lost?

Ten runs of the chain imagine → V1 → U1 (``tests/dags/nextleg_fault_campaign.py``: deferrable, 4 retries)
meet what the service does to real clients, all at once: image jobs that fail 0.2 to 3 s after their
submission (a banned prompt, terminal; a moderation outage that ends mid-campaign; ``QUEUE_FULL`` from a
small queue), 5xx answers and dropped connections on polls (random, and scripted after the request was
processed), slow answers (within the request timeout, and beyond it on polls), 429s (a connection paced
faster than the emulator allows, and scripted ones), and a triggerer killed with SIGKILL while jobs wait.

Submissions meet scripted faults only (:data:`SUBMISSION_FAULTS`): a 5xx, processed or not, a connection
dropped after processing, an answer slower than the request timeout. Nothing can tell whether such a
request made a job, so its task fails for good, without a retry, and its chain with it.

Then: no job was paid twice (a request sent again while an earlier job for it had not failed), no task
is left unfinished, each submission fault failed one chain at its first try with the job paid at most
once (once where the request was processed), and every other chain without a terminal code succeeded.
On Airflow 3.3, a clear of a finished upscale returns its result without a new press. The figures are
printed for the closing note (``pytest -s``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TEST_DAGS
from packaging.version import Version

from airflow_provider_nextleg.emulator import (
    EmulatorServer,
    EmulatorSettings,
    Fault,
    FaultSettings,
    duplicate_submissions,
)

from .services import AirflowServices, connection_with, wait_for

pytestmark = pytest.mark.services

DAG_ID = "nextleg_fault_campaign"
HAS_TASK_STATE = Version(__import__("airflow").__version__) >= Version("3.3.0")
TIME_SCALE = 0.2
"""Real seconds per simulated second: drawing takes 10 to 15 s, refusals come 0.2 to 3 s after the
submission, the rate limit allows a request every 0.6 s."""
BANNED, OUTAGE = "forbidden lotus", "storm over a lighthouse"
PROMPTS = [
    "a quiet harbour",
    "a birch forest in fog",
    f"a {BANNED} in a pond",
    "a paper boat on a river",
    f"a {OUTAGE}",
    "a red kite over a hill",
    "a tin robot reading",
    f"another {BANNED}",
    "a lantern in the snow",
    "a glass of cold tea",
]
TERMINAL = {prompt for prompt in PROMPTS if BANNED in prompt}
SCRIPTED_429S = 3
FINISHED = {"success", "failed", "upstream_failed", "skipped"}
REQUEST_TIMEOUT = 5.0
"""The connection's ``timeout``: a read given no answer within it is retried, a submission is not."""
SUBMISSIONS = ("/v2/imagine", "/v2/button")
SUBMISSION_FAULTS = [  # the first presses meet them, one each: each fails its chain, never retried
    Fault("/v2/button", "status", status=503, processed=True),  # processed, the answer lost
    Fault("/v2/button", "status", status=502),  # refused before the service: no job
    Fault("/v2/button", "drop", processed=True),
    Fault("/v2/button", "slow", seconds=REQUEST_TIMEOUT + 1),  # processed after the client gave up
]
REACHED_THE_SERVICE = [int(fault.processed or fault.kind == "slow") for fault in SUBMISSION_FAULTS]
"""How often each faulty submission reached the service: there it made a job, or met the account's rate
limit (the connection is paced faster than the emulator allows), which the client never heard of either."""


def shielded(path: str) -> Fault:
    """
    A fault that changes nothing (a slow answer of 0 s) for every request to ``path``. Scripted faults
    are matched before the random draw, so this keeps the random 5xx and drops off a submission, where
    each would fail a chain at random: scripted first, the submission faults still apply.
    """
    return Fault(path, "slow", seconds=0.0, count=1_000_000)


FAULTS = FaultSettings(
    error_rate=0.03,
    drop_rate=0.03,
    slow_rate=0.03,
    slow_seconds=1.0,  # within the connection's timeout: the answer comes, late
    forced_codes={BANNED: "BANNED_PROMPT", OUTAGE: "MODERATION_OUTAGE"},
    scripted=[
        Fault("/v2/imagine", "status", status=429, count=SCRIPTED_429S),  # surely not processed: resent
        Fault("/v2/message", "slow", seconds=REQUEST_TIMEOUT + 1, count=2),  # a read is retried
        Fault("/v2/message", "drop", processed=True, count=3),
        Fault("/v2/message", "status", status=502, processed=True, count=3),
        *SUBMISSION_FAULTS,
        *(shielded(path) for path in SUBMISSIONS),
    ],
)


def end_the_outage(emulator: EmulatorServer) -> None:
    """Midjourney's moderation is back: the same faults, the scripted ones still pending, no outage."""
    now = emulator.faults()
    emulator.set_faults(
        FaultSettings(
            **{name: value for name, value in now.items() if name not in ("forced_codes", "scripted")},
            forced_codes={BANNED: "BANNED_PROMPT"},
            scripted=[Fault(**fault) for fault in now["scripted"]],
        )
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    settings = EmulatorSettings(
        time_scale=TIME_SCALE,
        concurrency=4,
        queue_length=1,  # more than 5 jobs at once: QUEUE_FULL, after the bot's delay
        min_duration=50.0,
        max_duration=75.0,
        min_bot_delay=0.2 / TIME_SCALE,
        max_bot_delay=3.0 / TIME_SCALE,
        faults=FAULTS,
    )
    with EmulatorServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def services(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    # Paced faster than the emulator's 0.6 s: some requests meet a 429 and wait its Retry-After.
    connection = connection_with(
        emulator.airflow_connection_json(), rate_limit_interval=0.45, timeout=REQUEST_TIMEOUT
    )
    home = tmp_path_factory.mktemp("fault-campaign")
    with AirflowServices(
        home, connection, dag_id=DAG_ID, env={"AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS)}
    ) as running:
        yield running


def paid_twice(emulator: EmulatorServer) -> list[list[dict[str, Any]]]:
    """Groups of submissions of the same request where one came while an earlier job for it had not
    failed: a retry after a failed job is a new attempt, anything else a second payment."""
    failed = {job["messageId"] for job in emulator.jobs() if job["error"]}
    twice = []
    for group in duplicate_submissions(emulator.ledger()):
        ordered = sorted(group, key=lambda entry: entry["time"])
        if any(entry["messageId"] not in failed for entry in ordered[:-1]):
            twice.append(ordered)
    return twice


def codes(emulator: EmulatorServer) -> Counter[str]:
    """How many jobs ended with each error code."""
    return Counter(job["error"] for job in emulator.jobs() if job["error"])


def submitter(entry: dict[str, Any]) -> tuple[str, str]:
    """The run and the task that sent a ledger entry, from its ``ref``."""
    ref = json.loads(entry["ref"])
    return ref["run_id"], ref["task_id"]


def failed_uncertain(services: AirflowServices, run_id: str) -> dict[str, Any] | None:
    """The run's task that failed on a submission of unknown fate (its log names the error), if any."""
    for ti in services.task_instances(run_id):
        task_log = (
            services.home
            / "logs"
            / f"dag_id={DAG_ID}"
            / f"run_id={run_id}"
            / f"task_id={ti['task_id']}"
            / f"attempt={ti['try_number']}.log"
        )
        if ti["state"] == "failed" and "NextLegSubmissionUncertainError" in task_log.read_text(
            errors="replace"
        ):
            return ti
    return None


def test_the_campaign_pays_nothing_twice_and_leaves_nothing_stuck(
    services: AirflowServices, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
):
    started = time.monotonic()
    runs = {services.trigger({"prompt": prompt}): prompt for prompt in PROMPTS}
    wait_for(
        lambda: (
            sum(ti["state"] == "deferred" for run_id in runs for ti in services.task_instances(run_id)) >= 3
        ),
        120,
        "three deferred tasks",
        0.3,
    )
    services.kill("triggerer")
    time.sleep(2)
    services.start("triggerer")
    wait_for(lambda: codes(emulator)["MODERATION_OUTAGE"] >= 2, 120, "the outage met twice", 0.3)
    end_the_outage(emulator)
    states = {run_id: services.wait_finished(run_id, timeout=240) for run_id in runs}
    elapsed = time.monotonic() - started
    uncertain = {run_id: ti for run_id in runs if (ti := failed_uncertain(services, run_id)) is not None}

    def sent_by(run_id: str) -> list[dict[str, Any]]:
        """What the service saw of the task that failed on an uncertain submission: its one request,
        if it got through, made a job (a ``messageId``) or was refused."""
        task_id = uncertain[run_id]["task_id"]
        return [entry for entry in emulator.ledger() if submitter(entry) == (run_id, task_id)]

    # A slow submission reaches the service once its fault's delay is over, long before the chains end.
    reached = sum(REACHED_THE_SERVICE)
    wait_for(lambda: sum(len(sent_by(run_id)) for run_id in uncertain) >= reached, 30, "the slow one", 0.3)

    instances = [ti for run_id in runs for ti in services.task_instances(run_id)]
    stuck = [ti for ti in instances if ti["state"] not in FINISHED]
    ledger = [entry for entry in emulator.ledger() if entry["messageId"]]
    counters = emulator.counters()
    figures = {
        "chains": len(runs),
        "chains succeeded": sum(state == "success" for state in states.values()),
        "chains with a terminal code": len(TERMINAL),
        "chains failed on an uncertain submission": len(uncertain),
        "jobs made by uncertain submissions": sum(
            entry["messageId"] is not None for run_id in uncertain for entry in sent_by(run_id)
        ),
        "jobs": len(ledger),
        "jobs failed": sum(bool(job["error"]) for job in emulator.jobs()),
        "codes": dict(codes(emulator)),
        "task retries": sum(max(0, ti["try_number"] - 1) for ti in instances),  # 0: never ran
        "tries": {
            f"{runs[ti['dag_run_id']][:12]}/{ti['task_id']}": ti["try_number"]
            for ti in instances
            if ti["try_number"] > 1
        },
        "429s": sum(counters["rate_limited"].values()) + SCRIPTED_429S,
        "faults injected": SCRIPTED_429S
        + len(SUBMISSION_FAULTS)
        + sum(count for key, count in counters["faults"].items() if key.split()[-1] not in SUBMISSIONS),
        "same request submitted again": len(duplicate_submissions(emulator.ledger())),
        "paid twice": len(paid_twice(emulator)),
        "stuck tasks": len(stuck),
        "seconds": round(elapsed),
    }
    with capsys.disabled():
        print(f"\nFault campaign: {json.dumps(figures)}")

    assert not paid_twice(emulator), paid_twice(emulator)
    assert not stuck, stuck
    # Each submission fault failed one chain for good: at the first try, paid once if it was processed.
    assert not set(uncertain) & {run_id for run_id, prompt in runs.items() if prompt in TERMINAL}
    assert [ti["try_number"] for ti in uncertain.values()] == [1] * len(SUBMISSION_FAULTS), uncertain
    assert sorted(len(sent_by(run_id)) for run_id in uncertain) == sorted(REACHED_THE_SERVICE), uncertain
    for run_id, prompt in runs.items():
        expected = "failed" if prompt in TERMINAL or run_id in uncertain else "success"
        assert states[run_id] == expected, (prompt, services.task_states(run_id), services.logs())
    for run_id, prompt in runs.items():
        if prompt in TERMINAL:  # refused once: never sent again, and nothing pressed on it
            assert [entry["endpoint"] for entry in ledger if submitter(entry)[0] == run_id] == ["/v2/imagine"]


@pytest.mark.skipif(
    not HAS_TASK_STATE, reason="Airflow 3.1 and 3.2 keep no task state: a clear presses again"
)
def test_a_cleared_upscale_returns_its_result_without_a_new_press(
    services: AirflowServices, emulator: EmulatorServer
):
    emulator.set_faults(FaultSettings())
    run_id = services.trigger({"prompt": "a harbour at night"})
    assert services.wait_finished(run_id) == "success", services.logs()
    task = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    upscale = services.api.get(f"{task}/upscale/xcomEntries/return_value").json()["value"]
    # The upscale keeps its job for a clear; the variation, which draws, forgot it.
    kept = services.api.get(f"{task}/upscale/state-store/nextleg_job").json()
    assert kept["value"]["message_id"] == upscale["message_id"]
    assert services.api.get(f"{task}/variation/state-store/nextleg_job").status_code == 404
    presses = len(emulator.ledger())
    tried = services.api.get(f"{task}/upscale").json()["try_number"]

    response = services.api.post(
        f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "task_ids": ["upscale"], "only_failed": False},
    )
    response.raise_for_status()
    wait_for(
        lambda: (
            (ti := services.api.get(f"{task}/upscale").json())["try_number"] > tried
            and ti["state"] == "success"
        ),
        60,
        "the cleared upscale",
    )
    again = services.api.get(f"{task}/upscale/xcomEntries/return_value").json()["value"]
    assert again == upscale
    assert len(emulator.ledger()) == presses  # no press, so no ALREADY_REQUESTED_UPSCALE

    # The README's way to get a new job instead: delete the key, then clear.
    assert services.api.delete(f"{task}/upscale/state-store/nextleg_job").status_code == 204
    assert services.api.get(f"{task}/upscale/state-store/nextleg_job").status_code == 404
