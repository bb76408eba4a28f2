"""Parsing of the API's answers, on payloads recorded from the service and its documentation."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest

from airflow_provider_nextleg.error_codes import ErrorCode, ErrorKind
from airflow_provider_nextleg.exceptions import NextLegMalformedResponseError, NextLegSubmissionUncertainError
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.hooks.connection import AccountSettings
from airflow_provider_nextleg.hooks.transport import read_answer
from airflow_provider_nextleg.models import (
    JobResult,
    Message,
    MessageStatus,
    NaughtyResult,
    PayloadError,
    SubmitResult,
    TaskIdentity,
    job_ref,
    parse_seed,
    parse_timestamp,
)

# The seed's log (000): a finished imagine, wrapped in "response".
DONE_IMAGINE = {
    "progress": 100,
    "response": {
        "accountId": "-------",
        "createdAt": "2023-09-02T21:26:03.879Z",
        "originatingMessageId": "ptbpfClHNs9OgbqvN0H6",
        "buttons": ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"],
        "imageUrl": "https://cdn.discordapp.com/attachments/slug/slug2/prompt.png",
        "imageUrls": [f"https://cdn.example.com/hash/0_{i}.png" for i in range(4)],
        "description": "",
        "type": "imagine",
        "content": "A Rhinoceros in the Amazon with sun shining through, photorealistic, 4k",
        "responseAt": "2023-09-02T21:26:04.205Z",
        "buttonMessageId": "pjOBnA96E5nPM5zuLnDI",
    },
}

# The documentation's flat form (003), with a Firestore timestamp.
DONE_FLAT = {
    "createdAt": {"_nanoseconds": 215000000, "_seconds": 1678840347},
    "buttons": ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"],
    "type": "button",
    "imageUrl": "your-image-url",
    "buttonMessageId": "OtfxNzfMIKBPVE1aP4u4",
    "originatingMessageId": "your-message-id",
    "content": "your-original-prompt",
    "ref": "",
    "responseAt": "2023-04-04T13:06:01.927Z",
}

# The seed button's result (004): no buttonMessageId, a seed.
SEED_RESULT = {"seed": "1317396497", "content": "your-original-prompt", "ref": "", "responseAt": "x"}


class TestMessageStates:
    def test_done_imagine_wrapped(self):
        message = Message.from_api(DONE_IMAGINE, "ptbpfClHNs9OgbqvN0H6")
        assert message.status is MessageStatus.DONE
        assert message.status.is_terminal
        assert message.progress == 100
        assert message.button_message_id == "pjOBnA96E5nPM5zuLnDI"
        assert message.buttons[4] == "🔄"
        assert len(message.image_urls) == 4
        assert message.type == "imagine"
        assert message.error_code is None
        assert not message.retryable
        assert message.advice == ""

    def test_done_flat_without_progress(self):
        message = Message.from_api(DONE_FLAT, "your-message-id")
        assert message.status is MessageStatus.DONE
        assert message.progress is None
        assert message.ref is None  # an empty ref is no ref
        assert message.originating_message_id == "your-message-id"

    def test_seed_result_counts_as_done(self):
        message = Message.from_api({"progress": 100, "response": SEED_RESULT}, "m1")
        assert message.status is MessageStatus.DONE
        assert message.seed == "1317396497"

    @pytest.mark.parametrize(
        ("payload", "status", "progress"),
        [
            pytest.param(
                {
                    "progress": 0,
                    "progressImageUrl": None,
                    "response": {"content": "JOB_QUEUED", "originatingMessageId": "m1"},
                },
                MessageStatus.QUEUED,
                0,
                id="emulator-queued",
            ),
            pytest.param({"progress": 0, "progressImageUrl": None}, MessageStatus.QUEUED, 0, id="plain-zero"),
            pytest.param(
                {"progress": 31, "progressImageUrl": "https://cdn/x_grid_0.webp"},
                MessageStatus.RUNNING,
                31,
                id="running",
            ),
            pytest.param({"progress": "62"}, MessageStatus.RUNNING, 62, id="numeric-string"),
            pytest.param({"progress": "93.5"}, MessageStatus.RUNNING, 93, id="decimal-string"),
            pytest.param({"progress": 45.0}, MessageStatus.RUNNING, 45, id="float"),
            pytest.param({"progress": "incomplete"}, MessageStatus.INCOMPLETE, None, id="incomplete"),
        ],
    )
    def test_unfinished_states(self, payload, status, progress):
        message = Message.from_api(payload, "m1")
        assert message.status is status
        assert message.progress == progress
        assert message.error_code is None
        assert message.status.is_terminal is (status is MessageStatus.INCOMPLETE)

    def test_running_keeps_progress_image(self):
        message = Message.from_api({"progress": 31, "progressImageUrl": "https://cdn/p.webp"}, "m1")
        assert message.progress_image_url == "https://cdn/p.webp"

    @pytest.mark.parametrize(
        ("code", "retryable"),
        [
            ("QUEUE_FULL", True),
            ("BOT_TOOK_TOO_LONG_TO_PROCESS_YOUR_COMMAND", True),
            ("FAILED_TO_PROCESS_YOUR_COMMAND", True),
            ("FAILED_TO_REQUEST", True),
            ("INTERNAL_ERROR", True),
            ("MODERATION_OUTAGE", True),
            ("NO_FAST_HOURS", False),
            ("BANNED_PROMPT", False),
            ("BLOCKED", False),
            ("IMAGE_BLOCKED", False),
            ("INVALID_PARAMETER", False),
            ("INVALID_LINK", False),
            ("BUTTON_NOT_FOUND", False),
            ("JOB_ACTION_RESTRICTED", False),
            ("ALREADY_REQUESTED_UPSCALE", False),
            ("APPEAL_ACCEPTED", False),
            ("APPEAL_REJECTED", False),
            ("PLEASE_SUBSCRIBE_TO_MJ_IN_YOUR_DASHBOARD", False),
        ],
    )
    def test_failed_job_reaches_progress_100(self, code, retryable):
        payload = {
            "progress": 100,
            "response": {"content": code, "originatingMessageId": "m1", "type": "imagine"},
        }
        message = Message.from_api(payload, "m1")
        assert message.status is MessageStatus.FAILED
        assert message.error_code == code
        assert message.error is ErrorCode(code)
        assert message.retryable is retryable
        assert message.advice == ErrorCode(code).advice

    def test_error_code_reported_before_progress_100(self):
        message = Message.from_api({"progress": 0, "response": {"content": "QUEUE_FULL"}}, "m1")
        assert message.status is MessageStatus.FAILED
        assert message.retryable

    def test_unknown_code_on_finished_message_is_a_terminal_failure(self):
        message = Message.from_api({"progress": 100, "response": {"content": "SOME_NEW_CODE"}}, "m1")
        assert message.status is MessageStatus.FAILED
        assert message.error is None
        assert not message.retryable
        assert "does not know" in message.advice

    def test_prompt_that_looks_like_a_code_is_not_a_failure(self):
        payload = json.loads(json.dumps(DONE_IMAGINE))
        payload["response"]["content"] = "BLOCKED"
        assert Message.from_api(payload, "m1").status is MessageStatus.DONE
        running = {"progress": 40, "response": {"content": "HELLO_WORLD"}}
        assert Message.from_api(running, "m1").status is MessageStatus.RUNNING

    def test_describe_and_info_content(self):
        describe = {
            "progress": 100,
            "response": {"type": "describe", "buttonMessageId": "b", "content": ["a", "b"]},
        }
        assert Message.from_api(describe, "m1").content == ["a", "b"]
        info = {
            "progress": 100,
            "response": {"type": "info", "buttonMessageId": "b", "content": {"Job Mode": "Fast"}},
        }
        assert Message.from_api(info, "m1").content == {"Job Mode": "Fast"}

    def test_text_results_need_no_button_id(self):
        # The emulator's info and slash-command results carry no buttonMessageId: nothing to press on them.
        slash = {"progress": 100, "response": {"type": "slash-command", "content": "Done!", "buttons": []}}
        assert Message.from_api(slash, "m1").status is MessageStatus.DONE

    def test_incomplete_is_retryable_with_advice(self):
        message = Message.from_api({"progress": "incomplete"}, "m1")
        assert message.retryable
        assert "expireMins" in message.advice

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param([], id="not-an-object"),
            pytest.param({"progress": 100}, id="done-without-response"),
            pytest.param({"progress": 100, "response": {"content": "a cat"}}, id="done-without-button-id"),
            pytest.param(
                {"progress": 100, "response": {"type": "imagine", "content": "a cat"}},
                id="image-without-button-id",
            ),
            pytest.param({"progress": 100, "response": {"type": "info"}}, id="text-result-without-content"),
            pytest.param({}, id="nothing"),
            pytest.param({"progress": "soon"}, id="progress-not-a-number"),
            pytest.param({"progress": True}, id="progress-bool"),
            pytest.param({"progress": "inf"}, id="progress-infinite"),
            pytest.param(
                {"progress": 100, "response": {"buttonMessageId": "b", "buttons": "U1"}}, id="buttons-str"
            ),
            pytest.param(
                {"progress": 100, "response": {"buttonMessageId": "b", "content": 5}}, id="content-int"
            ),
            pytest.param({"progress": 100, "response": {"buttonMessageId": ["b"]}}, id="button-id-list"),
        ],
    )
    def test_malformed(self, payload):
        with pytest.raises(ValueError, match=r"\w"):
            Message.from_api(payload, "m1")


SUBMITTER: TaskIdentity = {
    "dag_id": "pipeline",
    "run_id": "manual__1",
    "task_id": "variation",
    "map_index": 2,
    "try_number": 1,
}


class TestJobResult:
    def test_xcom_round_trip_keeps_every_field_and_is_json_safe(self):
        result = JobResult(
            message_id="m1",
            status=MessageStatus.DONE,
            button_message_id="b1",
            buttons=("U1", "🔄"),
            image_url="https://cdn.example.com/grid.png",
            image_urls=("https://cdn.example.com/0_0.png",),
            content="a cat",
            type="button",
            seed="1317396497",
            ref=job_ref(SUBMITTER, "campaign-7"),
            button="V1",
            submitted_by=SUBMITTER,
            route_id="lb0000000000000000",
        )
        data = json.loads(json.dumps(result.to_xcom()))
        assert set(data) == {
            "message_id",
            "button_message_id",
            "buttons",
            "image_url",
            "image_urls",
            "content",
            "type",
            "seed",
            "ref",
            "status",
            "error_code",
            "button",
            "submitted_by",
            "route_id",
        }
        assert data["status"] == "done"
        assert data["buttons"] == ["U1", "🔄"]
        assert JobResult.from_xcom(data) == result

    def test_built_from_a_finished_poll(self):
        message = Message.from_api(DONE_IMAGINE, "ptbpfClHNs9OgbqvN0H6")
        result = JobResult.from_message(message)
        assert (result.message_id, result.status, result.buttons) == (
            message.message_id,
            MessageStatus.DONE,
            message.buttons,
        )
        assert (result.image_url, result.image_urls, result.content) == (
            message.image_url,
            message.image_urls,
            message.content,
        )
        assert result.button is None
        assert result.submitted_by is None
        assert JobResult.from_xcom(result.to_xcom()) == result

    def test_a_running_poll_is_no_result(self):
        with pytest.raises(ValueError, match="not finished"):
            JobResult.from_message(Message.from_api({"progress": 40}, "m1"))

    def test_failed_round_trip_keeps_the_code(self):
        message = Message.from_api({"progress": 100, "response": {"content": "NO_FAST_HOURS"}}, "m1")
        again = JobResult.from_xcom(JobResult.from_message(message).to_xcom())
        assert again.status is MessageStatus.FAILED
        assert again.error is ErrorCode.NO_FAST_HOURS
        assert not again.retryable
        assert again.advice == message.advice

    def test_a_result_of_an_earlier_version_reads_without_button_and_submitter(self):
        result = JobResult.from_xcom({"message_id": "m1", "status": "done", "buttons": ["U1"]})
        assert (result.button, result.submitted_by, result.buttons) == (None, None, ("U1",))

    @pytest.mark.parametrize(
        ("change", "named"),
        [
            pytest.param({"buttons": "U1,U2"}, "buttons", id="buttons-str"),
            pytest.param({"buttons": 4}, "buttons", id="buttons-int"),
            pytest.param({"buttons": ["U1", 2]}, "buttons", id="buttons-not-strings"),
            pytest.param({"image_urls": "https://x/0.png"}, "image_urls", id="image-urls-str"),
            pytest.param({"button_message_id": ["b"]}, "button_message_id", id="button-id-list"),
            pytest.param({"content": 5}, "content", id="content-int"),
            pytest.param({"message_id": ""}, "message_id", id="no-message-id"),
            pytest.param({"status": "running"}, "status", id="not-finished"),
            pytest.param({"status": None}, "status", id="no-status"),
            pytest.param({"submitted_by": {"dag_id": "d"}}, "submitted_by", id="submitter-partial"),
            pytest.param({"submitted_by": SUBMITTER | {"try_number": "1"}}, "submitted_by", id="try-str"),
        ],
    )
    def test_from_xcom_refuses_values_of_the_wrong_type(self, change: dict, named: str):
        data = JobResult(message_id="m1", status=MessageStatus.DONE).to_xcom() | change
        with pytest.raises(ValueError, match=named):
            JobResult.from_xcom(data)

    @pytest.mark.parametrize("data", ["m1", None, ["m1"]])
    def test_from_xcom_refuses_what_is_not_a_dict(self, data: object):
        with pytest.raises(ValueError, match="dict"):
            JobResult.from_xcom(data)

    def test_the_submitter_keeps_only_its_identity(self):
        data = JobResult(message_id="m1", status=MessageStatus.DONE).to_xcom()
        data["submitted_by"] = SUBMITTER | {"button": "V1"}
        assert JobResult.from_xcom(data).submitted_by == SUBMITTER


class TestJobRef:
    def test_names_the_task_instance_with_the_own_ref_under_ref(self):
        assert json.loads(job_ref(SUBMITTER, "campaign-7")) == SUBMITTER | {"ref": "campaign-7"}
        assert json.loads(job_ref(SUBMITTER)) == SUBMITTER
        assert " " not in job_ref(SUBMITTER)  # compact: it travels in every request and webhook


class TestSmallResults:
    def test_submit_iso(self):
        result = SubmitResult.from_api(
            {"success": True, "messageId": "your-message-id", "createdAt": "2023-04-04T13:07:01.927Z"}
        )
        assert result.message_id == "your-message-id"
        assert result.created_at == datetime(2023, 4, 4, 13, 7, 1, 927000, tzinfo=timezone.utc)

    def test_submit_firestore_timestamp(self):
        result = SubmitResult.from_api(
            {
                "success": True,
                "messageId": "m",
                "createdAt": {"_seconds": 1678840347, "_nanoseconds": 215000000},
            }
        )
        assert result.created_at == datetime.fromtimestamp(1678840347.215, tz=timezone.utc)

    @pytest.mark.parametrize(
        "payload",
        [{"success": False, "msg": "Invalid phrase"}, {"success": True}, {"messageId": ""}, "ok", None],
    )
    def test_submit_malformed(self, payload):
        with pytest.raises(ValueError, match=r"messageId|object"):
            SubmitResult.from_api(payload)

    @pytest.mark.parametrize("value", ["yesterday", 42, None, {"seconds": 1}, ""])
    def test_timestamps_are_informational(self, value):
        assert parse_timestamp(value) is None

    def test_naughty(self):
        assert NaughtyResult.from_api({"isNaughty": True, "phrase": "gore"}) == NaughtyResult(True, "gore")
        assert NaughtyResult.from_api({"isNaughty": False}) == NaughtyResult(False, None)
        with pytest.raises(ValueError, match="isNaughty"):
            NaughtyResult.from_api({"isNaughty": "no"})

    def test_seed(self):
        assert parse_seed({"seed": "1317396497"}) == "1317396497"
        assert parse_seed({"seed": 1317396497}) == "1317396497"
        with pytest.raises(ValueError, match="seed"):
            parse_seed({"content": "x"})


class TestErrorCodeTable:
    def test_every_code_has_kind_and_advice(self):
        for code in ErrorCode:
            assert isinstance(code.kind, ErrorKind)
            assert code.advice.endswith(".")
        assert ErrorCode.JOB_QUEUED.kind is ErrorKind.WAITING
        assert not ErrorCode.JOB_QUEUED.retryable

    def test_status_terminality(self):
        assert {status for status in MessageStatus if status.is_terminal} == {
            MessageStatus.DONE,
            MessageStatus.FAILED,
            MessageStatus.INCOMPLETE,
        }


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# JSON values of every kind, the odd ones first: wrong types, huge and non-finite numbers, Firestore
# timestamps out of any calendar, nesting deeper than a result ever has.
ODD_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    10**30,
    -(10**18),
    1e300,
    -1e18,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "nan",
    "incomplete",
    "100",
    "2023-02-30T25:61:00Z",
    "99999-01-01",
    "P1D",
    "U1" * 5000,
    [],
    ["U1", None],
    [[["U1"]]],
    _nested(50),
    _nested(2000),
    {},
    {"_seconds": 1e300},
    {"_seconds": -1e18},
    {"_seconds": 1678840347, "_nanoseconds": "x"},
    {"_seconds": float("nan")},
    {"_seconds": float("inf")},
    {"_seconds": True},
    {"_seconds": 1678840347, "_nanoseconds": 1e300},
    {"a": {"b": {"c": {"d": {"e": [1]}}}}},
    {"x": float("nan")},
]
ODD_IDS = [f"{type(value).__name__}-{index}" for index, value in enumerate(ODD_VALUES)]

SUBMITTED = {"success": True, "messageId": "m1", "createdAt": "2023-04-04T13:07:01.927Z"}
RUNNING = {"progress": 45, "progressImageUrl": "https://cdn.example.com/p.png"}
FAILED = {"progress": 100, "response": {"content": "BANNED_PROMPT", "buttons": []}}
DONE_RESULT = JobResult(
    message_id="m1",
    status=MessageStatus.DONE,
    button_message_id="b1",
    buttons=("U1",),
    image_url="https://cdn.example.com/grid.png",
    content="a cat",
    submitted_by=SUBMITTER,
).to_xcom()


def _variants(payload: dict) -> Iterator[object]:
    """The payload with each of its fields (and those of its ``response``) replaced by each odd value,
    then each odd value instead of the whole payload."""
    for key in payload:
        for value in ODD_VALUES:
            yield payload | {key: value}
    inner = payload.get("response")
    if isinstance(inner, dict):
        for key in inner:
            for value in ODD_VALUES:
                yield payload | {"response": inner | {key: value}}
    yield from ODD_VALUES


def _random_json(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value, drawn mostly from the odd ones."""
    roll = rng.random()
    if depth < 4 and roll < 0.2:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 4 and roll < 0.4:
        keys = ["progress", "response", "content", "buttons", "buttonMessageId", "seed", "messageId"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    return rng.choice(ODD_VALUES)


PARSERS: dict[str, Callable[[object], object]] = {
    "Message": lambda payload: Message.from_api(payload, "m1"),
    "SubmitResult": SubmitResult.from_api,
    "NaughtyResult": NaughtyResult.from_api,
    "parse_seed": parse_seed,
    "JobResult": JobResult.from_xcom,
}
BASES: dict[str, list[dict]] = {
    "Message": [DONE_IMAGINE, DONE_FLAT, SEED_RESULT, RUNNING, FAILED],
    "SubmitResult": [SUBMITTED],
    "NaughtyResult": [{"isNaughty": True, "phrase": "gore"}],
    "parse_seed": [{"seed": "1317396497"}],
    "JobResult": [DONE_RESULT],
}


def _only_payload_errors(parse: Callable[[object], object], payload: object) -> object:
    """Parse, allowing only the provider's own error; whatever is accepted must travel as JSON."""
    try:
        parsed = parse(payload)
    except PayloadError:
        return None
    if isinstance(parsed, Message) and parsed.status.is_terminal:
        parsed = JobResult.from_message(parsed)
    if isinstance(parsed, JobResult):
        data = json.loads(json.dumps(parsed.to_xcom(), allow_nan=False))
        assert JobResult.from_xcom(data) == parsed
    return parsed


class TestOddJson:
    """Only the provider's :class:`PayloadError` (a ``ValueError``, which the hook turns into a typed
    error) may escape a parser, whatever JSON it is given: anything else is a bug. What a parser accepts
    can be carried on as a result (JSON, no NaN, not nested beyond reason)."""

    @pytest.mark.parametrize("value", ODD_VALUES, ids=ODD_IDS)
    def test_a_submission_with_an_odd_created_at_still_yields_its_message_id(self, value: object):
        result = SubmitResult.from_api(SUBMITTED | {"createdAt": value})
        assert result.message_id == "m1"
        assert result.created_at is None or isinstance(result.created_at, datetime)

    @pytest.mark.parametrize("value", ODD_VALUES, ids=ODD_IDS)
    def test_parse_timestamp_never_raises(self, value: object):
        assert parse_timestamp(value) is None or isinstance(parse_timestamp(value), datetime)

    @pytest.mark.parametrize("name", PARSERS)
    def test_each_field_of_each_answer_replaced_by_odd_json(self, name: str):
        for base in BASES[name]:
            for payload in _variants(base):
                _only_payload_errors(PARSERS[name], payload)

    @pytest.mark.parametrize("name", PARSERS)
    def test_random_json(self, name: str):
        rng = random.Random(f"odd-json-{name}")
        for _ in range(400):
            _only_payload_errors(PARSERS[name], _random_json(rng))

    def test_content_nested_beyond_reason_is_refused(self):
        with pytest.raises(PayloadError, match="content"):
            Message.from_api({"progress": 100, "response": {"type": "info", "content": _nested(2000)}}, "m1")


SETTINGS = AccountSettings(
    conn_id="nextleg_default",
    base_url="https://api.example.com",
    token="t0ken",
    timeout=5.0,
    rate_limit_interval=3.0,
    expire_mins=12,
)
SUBMISSIONS = [
    calls.imagine("a cat", "r1", None, None),
    calls.button("U1", "bmid0000000000000000", "r1", None, None, None, None),
    calls.describe("https://example.com/cat.png", "r1", None),
    calls.info("r1", None),
]
READS = [calls.message("m1", 12), calls.seed("m1"), calls.is_this_naughty("a cat")]


class TestAnswersNestedTooDeeply:
    """JSON nested past Python's recursion limit (``[[[[...``) is a typed error on every call kind: the
    submission's fate is unknown (it was most likely accepted), a read's answer is malformed."""

    BODY = b"[" * 100_000 + b"]" * 100_000

    @pytest.mark.parametrize("call", SUBMISSIONS, ids=lambda call: call.endpoint)
    def test_a_submission_is_uncertain(self, call):
        with pytest.raises(NextLegSubmissionUncertainError, match="nested too deeply"):
            read_answer(call, SETTINGS, 200, {}, self.BODY)

    @pytest.mark.parametrize("call", READS, ids=lambda call: call.endpoint)
    def test_a_read_is_malformed(self, call):
        with pytest.raises(NextLegMalformedResponseError, match="nested too deeply"):
            read_answer(call, SETTINGS, 200, {}, self.BODY)
