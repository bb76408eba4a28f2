"""Every error class, and the retry rules, over real HTTP against the emulator's failures and faults."""

from __future__ import annotations

import time

import pytest

from airflow_provider_nextleg.emulator import Fault, FaultSettings
from airflow_provider_nextleg.exceptions import (
    AirflowFailException,
    NextLegAuthenticationError,
    NextLegBadRequestError,
    NextLegConnectionError,
    NextLegJobFailedError,
    NextLegJobFailedTerminalError,
    NextLegJobIncompleteError,
    NextLegMalformedResponseError,
    NextLegNotFoundError,
    NextLegRateLimitError,
    NextLegServerError,
    NextLegSubmissionUncertainError,
    job_failure,
)
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.models import MessageStatus

from .helpers import CONN, UNKNOWN_ID, call_through, closed_port_url, connection_json, poll, requests_seen


def accepted(emulator, endpoint: str = "/v2/imagine") -> list[dict]:
    return [entry for entry in emulator.ledger() if entry["endpoint"] == endpoint and entry["messageId"]]


class TestRefusals:
    """Terminal answers: raised at once, never retried, and marked so Airflow does not retry either."""

    def test_wrong_token(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, password="not-the-token"))
        with pytest.raises(NextLegAuthenticationError) as raised:
            call_through(face, NextLegHook(retry_wait=0.01), "get_message", UNKNOWN_ID)
        assert isinstance(raised.value, AirflowFailException)
        assert raised.value.status == 401
        assert f"GET /v2/message/{UNKNOWN_ID} (HTTP 401, message {UNKNOWN_ID})" in str(raised.value)
        assert "password field" in str(raised.value)
        assert nextleg_emulator.counters()["unauthorized"] == {"GET /v2/message": 1}

    def test_connection_without_token(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, password=""))
        with pytest.raises(NextLegAuthenticationError, match="has no API token"):
            call_through(face, NextLegHook(), "imagine", "a cat")
        assert requests_seen(nextleg_emulator) == 0

    def test_prefilter_refusal(self, call, nextleg_emulator):
        with pytest.raises(NextLegBadRequestError) as raised:
            call("imagine", "a blood moon")
        assert isinstance(raised.value, AirflowFailException)
        assert raised.value.status == 400
        assert "Invalid phrase: 'blood'" in str(raised.value)
        assert "ignore_prefilter" in str(raised.value)
        assert [entry["status"] for entry in nextleg_emulator.ledger()] == [400]

    def test_not_found(self, call):
        with pytest.raises(NextLegNotFoundError) as raised:
            call("get_message", UNKNOWN_ID)
        assert isinstance(raised.value, NextLegBadRequestError)
        assert isinstance(raised.value, AirflowFailException)
        assert (raised.value.status, raised.value.message_id) == (404, UNKNOWN_ID)


class TestJobFailures:
    """Jobs that end without a result: the message says why, job_failure() picks the error."""

    @pytest.mark.parametrize(
        ("code", "error_class", "retryable"),
        [
            ("FAILED_TO_PROCESS_YOUR_COMMAND", NextLegJobFailedError, True),
            ("QUEUE_FULL", NextLegJobFailedError, True),
            ("NO_FAST_HOURS", NextLegJobFailedTerminalError, False),
            ("INVALID_PARAMETER", NextLegJobFailedTerminalError, False),
        ],
    )
    def test_error_codes(self, call, nextleg_emulator, code, error_class, retryable):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"doomed": code}))
        message = poll(call, call("imagine", "a doomed ship").message_id)
        assert (message.status, message.error_code, message.retryable) == (
            MessageStatus.FAILED,
            code,
            retryable,
        )
        assert message.image_url is None
        error = job_failure(message)
        assert type(error) is error_class
        assert (error.code, error.message_id, error.retryable) == (code, message.message_id, retryable)
        assert isinstance(error, AirflowFailException) is not retryable
        assert code in str(error)
        assert ("submits a new job" if retryable else "will not retry") in str(error)

    def test_banned_prompt_past_the_prefilter(self, call, nextleg_emulator):
        message = poll(call, call("imagine", "a blood moon", ignore_prefilter=True).message_id)
        assert message.error_code == "BANNED_PROMPT"
        assert isinstance(job_failure(message), NextLegJobFailedTerminalError)
        assert nextleg_emulator.ledger()[0]["payload"]["ignorePrefilter"] == "true"

    def test_incomplete(self, call, nextleg_emulator):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stall": "STALL"}))
        message = poll(call, call("imagine", "a stalled engine").message_id, expire_mins=1)
        assert message.status is MessageStatus.INCOMPLETE
        error = job_failure(message)
        assert type(error) is NextLegJobIncompleteError
        assert error.retryable
        assert "expire_mins" in str(error)

    def test_job_failure_refuses_a_done_message(self, call):
        message = poll(call, call("imagine", "a fine day").message_id)
        with pytest.raises(ValueError, match="not failed or incomplete"):
            job_failure(message)


