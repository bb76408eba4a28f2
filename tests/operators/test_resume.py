"""What a later execution of a task instance does with the job an earlier one submitted, without a database.

Each test drives the operators' ``execute`` as Airflow's tries do, against the emulator, with a task state
store kept in a dict (Airflow 3.3's ``task_state_store``, which outlives retries and clears): a failure is
injected somewhere after the submission, then the next try runs; the emulator's ledger says what was paid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from servers import wait_for

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings
from airflow_provider_nextleg.emulator.pytest_plugin import SESSION_SETTINGS
from airflow_provider_nextleg.exceptions import (
    NextLegJobFailedError,
    NextLegJobFailedTerminalError,
    NextLegJobUnrecordedError,
)
from airflow_provider_nextleg.operators import job_state
from airflow_provider_nextleg.operators.job_state import STATE_KEY
from airflow_provider_nextleg.operators.nextleg import (
    IMAGE_JOB_WORKER_WAIT,
    MESSAGE_ID_XCOM_KEY,
    QUICK_JOB_WORKER_WAIT,
    SAME_RESULT_BUTTONS,
    SEED_BUTTON,
    ButtonOperator,
    ImagineOperator,
    NextLegJobOperator,
)
from airflow_provider_nextleg.triggers.nextleg import wait_in_process


class Refused(RuntimeError):
    """A failure injected into Airflow's side of a task (its state store, its XComs, its trigger)."""


@dataclass
class Store:
    """A task state store in a dict; ``refusals`` of its next writes raise."""

    values: dict[str, Any] = field(default_factory=dict)
    refusals: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self.refusals:
            self.refusals -= 1
            raise Refused("the API server is unreachable")
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@dataclass
class TaskInstance:
    """The task instance of a context: one try of it; pushing ``refused_key`` raises once."""

    try_number: int = 1
    refused_key: str | None = None
    xcoms: dict[str, Any] = field(default_factory=dict)
    dag_id: str = "dag"
    run_id: str = "manual__1"
    task_id: str = "imagine"
    map_index: int = -1

    def xcom_push(self, key: str, value: Any) -> None:
        if key == self.refused_key:
            self.refused_key = None
            raise Refused(f"XCom {key} could not be pushed")
        self.xcoms[key] = value


def tries(operator: NextLegJobOperator, store: Store, ti: TaskInstance, attempts: int = 3) -> Iterator[Any]:
    """Run the operator's tries as Airflow does from ``ti``'s try on, sharing one task state store: yield
    each try's outcome (its result, or its error), stopping at a success or a terminal error."""
    for try_number in range(ti.try_number, ti.try_number + attempts):
        ti.try_number = try_number
        try:
            result = operator.execute({"ti": ti, "task_state_store": store})  # type: ignore[arg-type]
        except TaskDeferred as deferred:
            yield deferred  # the trigger's wait is the next step, which the test takes
            return
        except Exception as exc:
            yield exc
            if isinstance(exc, AirflowFailException):
                return
            continue
        yield result
        return


def imagine(**kwargs: Any) -> ImagineOperator:
    return ImagineOperator(
        task_id="imagine", prompt="a lighthouse at dawn", **{"deferrable": False, **kwargs}
    )


