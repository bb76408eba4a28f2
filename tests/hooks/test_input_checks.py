"""Bad arguments are refused before anything is sent, with an error that names the problem and the fix."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg import validation
from airflow_provider_nextleg.exceptions import AirflowFailException, NextLegInputError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import requests_seen

URL = "https://cdn.example.com/a.png"
ID = "pjOBnA96E5nPM5zuLnDI"

# (endpoint, args, kwargs, words the error must contain)
BAD_CALLS = [
    ("imagine", ("",), {}, "prompt is empty"),
    ("imagine", ("   \n\t",), {}, "prompt is empty"),
    ("imagine", (None,), {}, "prompt is None"),
    ("imagine", ("--ar 16:9 --v 5",), {}, "has flags but no words"),
    ("imagine", ("a cat --ar 0:0",), {}, "'--ar 0:0', whose value Midjourney refuses"),
    ("imagine", ("a cat --v 9",), {}, "'--v 9'"),
    ("imagine", ("a cat --chaos 101",), {}, "'--chaos 101'"),
    ("imagine", ("a cat --q 3",), {}, "'--q 3'"),
    ("button", ("Custom Zoom", ID), {"zoom": 1.5, "ar": "016:09"}, "not an aspect ratio"),
    ("get_message", (".",), {}, "not a NextLeg message id"),
    ("get_message", ("-abc",), {}, "not a NextLeg message id"),
    ("imagine", ("x" * 4001,), {}, "4001 characters"),
    ("imagine", ("a cat",), {"ref": 42}, "ref must be a string"),
    ("imagine", ("a cat",), {"webhook_override": "ftp://hooks.example/x"}, "webhook_override"),
    ("imagine", ("a cat",), {"webhook_override": "not a url"}, "webhook_override"),
    ("imagine", ("a cat",), {"ignore_prefilter": "false"}, "ignore_prefilter must be True or False"),
    ("button", ("", ID), {}, "button is empty"),
    ("button", ("  ", ID), {}, "button is empty"),
    ("button", ("V1", ""), {}, "button_message_id"),
    ("button", ("V1", "../admin"), {}, "not a NextLeg message id"),
    ("button", ("V1", ID), {"zoom": 1.5}, "only go with the 'Custom Zoom' button"),
    ("button", ("V1", ID), {"ar": "1:1", "prompt": "x"}, "ar, prompt only go with"),
    ("button", ("Custom Zoom", ID), {}, "needs zoom"),
    ("button", ("Custom Zoom", ID), {"zoom": 2.5}, "not a number from 1 to 2"),
    ("button", ("Custom Zoom", ID), {"zoom": 0.5}, "not a number from 1 to 2"),
    ("button", ("Custom Zoom", ID), {"zoom": True}, "not a number from 1 to 2"),
    ("button", ("Custom Zoom", ID), {"zoom": "1.5"}, "not a number from 1 to 2"),
    ("button", ("Custom Zoom", ID), {"zoom": 1.5, "ar": "16x9"}, "not an aspect ratio"),
    ("button", ("Custom Zoom", ID), {"zoom": 1.5, "ar": "0:1"}, "not an aspect ratio"),
    ("button", ("Custom Zoom", ID), {"zoom": 1.5, "ar": "-1:2"}, "not an aspect ratio"),
    ("button", ("Custom Zoom", ID), {"zoom": 1.5, "prompt": " "}, "prompt is empty"),
    ("get_message", ("",), {}, "not a NextLeg message id"),
    ("get_message", ("abc/def",), {}, "not a NextLeg message id"),
    ("get_message", ("abc?x=1",), {}, "not a NextLeg message id"),
    ("get_message", ("abc#x",), {}, "not a NextLeg message id"),
    ("get_message", ("a..b",), {}, "not a NextLeg message id"),
    ("get_message", ("abc def",), {}, "not a NextLeg message id"),
    ("get_message", ("x" * 129,), {}, "not a NextLeg message id"),
    ("get_message", (ID,), {"expire_mins": 0}, "expire_mins 0 is not a positive integer"),
    ("get_message", (ID,), {"expire_mins": 1.5}, "not a positive integer"),
    ("get_seed", ("a/b",), {}, "not a NextLeg message id"),
    ("describe", ("file:///etc/passwd",), {}, "url 'file:///etc/passwd' is not an http(s) URL"),
    ("describe", ("https://",), {}, "not an http(s) URL"),
    ("blend", ([URL],), {}, "2 to 5 images, got 1"),
    ("blend", ([URL] * 6,), {}, "2 to 5 images, got 6"),
    ("blend", (URL,), {}, "must be a list of URLs"),
    ("blend", ([URL, "data:image/png;base64,AAAA"],), {}, "urls[1]"),
    ("info", (), {"webhook_override": "hooks.example/x"}, "webhook_override"),
    ("toggle_setting", ("",), {}, "toggle is empty"),
    ("slash_command", ("imagine",), {}, "'imagine' is not a slash command"),
    ("slash_command", ("/relax",), {}, "not a slash command"),
    ("is_this_naughty", ("",), {}, "prompt is empty"),
    ("get_image", ("s3://bucket/a.png",), {}, "img_url"),
]


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "words"),
    [pytest.param(*case, id=f"{case[0]}-{case[3][:40]}") for case in BAD_CALLS],
)
def test_refused_before_sending(call, nextleg_emulator, name, args, kwargs, words):
    with pytest.raises(NextLegInputError) as raised:
        call(name, *args, **kwargs)
    error = raised.value
    assert words in str(error)
    assert "Nothing was sent to NextLeg" in str(error)
    assert isinstance(error, ValueError)
    assert isinstance(error, AirflowFailException)
    assert requests_seen(nextleg_emulator) == 0
    assert nextleg_emulator.ledger() == []


def test_accepts_the_limits(call, nextleg_emulator):
    """The edges of each range are allowed: a 4000-character prompt, zoom 1 and 2, five blend images."""
    call("imagine", "x" * validation.MAX_PROMPT_LENGTH)
    call("button", "Custom Zoom", ID, zoom=1)
    call("button", "Custom Zoom", ID, zoom=2.0, ar="16:9")
    call("blend", [URL] * 5)
    assert [entry["endpoint"] for entry in nextleg_emulator.ledger()] == [
        "/v2/imagine",
        "/v2/button",
        "/v2/button",
        "/v2/blend",
    ]


class TestChecksForOperators:
    """The checks are plain functions, for operators to run in their own validation."""

    def test_return_what_is_sent(self):
        assert validation.check_prompt("a cat --ar 16:9") == "a cat --ar 16:9"
        assert validation.check_message_id(ID) == ID
        assert validation.check_zoom(2) == 2.0
        assert validation.check_aspect_ratio("16:9") == "16:9"
        assert validation.check_blend_urls((URL, URL)) == [URL, URL]
        assert validation.check_slash_command("stealth") == "stealth"
        assert validation.check_expire_mins(12) == 12

    def test_button_options_are_checked_as_a_whole(self):
        assert validation.check_button_options("Custom Zoom", 1.5, "2:3", "wider", None) is None
        assert validation.check_button_options("U1", None, None, None, None) is None
        with pytest.raises(NextLegInputError, match="needs zoom"):
            validation.check_button_options("Custom Zoom", None, "1:1", None, None)
        with pytest.raises(NextLegInputError, match="'🖌️ Vary \\(Region\\)' button needs mask"):
            validation.check_button_options("🖌️ Vary (Region)", None, None, "a fox", None)


def test_bad_hook_settings():
    with pytest.raises(NextLegInputError, match="max_attempts=0"):
        NextLegHook(max_attempts=0)