class TestReadsRetry:
    """Polls and other reads are retried on 429, 5xx, drops and timeouts, then give up clearly."""

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault("/v2/message", "status", status=503, count=2), id="503-html-twice"),
            pytest.param(Fault("/v2/message", "status", status=500, body='{"error": "boom"}'), id="500-json"),
            pytest.param(Fault("/v2/message", "status", status=429, count=2), id="429-twice"),
            pytest.param(Fault("/v2/message", "drop"), id="dropped"),
            pytest.param(Fault("/v2/message", "drop", processed=True), id="dropped-after-processing"),
        ],
    )
    def test_recovers(self, call, nextleg_emulator, fault):
        nextleg_emulator.add_fault(fault)
        with pytest.raises(NextLegNotFoundError):  # the service's real answer, once the faults are past
            call("get_message", UNKNOWN_ID)
        assert nextleg_emulator.counters()["requests"]["GET /v2/message"] == fault.count + 1

    def test_read_timeout_recovers(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, timeout=0.3))
        nextleg_emulator.add_fault(Fault("/v2/message", "slow", seconds=1.0))
        with pytest.raises(NextLegNotFoundError):  # the second attempt got the real answer
            call_through(face, NextLegHook(retry_wait=0.01), "get_message", UNKNOWN_ID)
        assert nextleg_emulator.counters()["requests"]["GET /v2/message"] == 2

    @pytest.mark.parametrize(
        ("status", "error_class", "body_part"),
        [
            (503, NextLegServerError, "503 Service Temporarily Unavailable"),
            (502, NextLegServerError, "502 Bad Gateway"),
            (429, NextLegRateLimitError, "Too Many Requests"),
        ],
    )
    def test_gives_up_naming_endpoint_and_status(
        self, face, nextleg_emulator, status, error_class, body_part
    ):
        nextleg_emulator.add_fault(Fault("/v2/seed", "status", status=status, count=10))
        hook = NextLegHook(max_attempts=3, retry_wait=0.01)
        with pytest.raises(error_class) as raised:
            call_through(face, hook, "get_seed", UNKNOWN_ID)
        text = str(raised.value)
        assert f"NextLeg POST /v2/seed (HTTP {status}, message {UNKNOWN_ID})" in text
        assert "gave up after 3 attempts" in text
        assert body_part in raised.value.body
        assert not isinstance(raised.value, AirflowFailException)
        assert nextleg_emulator.counters()["requests"]["POST /v2/seed"] == 3

    def test_unreachable(self, face, nextleg_emulator, monkeypatch):
        base_url = closed_port_url()
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, host=base_url))
        with pytest.raises(NextLegConnectionError) as raised:
            call_through(face, NextLegHook(max_attempts=2, retry_wait=0.01), "get_message", UNKNOWN_ID)
        assert f"no answer from {base_url}" in str(raised.value)
        assert "gave up after 2 attempts" in str(raised.value)
        assert "base URL" in str(raised.value)

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault("/v2/message", "malformed"), id="truncated-json"),
            pytest.param(
                Fault("/v2/message", "status", status=200, body="<html>Login</html>"), id="html-page"
            ),
        ],
    )
    def test_malformed_answer(self, call, nextleg_emulator, fault):
        nextleg_emulator.add_fault(fault)
        with pytest.raises(NextLegMalformedResponseError) as raised:
            call("get_message", UNKNOWN_ID)
        assert raised.value.status == 200
        assert nextleg_emulator.counters()["requests"]["GET /v2/message"] == 1  # not retried
        assert "not what the API sends" in str(raised.value)

    def test_image_answer_that_is_not_an_image(self, call, nextleg_emulator):
        nextleg_emulator.add_fault(Fault("/getImage", "status", status=200, body="<html>CDN error</html>"))
        with pytest.raises(NextLegMalformedResponseError, match="expected image bytes, got text/html"):
            call("get_image", "https://cdn.example.com/a.png")


