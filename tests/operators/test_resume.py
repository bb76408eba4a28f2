"""What a later execution of a task instance does with the job an earlier one submitted, without a database.

Each test drives the operators' ``execute`` as Airflow's tries do, against the emulator, with a task state
store kept in a dict (Airflow 3.3's ``task_state_store``, which outlives retries and clears): a failure is
injected somewhere after the submission, then the next try runs; the emulator's ledger says what was paid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.exceptions import NextLegJobFailedTerminalError, NextLegJobUnrecordedError
from airflow_provider_nextleg.operators import job_state
from airflow_provider_nextleg.operators.job_state import STATE_KEY
from airflow_provider_nextleg.operators.nextleg import (
    MESSAGE_ID_XCOM_KEY,
    SAME_RESULT_BUTTONS,
    SEED_BUTTON,
    ButtonOperator,
    ImagineOperator,
    NextLegJobOperator,
)


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
        except Exception as exc:
            yield exc
            if isinstance(exc, AirflowFailException):
                return
            continue
        yield result
        return


def imagine(**kwargs: Any) -> ImagineOperator:
    return ImagineOperator(task_id="imagine", prompt="a lighthouse at dawn", deferrable=False, **kwargs)


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
