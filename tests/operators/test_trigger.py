"""The message trigger, run as the triggerer runs it, against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.bases.xcom import BaseXCom

from airflow_provider_nextleg.emulator import EmulatorServer, Fault, FaultSettings
from airflow_provider_nextleg.exceptions import (
    AirflowFailException,
    NextLegAuthenticationError,
    NextLegError,
    NextLegInputError,
    NextLegJobFailedError,
    NextLegJobFailedTerminalError,
    NextLegJobIncompleteError,
    NextLegNotFoundError,
    NextLegSubmissionUncertainError,
    NextLegWaitError,
    NextLegWaitTerminalError,
    NextLegWaitTimeoutError,
    error_from_payload,
    error_to_payload,
    read_result,
)
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.models import MessageStatus
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger, read_event

POLL = 0.02


def rebuild(trigger: NextLegMessageTrigger) -> NextLegMessageTrigger:
    """What a triggerer does: import the classpath and construct the trigger from its kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


async def events(trigger: NextLegMessageTrigger) -> list[dict[str, Any]]:
    try:
        return [event.payload async for event in rebuild(trigger).run()]
    finally:
        await NextLegHook.aclose_clients()


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What was logged: Airflow's structlog renders task and trigger logs to the standard streams."""
    captured = capsys.readouterr()
    return (captured.out + captured.err).splitlines()


def submit(prompt: str = "a lighthouse at dawn") -> str:
    return NextLegHook().imagine(prompt).message_id