class TestSubmissionsAreNeverPaidTwice:
    """A job-starting call is resent only when the first request surely was not processed."""

    @pytest.mark.parametrize(
        ("fault", "jobs_created"),
        [
            pytest.param(Fault("/v2/imagine", "status", status=503), 0, id="503"),
            pytest.param(Fault("/v2/imagine", "status", status=503, processed=True), 1, id="503-processed"),
            pytest.param(Fault("/v2/imagine", "status", status=500, body='{"e": 1}'), 0, id="500-json"),
            pytest.param(Fault("/v2/imagine", "drop"), 0, id="dropped"),
            pytest.param(Fault("/v2/imagine", "drop", processed=True), 1, id="dropped-after-processing"),
            pytest.param(Fault("/v2/imagine", "malformed"), 1, id="unreadable-answer"),
        ],
    )
    def test_ambiguous_failure_is_not_resent(self, call, nextleg_emulator, fault, jobs_created):
        nextleg_emulator.add_fault(fault)
        with pytest.raises(NextLegSubmissionUncertainError) as raised:
            call("imagine", "a castle in fog", ref="run-42/imagine")
        text = str(raised.value)
        assert "NextLeg POST /v2/imagine" in text
        assert "may or may not have been created" in text
        assert "ref='run-42/imagine'" in text
        assert "the task fails without retrying" in text
        assert "clear the task" in text
        assert raised.value.ref == "run-42/imagine"
        assert isinstance(raised.value, AirflowFailException)  # a task retry would send it again
        assert nextleg_emulator.counters()["requests"]["POST /v2/imagine"] == 1
        assert len(accepted(nextleg_emulator)) == jobs_created

    def test_read_timeout_is_not_resent(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, timeout=0.3))
        nextleg_emulator.add_fault(Fault("/v2/imagine", "slow", seconds=1.0))
        with pytest.raises(NextLegSubmissionUncertainError, match="No ref was sent"):
            call_through(face, NextLegHook(retry_wait=0.01), "imagine", "a slow river")
        # The service finishes the request after the client gave up: one job, created once.
        deadline = time.monotonic() + 5
        while not accepted(nextleg_emulator) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(accepted(nextleg_emulator)) == 1
        assert nextleg_emulator.counters()["requests"]["POST /v2/imagine"] == 1

    @pytest.mark.parametrize("endpoint", ["button", "describe", "blend", "info", "settings", "slash"])
    def test_every_job_starting_call_is_guarded(self, call, nextleg_emulator, endpoint):
        calls = {
            "button": ("/v2/button", "button", ("V1", "someButtonMessageId")),
            "describe": ("/v2/describe", "describe", ("https://cdn.example.com/a.png",)),
            "blend": ("/v2/blend", "blend", (["https://a.example/1.png", "https://a.example/2.png"],)),
            "info": ("/v2/info", "info", ()),
            "settings": ("/v2/settings", "toggle_setting", ("Relax mode",)),
            "slash": ("/v2/slash-commands", "slash_command", ("relax",)),
        }
        path, name, args = calls[endpoint]
        nextleg_emulator.add_fault(Fault(path, "status", status=502, count=5))
        with pytest.raises(NextLegSubmissionUncertainError):
            call(name, *args)
        assert sum(nextleg_emulator.counters()["requests"].values()) == 1

    def test_refused_by_rate_limit_is_resent_once(self, call, nextleg_emulator):
        nextleg_emulator.add_fault(Fault("/v2/imagine", "status", status=429))
        submitted = call("imagine", "a lantern")
        assert [entry["messageId"] for entry in accepted(nextleg_emulator)] == [submitted.message_id]
        assert nextleg_emulator.counters()["requests"]["POST /v2/imagine"] == 2

    def test_connection_never_made_is_retried(self, face, nextleg_emulator, monkeypatch):
        monkeypatch.setenv(CONN, connection_json(nextleg_emulator, host=closed_port_url()))
        with pytest.raises(NextLegConnectionError, match="gave up after 3 attempts"):
            call_through(face, NextLegHook(max_attempts=3, retry_wait=0.01), "imagine", "a kite")
