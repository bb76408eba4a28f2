"""A submission whose fate is unknown fails its task for good, in real DAG runs (``dag.test()``) against
the emulator: the API finds a job only by the message id the lost answer held, so a retry could not look
for the job before submitting again, and would pay twice whenever the first request was processed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState
from hooks.helpers import CONN, connection_json

from airflow_provider_nextleg.emulator import EmulatorServer, Fault

from .test_dags import run

DAG_ID = "nextleg_test_uncertain_submission"
TIMEOUT = 0.5
"""The connection's request timeout in the read-timeout case: a slow answer takes four times longer."""
pytestmark = pytest.mark.usefixtures("airflow_db")


def paid(emulator: EmulatorServer) -> list[dict[str, Any]]:
    """The accepted submissions: the jobs the account pays for."""
    return [entry for entry in emulator.ledger() if entry["messageId"]]


def wait_for_jobs(emulator: EmulatorServer, count: int) -> list[dict[str, Any]]:
    """The paid jobs once ``count`` are there (a slow request is processed after the client gave up), or
    after a generous 10 s."""
    deadline = time.monotonic() + 10
    while len(paid(emulator)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return paid(emulator)


@pytest.mark.parametrize(
    ("fault", "jobs_created"),
    [
        pytest.param(Fault("/v2/imagine", "status", status=503, processed=True), 1, id="503-processed"),
        pytest.param(Fault("/v2/imagine", "status", status=503), 0, id="503-not-processed"),
        pytest.param(Fault("/v2/imagine", "drop", processed=True), 1, id="dropped-after-processing"),
        pytest.param(Fault("/v2/imagine", "slow", seconds=4 * TIMEOUT), 1, id="read-timeout"),
    ],
)
def test_an_uncertain_submission_fails_the_task_without_a_retry(
    dags: Any,
    nextleg_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    jobs_created: int,
):
    monkeypatch.setenv(CONN, connection_json(nextleg_emulator, timeout=TIMEOUT))
    nextleg_emulator.add_fault(fault)
    dag_run, tis = run(dags[DAG_ID])
    output = capsys.readouterr()
    logs = output.out + output.err

    assert dag_run.state == DagRunState.FAILED
    assert tis["imagine"].state == TaskInstanceState.FAILED
    assert tis["imagine"].try_number == 1  # three retries left, none spent
    assert nextleg_emulator.counters()["requests"]["POST /v2/imagine"] == 1
    jobs = wait_for_jobs(nextleg_emulator, jobs_created)
    assert len(jobs) == jobs_created  # whether or not it was created, it is paid for once at most
    assert "NextLegSubmissionUncertainError" in logs
    assert "the task fails without retrying" in logs
    assert '"task_id":"imagine"' in logs  # the ref that identifies the job, if it was created
    assert nextleg_emulator.settings.token not in logs


def test_a_submission_refused_by_the_rate_limit_is_resent_and_succeeds(
    dags: Any, nextleg_emulator: EmulatorServer
):
    nextleg_emulator.add_fault(Fault("/v2/imagine", "status", status=429))
    dag_run, tis = run(dags[DAG_ID])
    assert dag_run.state == DagRunState.SUCCESS
    assert tis["imagine"].try_number == 1  # resent by the hook, within the try
    assert nextleg_emulator.counters()["requests"]["POST /v2/imagine"] == 2
    assert len(paid(nextleg_emulator)) == 1