class TestSerialization:
    def test_round_trip_keeps_every_kwarg_and_no_secret(self, nextleg_emulator: EmulatorServer):
        trigger = NextLegMessageTrigger(
            message_id="abc123",
            nextleg_conn_id="nextleg_default",
            deadline=1.5e9,
            poll_interval=2.0,
            expire_mins=5,
            route_id="lb0000000000000000",
            try_number=2,
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_provider_nextleg.triggers.nextleg.NextLegMessageTrigger"
        assert rebuild(trigger).serialize() == (classpath, kwargs)
        assert kwargs == {
            "message_id": "abc123",
            "nextleg_conn_id": "nextleg_default",
            "deadline": 1.5e9,
            "poll_interval": 2.0,
            "expire_mins": 5,
            "route_id": "lb0000000000000000",
            "job_key": None,
            "reconcile_after": None,
            "try_number": 2,
        }
        assert nextleg_emulator.settings.token not in json.dumps(kwargs) + repr(trigger)


class TestRun:
    async def test_one_event_with_the_finished_result(self, nextleg_emulator: EmulatorServer):
        message_id = submit()
        [event] = await events(NextLegMessageTrigger(message_id=message_id, poll_interval=POLL))
        assert set(event) == {"status", "message_id", "try_number", "result"}
        assert event["status"] == "done"
        assert json.loads(json.dumps(event)) == event  # what the triggerer can store
        result = read_event(event)
        assert result.message_id == message_id
        assert result.type == "imagine"
        assert result.buttons == ("U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4")
        assert result.image_url
        assert len(result.image_urls) == 4
        assert result.button_message_id

    async def test_progress_is_logged_when_it_changes_not_per_poll(
        self, nextleg_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ):
        nextleg_emulator.configure(min_duration=200.0, max_duration=200.0)  # 2 s: seen running, however slow
        message_id = submit()
        await events(NextLegMessageTrigger(message_id=message_id, poll_interval=0.005))
        progress_lines = [line for line in log_lines(capsys) if "% done; preview:" in line]
        polls = nextleg_emulator.counters()["requests"]["GET /v2/message"]
        assert progress_lines, "progress was never logged"
        assert all("/cdn/" in line for line in progress_lines), progress_lines
        steps = [re.search(r"is (\d+)% done", line)[1] for line in progress_lines]
        assert len(steps) == len(set(steps)), steps  # each step once
        assert polls > len(progress_lines) + 2  # more polls than lines: no line per poll

    async def test_queued_job_waits_then_finishes(
        self, nextleg_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ):
        nextleg_emulator.configure(concurrency=1, min_duration=200.0, max_duration=200.0)  # 2 s each
        submit("first in line")
        second = submit("second in line")
        [event] = await events(NextLegMessageTrigger(message_id=second, poll_interval=POLL))
        assert event["status"] == "done"
        assert any(f"job {second} is queued" in line for line in log_lines(capsys))

    @pytest.mark.parametrize(
        ("code", "error_class", "terminal"),
        [
            ("BANNED_PROMPT", NextLegJobFailedTerminalError, True),
            ("INVALID_PARAMETER", NextLegJobFailedTerminalError, True),
            ("FAILED_TO_PROCESS_YOUR_COMMAND", NextLegJobFailedError, False),
            ("QUEUE_FULL", NextLegJobFailedError, False),
        ],
    )
    async def test_error_code_at_progress_100_ends_with_that_code(
        self, nextleg_emulator: EmulatorServer, code: str, error_class: type, terminal: bool
    ):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"sunflower": code}))
        message_id = submit("a sunflower field")
        [event] = await events(NextLegMessageTrigger(message_id=message_id, poll_interval=POLL))
        assert event["status"] == "failed"
        assert event["result"]["error_code"] == code
        with pytest.raises(error_class) as raised:
            read_event(event)
        assert isinstance(raised.value, AirflowFailException) is terminal
        assert code in str(raised.value)
        assert message_id in str(raised.value)

    async def test_incomplete_after_expire_mins(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        message_id = submit("a stuck job")
        [event] = await events(
            NextLegMessageTrigger(message_id=message_id, poll_interval=POLL, expire_mins=1)
        )
        assert event["status"] == MessageStatus.INCOMPLETE.value
        with pytest.raises(NextLegJobIncompleteError, match=message_id):
            read_event(event)

    async def test_transient_failures_never_end_the_wait(self, nextleg_emulator: EmulatorServer):
        message_id = submit()
        for fault in (  # the hook backs off 1, 2, 4 s between these (plus jitter)
            Fault("/v2/message", "status", status=502),
            Fault("/v2/message", "drop"),
            Fault("/v2/message", "malformed"),
        ):
            nextleg_emulator.add_fault(fault)
        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=POLL)
        [event] = await events(trigger)
        assert event["status"] == "done"
        assert nextleg_emulator.faults()["scripted"] == []  # every fault was met

    async def test_deadline_gives_a_timeout_event(self, nextleg_emulator: EmulatorServer):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        message_id = submit("a stuck job")
        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=POLL, deadline=time.time() + 0.3)
        started = time.monotonic()
        [event] = await events(trigger)
        assert event["status"] == "timeout"
        assert 0.25 < time.monotonic() - started < 5
        with pytest.raises(NextLegWaitTimeoutError, match="deadline") as raised:
            read_event(event)
        assert raised.value.message_id == message_id
        assert not isinstance(raised.value, AirflowFailException)  # a retry resumes the same job

    async def test_resumed_trigger_keeps_its_deadline(self, nextleg_emulator: EmulatorServer):
        """A triggerer restarting from the kwargs does not restart the clock."""
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        trigger = NextLegMessageTrigger(
            message_id=submit("a stuck job"), poll_interval=10.0, deadline=time.time() + 0.2
        )
        time.sleep(0.3)  # the triggerer was down past the deadline
        started = time.monotonic()
        [event] = await events(trigger)
        assert event["status"] == "timeout"
        assert time.monotonic() - started < 5  # not another poll_interval, let alone a new deadline

    async def test_refused_token_is_a_terminal_error_event(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ):
        message_id = submit()
        conn = json.loads(nextleg_emulator.airflow_connection_json())
        conn["password"] = "not-the-token"
        monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_WRONG", json.dumps(conn))
        [event] = await events(
            NextLegMessageTrigger(message_id=message_id, nextleg_conn_id="nextleg_wrong", poll_interval=POLL)
        )
        assert event["status"] == "error"
        assert event["error"]["terminal"] is True
        assert "not-the-token" not in json.dumps(event)
        with pytest.raises(NextLegAuthenticationError, match="401"):
            read_event(event)

    async def test_a_401_while_polling_reaches_the_task_whole(self, nextleg_emulator: EmulatorServer):
        message_id = submit()
        nextleg_emulator.add_fault(Fault("/v2/message", "status", status=401))
        [event] = await events(NextLegMessageTrigger(message_id=message_id, poll_interval=POLL))
        assert event["status"] == "error"
        assert json.loads(json.dumps(event)) == event  # what the triggerer can store
        with pytest.raises(NextLegAuthenticationError) as raised:
            read_event(event)
        error = raised.value
        assert isinstance(error, AirflowFailException)
        assert (error.status, error.message_id) == (401, message_id)
        assert str(error.endpoint).startswith("GET /v2/message")
        text = str(error)
        assert text.startswith(f"NextLeg {error.endpoint} (HTTP 401, message {message_id}): ")
        assert "NextLeg provider" not in text  # one message, not one wrapped in another
        assert text.count(str(error.endpoint)) == 1
        assert ".." not in text
        assert text == text.strip()
        assert text.endswith(NextLegAuthenticationError.advice)

    async def test_unknown_message_is_an_error_event(self, nextleg_emulator: EmulatorServer):
        [event] = await events(NextLegMessageTrigger(message_id="noSuchMessage0000000", poll_interval=POLL))
        assert event["status"] == "error"
        with pytest.raises(NextLegNotFoundError, match="404") as raised:
            read_event(event)
        assert (raised.value.status, raised.value.message_id) == (404, "noSuchMessage0000000")

    async def test_run_has_no_side_effects(self, nextleg_emulator: EmulatorServer):
        """Two runs of one trigger (HA triggerers) submit nothing and agree."""
        message_id = submit()
        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=POLL)
        first, second = await events(trigger), await events(trigger)
        assert first == second
        assert len(nextleg_emulator.ledger()) == 1