def paid(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [entry for entry in emulator.ledger() if entry["messageId"]]


class TestSubmittedJobsAreNeverPaidTwice:
    """Once a submission may have created a job, no error of ours may lead to a resubmission of the same
    request without looking for the job first: the id is kept before anything else can fail."""

    @pytest.mark.parametrize(
        "inject",
        [
            pytest.param(
                lambda store, ti, monkeypatch: setattr(ti, "refused_key", MESSAGE_ID_XCOM_KEY), id="xcom"
            ),
            pytest.param(lambda store, ti, monkeypatch: setattr(store, "refusals", 1), id="store-once"),
            pytest.param(
                lambda store, ti, monkeypatch: monkeypatch.setattr(
                    NextLegJobOperator, "_trigger", _refuse_once(NextLegJobOperator._trigger)
                ),
                id="trigger",
            ),
            pytest.param(
                lambda store, ti, monkeypatch: monkeypatch.setattr(
                    NextLegJobOperator, "_wait", _refuse_once(NextLegJobOperator._wait)
                ),
                id="wait",
            ),
        ],
    )
    def test_a_failure_after_the_submission_is_resumed_by_the_next_try(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, inject: Any
    ):
        monkeypatch.setattr(job_state.time, "sleep", lambda seconds: None)
        store, ti = Store(), TaskInstance()
        inject(store, ti, monkeypatch)
        outcomes = list(tries(imagine(), store, ti))
        assert isinstance(outcomes[-1], dict), outcomes  # the last try succeeded
        [submission] = paid(nextleg_emulator)
        assert outcomes[-1]["message_id"] == submission["messageId"]
        assert outcomes[-1]["submitted_by"]["try_number"] == 1

    def test_a_store_that_refuses_the_id_fails_the_task_for_good_naming_the_job(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setattr(job_state.time, "sleep", lambda seconds: None)
        store = Store(refusals=job_state.RECORD_ATTEMPTS)
        [outcome] = tries(imagine(), store, TaskInstance())
        [submission] = paid(nextleg_emulator)
        assert isinstance(outcome, NextLegJobUnrecordedError)
        assert isinstance(outcome, AirflowFailException)  # a retry would not find the job: not retried
        assert submission["messageId"] in str(outcome)
        assert STATE_KEY not in store.values


def _refuse_once(method: Any) -> Any:
    """``method``, whose first call raises :class:`Refused`."""
    calls: list[object] = []

    def refusing(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise Refused(f"{method.__name__} failed")
        return method(*args, **kwargs)

    return refusing


def finished_grid() -> dict[str, Any]:
    """A finished imagine, as the upstream task's result."""
    [outcome] = tries(imagine(), Store(), TaskInstance())
    return outcome


def press(grid: dict[str, Any], button: str) -> ButtonOperator:
    return ButtonOperator(task_id="press", message=grid, button=button, deferrable=False)


class TestClearingAFinishedTask:
    """A clear runs the task instance again, with the same task state store."""

    @pytest.mark.parametrize("button", sorted(SAME_RESULT_BUTTONS & {"U1", "U4", SEED_BUTTON}))
    def test_a_button_that_can_only_give_the_same_result_returns_it(
        self, nextleg_emulator: EmulatorServer, button: str
    ):
        grid, store = finished_grid(), Store()
        [first] = tries(press(grid, button), store, TaskInstance(task_id="press"))
        [again] = tries(press(grid, button), store, TaskInstance(task_id="press", try_number=2))
        assert again == first  # the same job, submitted by the first try
        assert [entry.get("payload", {}).get("button") for entry in paid(nextleg_emulator)] == [None, button]

    @pytest.mark.parametrize("button", ["V1", "🔄"])
    def test_a_button_that_draws_makes_a_new_job(self, nextleg_emulator: EmulatorServer, button: str):
        grid, store = finished_grid(), Store()
        [first] = tries(press(grid, button), store, TaskInstance(task_id="press"))
        [again] = tries(press(grid, button), store, TaskInstance(task_id="press", try_number=2))
        assert again["message_id"] != first["message_id"]
        assert again["submitted_by"]["try_number"] == 2
        assert len(paid(nextleg_emulator)) == 3

    def test_an_imagine_makes_a_new_job(self, nextleg_emulator: EmulatorServer):
        store = Store()
        [first] = tries(imagine(), store, TaskInstance())
        [again] = tries(imagine(), store, TaskInstance(try_number=2))
        assert again["message_id"] != first["message_id"]

    def test_without_a_task_state_store_an_upscale_is_pressed_again_and_refused(
        self, nextleg_emulator: EmulatorServer
    ):
        # Airflow 3.1 and 3.2: nothing outlives the task's try but the upstream's result.
        grid = finished_grid()
        [_first] = tries(press(grid, "U1"), Store(), TaskInstance(task_id="press"))
        [again] = tries(press(grid, "U1"), Store(), TaskInstance(task_id="press", try_number=2))
        assert isinstance(again, NextLegJobFailedTerminalError)
        assert again.code == "ALREADY_REQUESTED_UPSCALE"


class TestQuickFailures:
    """Midjourney refuses a job within 1 to 3 s; a trigger that fires that soon after the deferral is what
    Airflow's scheduler can get wrong (apache/airflow#72716): it fails the try, whose failure nobody reads."""

    @pytest.mark.parametrize("seconds", [0.2, 3.0])
    @pytest.mark.parametrize("code", ["BANNED_PROMPT", "MODERATION_OUTAGE"])
    def test_an_image_job_refused_within_seconds_fails_on_the_worker_without_deferring(
        self, nextleg_emulator: EmulatorServer, seconds: float, code: str
    ):
        delay = seconds / SESSION_SETTINGS.time_scale
        nextleg_emulator.configure(min_bot_delay=delay, max_bot_delay=delay)
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"lighthouse": code}))
        [outcome] = list(tries(imagine(deferrable=True), Store(), TaskInstance(), attempts=1))
        assert isinstance(outcome, NextLegJobFailedError)  # not TaskDeferred
        assert outcome.code == code

    def test_image_jobs_wait_on_the_worker_past_the_refusals_quick_jobs_longer(self):
        assert IMAGE_JOB_WORKER_WAIT > 3.0
        assert imagine(deferrable=True).worker_wait is None  # resolved at the wait
        assert QUICK_JOB_WORKER_WAIT > IMAGE_JOB_WORKER_WAIT

    @pytest.mark.parametrize(
        ("code", "submissions"), [("BANNED_PROMPT", 1), ("FAILED_TO_PROCESS_YOUR_COMMAND", 2)]
    )
    def test_a_try_lost_while_deferred_is_followed_as_it_would_have_ended(
        self, nextleg_emulator: EmulatorServer, code: str, submissions: int
    ):
        # The first try defers at once; its job fails; Airflow fails that try before execute_complete runs,
        # and the next try (or a stale copy of the first) runs execute() again.
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"lighthouse": code}))
        store, ti = Store(), TaskInstance()
        [deferred] = list(tries(imagine(deferrable=True, worker_wait=0), store, ti, attempts=1))
        assert isinstance(deferred, TaskDeferred)
        wait_for(lambda: nextleg_emulator.jobs()[0]["finished"] < time.time(), 10, "the job's failure")
        ti.try_number = 2
        [again] = list(tries(imagine(), store, ti, attempts=1))
        assert len(paid(nextleg_emulator)) == submissions
        if submissions == 1:  # terminal: the same request is never sent again
            assert isinstance(again, NextLegJobFailedTerminalError)
            assert again.code == code
        else:  # retryable: the lost try's retry submits anew, as it would have
            assert isinstance(again, NextLegJobFailedError)
        assert STATE_KEY not in store.values  # reported now: a clear submits anew

    def test_a_reported_failure_is_forgotten_so_a_clear_submits_anew(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"lighthouse": "NO_FAST_HOURS"}))
        store = Store()
        [failed] = tries(imagine(), store, TaskInstance())
        assert isinstance(failed, NextLegJobFailedTerminalError)
        nextleg_emulator.set_faults(FaultSettings())  # the account got its hours back
        [cleared] = tries(imagine(), store, TaskInstance(try_number=2))
        assert cleared["status"] == "done"
        assert len(paid(nextleg_emulator)) == 2


