"""The job operators' checks of their arguments, without a database: what they refuse before any request."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.models import JobResult, MessageStatus
from airflow_provider_nextleg.operators.job_state import fingerprint
from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator, SeedOperator

UPSTREAM = JobResult(
    message_id="grid0000000000000000",
    status=MessageStatus.DONE,
    button_message_id="bmid0000000000000000",
    buttons=("U1", "U2", "🔄"),
).to_xcom()


def context() -> Any:
    ti = SimpleNamespace(dag_id="dag", run_id="manual__1", task_id="press", map_index=-1, try_number=1)
    return {"ti": ti}


def nothing_was_sent(emulator: EmulatorServer) -> bool:
    return emulator.counters()["requests"] == {} and emulator.ledger() == []


class TestButtonOperator:
    @pytest.mark.parametrize(
        "buttons",
        [
            pytest.param("U1,U2", id="a-string"),
            pytest.param(4, id="an-int"),
            pytest.param(["U1", 2], id="mixed"),
        ],
    )
    def test_buttons_of_the_wrong_type_are_refused_before_any_request(
        self, nextleg_emulator: EmulatorServer, buttons: Any
    ):
        operator = ButtonOperator(task_id="press", message=UPSTREAM | {"buttons": buttons}, button="U1")
        with pytest.raises(NextLegInputError, match=r"message is not a NextLeg job result \('buttons'"):
            operator.execute(context())
        assert nothing_was_sent(nextleg_emulator)

    @pytest.mark.parametrize("button", ["U", "u1", ":arrows_counterclockwise:", "U1 "])
    def test_the_button_must_be_offered_exactly(self, nextleg_emulator: EmulatorServer, button: str):
        operator = ButtonOperator(task_id="press", message=UPSTREAM, button=button)
        with pytest.raises(NextLegInputError, match="is not offered") as raised:
            operator.execute(context())
        assert "U1, U2, 🔄" in str(raised.value)
        assert nothing_was_sent(nextleg_emulator)

    def test_a_result_without_button_message_id_is_refused(self, nextleg_emulator: EmulatorServer):
        operator = ButtonOperator(
            task_id="press", message=UPSTREAM | {"button_message_id": None}, button="U1"
        )
        with pytest.raises(NextLegInputError, match="has no button_message_id"):
            operator.execute(context())
        assert nothing_was_sent(nextleg_emulator)


class TestSeedOperator:
    def test_a_result_that_is_not_one_is_refused_before_any_request(self, nextleg_emulator: EmulatorServer):
        operator = SeedOperator(task_id="seed", message={"message_id": "m1", "status": "queued"})
        with pytest.raises(NextLegInputError, match="'status'"):
            operator.execute(context())
        assert nothing_was_sent(nextleg_emulator)


class TestWaitingArguments:
    """The arguments that only matter after the submission are checked when the operator is made."""

    @pytest.mark.parametrize(
        "bad",
        [
            {"wait_timeout": "abc"},
            {"wait_timeout": -5},
            {"wait_timeout": 0},
            {"wait_timeout": float("inf")},
            {"worker_wait": "abc"},
            {"worker_wait": float("nan")},
            {"poll_interval": "abc"},
            {"poll_interval": -1},
            {"expire_mins": float("nan")},
            {"expire_mins": 0},
            {"wait_for_completion": "no"},
        ],
        ids=lambda bad: "-".join(f"{name}={value}" for name, value in bad.items()),
    )
    def test_refused_before_anything_is_sent(self, bad: dict[str, Any]):
        (name,) = bad
        with pytest.raises(NextLegInputError, match=name):
            ImagineOperator(task_id="imagine", prompt="a cat", **bad)

    def test_durations_may_be_timedeltas(self):
        operator = ImagineOperator(
            task_id="imagine", prompt="a cat", wait_timeout=timedelta(minutes=2), worker_wait=timedelta(0)
        )
        assert (operator.wait_timeout, operator.worker_wait) == (120.0, 0.0)


class TestFingerprint:
    """A retry recognises its earlier job by the request, whatever try (ref) or webhook sent it."""

    def test_the_ref_and_the_webhook_do_not_change_the_request(self):
        first = calls.imagine("a cat", '{"try_number":1}', None, None)
        second = calls.imagine("a cat", '{"try_number":2}', "https://hooks.example/x", None)
        assert fingerprint(first) == fingerprint(second)

    def test_what_the_job_is_made_of_does(self):
        assert fingerprint(calls.imagine("a cat", None, None, None)) != fingerprint(
            calls.imagine("a dog", None, None, None)
        )
        grid = "grid0000000000000000"
        pressed = [calls.button(button, grid, None, None, None, None, None) for button in ("U1", "U2")]
        assert fingerprint(pressed[0]) != fingerprint(pressed[1])


def test_on_kill_says_the_job_goes_on_and_is_paid_for(capsys: pytest.CaptureFixture[str]):
    operator = ImagineOperator(task_id="imagine", prompt="a cat")
    operator.on_kill()  # nothing submitted yet: nothing to say
    assert "keeps running" not in "".join(capsys.readouterr())
    operator.message_id = "job00000000000000000"
    operator.on_kill()
    said = "".join(capsys.readouterr())
    assert "NextLeg job job00000000000000000 keeps running at Midjourney and is paid for" in said