class TestErrorPayload:
    """Errors cross the trigger boundary whole: the same class, attributes and message."""

    @pytest.mark.parametrize(
        "error",
        [
            NextLegAuthenticationError(
                "the API token was refused", endpoint="GET /v2/message/abc", status=401, message_id="abc"
            ),
            NextLegNotFoundError("no such message", endpoint="GET /v2/message/abc", status=404, body="{}"),
            NextLegJobFailedTerminalError(
                "the job failed with BANNED_PROMPT",
                code="BANNED_PROMPT",
                retryable=False,
                advice="Reword it.",
            ),
            NextLegSubmissionUncertainError("the answer never came", ref="r1", endpoint="POST /v2/imagine"),
            NextLegWaitTimeoutError("the job had not finished by the deadline", message_id="abc"),
            NextLegError("something odd").after_attempts(3),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_round_trip_keeps_the_class_and_the_message(self, error: NextLegError):
        payload = json.loads(json.dumps(error_to_payload(error)))
        again = error_from_payload(payload)
        assert payload["terminal"] is isinstance(error, AirflowFailException)
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert vars(again) == vars(error)

    def test_the_waited_message_is_named_when_the_error_does_not(self):
        payload = error_to_payload(NextLegAuthenticationError("no token"), message_id="abc")
        assert error_from_payload(payload).message_id == "abc"

    @pytest.mark.parametrize(
        ("error", "error_class"),
        [(RuntimeError("boom."), NextLegWaitError), (AirflowFailException("no."), NextLegWaitTerminalError)],
    )
    def test_a_foreign_error_becomes_a_wait_error_keeping_its_terminality(
        self, error: Exception, error_class: type
    ):
        again = error_from_payload(error_to_payload(error, message_id="abc"))
        assert type(again) is error_class
        assert str(again) == "NextLeg provider (message abc): boom." or str(again).endswith("no.")

    def test_an_unknown_class_falls_back_to_a_wait_error(self):
        again = error_from_payload({"class": "NextLegFutureError", "problem": "later", "terminal": True})
        assert type(again) is NextLegWaitTerminalError
        assert str(again) == "NextLeg provider: later."


class TestReadEvent:
    @pytest.mark.parametrize(
        "event",
        [
            pytest.param(None, id="none"),
            pytest.param({}, id="empty"),
            pytest.param(
                {"status": "done", "message": {"message_id": "m1", "status": "done"}}, id="no-result"
            ),
            pytest.param(
                {"status": "done", "result": {"message_id": "m1", "status": "failed"}}, id="mismatch"
            ),
            pytest.param({"status": "error", "error": "a text"}, id="error-text"),
        ],
    )
    def test_an_event_it_does_not_know_fails_loudly(self, event: Any):
        with pytest.raises(NextLegError, match="does not know"):
            read_event(event)

    @pytest.mark.parametrize("status", ["done", "failed", "incomplete", "timeout", "error", "queued", 7])
    def test_only_the_providers_errors_come_out_of_any_event(self, status: object):
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        done = {"message_id": "m1", "status": status}
        odd: list[object] = [None, 1e300, float("nan"), "x", [], deep, {}, done, done | {"content": deep}]
        errors = [
            *odd,
            {"class": "NextLegJobFailedError"},  # its code and retryability missing
            {"class": "NextLegSubmissionUncertainError", "problem": deep},
            {"class": "NextLegError", "status": "x", "advice": 5},
        ]
        for result in odd:
            for error in errors:
                event = {"status": status, "message_id": "m1", "result": result, "error": error}
                with contextlib.suppress(NextLegError):
                    read_event(event)

    @pytest.mark.parametrize("name", ["message", "result"])
    def test_a_result_argument_of_any_shape_is_an_input_error(self, name: str):
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        for value in (deep, {"message_id": deep}, {"message_id": "m1", "status": "done", "buttons": deep}):
            with pytest.raises(NextLegInputError, match=name):
                read_result(value, name=name)


class TestDeferredTasksImageLink:
    """While a task is deferred, its trigger points the task's image link at each new progress image."""

    TI = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=3, try_number=1)

    @staticmethod
    async def deferred_events(trigger: NextLegMessageTrigger) -> list[dict[str, Any]]:
        """Run the trigger as a triggerer runs a deferred task's: with that task instance."""
        rebuilt = rebuild(trigger)
        rebuilt.task_instance = TestDeferredTasksImageLink.TI  # type: ignore[assignment]
        try:
            return [event.payload async for event in rebuilt.run()]
        finally:
            await NextLegHook.aclose_clients()

    @pytest.mark.parametrize("airflow_set", ["aset", "set"])
    async def test_each_new_progress_image_goes_to_the_links_xcom(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, airflow_set: str
    ):
        """Through ``BaseXCom.aset`` (Airflow 3.3) or ``BaseXCom.set`` in a thread (3.1), both tried here."""
        written: list[tuple[str, str, dict[str, Any]]] = []

        def record(key: str, value: str, **place: Any) -> None:
            written.append((key, value, place))

        if airflow_set == "aset":

            async def aset(key: str, value: str, **place: Any) -> None:
                record(key, value, **place)

            monkeypatch.setattr(BaseXCom, "aset", aset, raising=False)
        else:
            monkeypatch.delattr(BaseXCom, "aset", raising=False)
            monkeypatch.setattr(BaseXCom, "set", record)
        nextleg_emulator.configure(min_duration=200.0, max_duration=200.0)  # 2 s: seen running, however slow
        [event] = await self.deferred_events(NextLegMessageTrigger(message_id=submit(), poll_interval=0.005))
        assert event["status"] == "done"
        assert written, "no progress image was written"
        place = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": 3}
        assert all((key, where) == ("_link_NextLegImageLink", place) for key, _, where in written), written
        images = [image for _, image, _ in written]
        assert all("/cdn/" in image for image in images), images
        assert len(images) == len(set(images))  # each image once
        assert event["result"]["image_url"] not in images  # the resumed task writes the result

    async def test_a_write_that_hangs_or_fails_never_holds_up_the_wait(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ):
        attempts: list[str] = []
        released = asyncio.Event()

        async def aset(key: str, value: str, **place: Any) -> None:
            attempts.append(value)
            if len(attempts) == 1:
                await released.wait()  # a database that does not answer until the job is over
            raise RuntimeError("supervisor gone")

        monkeypatch.setattr(BaseXCom, "aset", aset, raising=False)
        nextleg_emulator.configure(min_duration=200.0, max_duration=200.0)
        [event] = await self.deferred_events(NextLegMessageTrigger(message_id=submit(), poll_interval=0.005))
        assert event["status"] == "done"
        assert len(attempts) == 1  # the images seen meanwhile were not queued, and none followed the event
        released.set()
        await asyncio.sleep(0.05)  # the hung write fails now, and is only logged at debug

    async def test_a_trigger_without_a_task_instance_writes_no_link(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ):
        """The worker's own wait runs the trigger too: there the operator shows the images."""
        written: list[tuple[Any, ...]] = []

        async def aset(*args: Any, **place: Any) -> None:
            written.append(args)

        monkeypatch.setattr(BaseXCom, "aset", aset, raising=False)
        monkeypatch.setattr(BaseXCom, "set", lambda *args, **place: written.append(args))
        nextleg_emulator.configure(min_duration=200.0, max_duration=200.0)
        [event] = await events(NextLegMessageTrigger(message_id=submit(), poll_interval=0.005))
        assert event["status"] == "done"
        assert written == []