class TestMarkedFailedThenCleared:
    """Marking a running task failed does not stop its job (the API has no cancel): a clear resumes it."""

    def test_the_clear_resumes_the_job_and_says_which_try_submitted_it(
        self, nextleg_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ):
        nextleg_emulator.configure(min_duration=100.0, max_duration=100.0)  # 1 s
        store = Store()
        [deferred] = tries(imagine(deferrable=True, worker_wait=0), store, TaskInstance(try_number=1))
        assert isinstance(deferred, TaskDeferred)  # ... and the task is marked failed meanwhile
        capsys.readouterr()
        [cleared] = tries(imagine(), store, TaskInstance(try_number=2))
        logs = "".join(capsys.readouterr())
        [submission] = paid(nextleg_emulator)
        assert cleared["message_id"] == submission["messageId"]
        assert f"Job {submission['messageId']}, submitted by try 1 of this task instance, is still" in logs
        assert f"delete this task instance's task state key '{STATE_KEY}'" in logs

    def test_deleting_the_state_key_gets_a_new_job(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.configure(min_duration=100.0, max_duration=100.0)
        store = Store()
        [_deferred] = tries(imagine(deferrable=True, worker_wait=0), store, TaskInstance(try_number=1))
        store.delete(STATE_KEY)  # what DELETE .../taskInstances/<task>/state-store/nextleg_job does
        [cleared] = tries(imagine(), store, TaskInstance(try_number=2))
        assert cleared["submitted_by"]["try_number"] == 2
        assert len(paid(nextleg_emulator)) == 2


class TestAReplayedEvent:
    """Airflow 3.1 keeps a deferred try's resume method when the try fails: each retry is handed the
    failed try's event instead of running ``execute``, which would only repeat the failure."""

    def test_an_earlier_trys_failure_handed_to_a_retry_runs_the_task_afresh(
        self, nextleg_emulator: EmulatorServer
    ):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"lighthouse": "QUEUE_FULL"}))
        [deferred] = tries(imagine(deferrable=True, worker_wait=0), Store(), TaskInstance())
        event = asyncio.run(wait_in_process(deferred.trigger))
        with pytest.raises(NextLegJobFailedError, match="QUEUE_FULL"):  # the try that deferred: its failure
            imagine().execute_complete({"ti": TaskInstance()}, event)  # type: ignore[arg-type]
        nextleg_emulator.set_faults(FaultSettings())  # the queue has room again
        retry = {"ti": TaskInstance(try_number=2)}  # 3.1: and no task state store
        result = imagine().execute_complete(retry, event)  # type: ignore[arg-type]
        assert result["status"] == "done"
        assert result["submitted_by"]["try_number"] == 2
        assert len(paid(nextleg_emulator)) == 2
