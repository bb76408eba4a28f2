"""Content rules: the banned-phrase prefilter, BANNED_PROMPT, prompt flags, is-this-naughty, forced codes."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg import prompt_flags
from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings, prompts

from .support import Api

# (prompt, the bad flag the provider sees (unknown flags pass), the one the emulator sees)
FLAG_CASES = [
    ("a cat", None, None),
    ("a cat --ar 16:9 --v 5.2", None, None),
    ("a cat --foo", None, "--foo"),
    ("a cat --foo bar --ar 0:0", "--ar 0:0", "--foo bar"),
    ("a cat --", None, "--"),
    ("a cat --ar", "--ar", "--ar"),
    ("a cat --ar 01:1", "--ar 01:1", "--ar 01:1"),
    ("a cat --no text, words --q .5", None, None),
    ("--v 7 a cat", "--v 7 a cat", "--v 7 a cat"),  # a flag's value runs to the next flag
    ("a cat --Chaos 20 --tile", None, None),
    ("a cat --chaos 101", "--chaos 101", "--chaos 101"),
    ("a cat --v 8", "--v 8", "--v 8"),
    ("a cat --seed 4294967296", "--seed 4294967296", "--seed 4294967296"),
    ("a cat --s nan", "--s nan", "--s nan"),
    ("a --niji --s 250", None, None),
    ("a cat --seed 12 --stop 9", "--stop 9", "--stop 9"),
    ("16:9", None, None),
]


class TestBannedWords:
    def test_prefilter_refuses_a_banned_prompt_with_a_400(self, api: Api, emu: EmulatorServer) -> None:
        response = api.http.post("/v2/imagine", json={"msg": "a knight covered in Blood"})
        assert response.status_code == 400
        assert response.json() == {"success": False, "msg": "Invalid phrase: 'blood'"}
        assert emu.ledger()[0]["status"] == 400
        assert emu.ledger()[0]["messageId"] is None

    @pytest.mark.parametrize("ignore", [True, "true", "TRUE"])
    def test_ignore_prefilter_accepts_the_job_which_then_fails(self, api: Api, ignore: object) -> None:
        response = api.imagine("a knight covered in blood", ignorePrefilter=ignore)
        assert response["content"] == "BANNED_PROMPT"
        assert "imageUrl" not in response

    @pytest.mark.parametrize("ignore", [False, "false"])
    def test_ignore_prefilter_false_still_refuses(self, api: Api, ignore: object) -> None:
        response = api.http.post("/v2/imagine", json={"msg": "gore", "ignorePrefilter": ignore})
        assert response.status_code == 400

    def test_words_match_whole_words_only(self, api: Api) -> None:
        assert api.imagine("bloodhound puppies")["content"] == "bloodhound puppies"

    def test_the_banned_list_is_configurable(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(banned_words=["broccoli"])
        assert (
            api.http.post("/v2/imagine", json={"msg": "broccoli"}).json()["msg"]
            == "Invalid phrase: 'broccoli'"
        )
        assert api.http.post("/v2/imagine", json={"msg": "blood"}).status_code == 200

    def test_without_prefilter_banned_prompts_fail_as_jobs(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(prefilter=False)
        assert api.imagine("blood moon")["content"] == "BANNED_PROMPT"

    @pytest.mark.parametrize(
        ("msg", "expected"),
        [
            ("a gore-tex jacket", {"isNaughty": True, "phrase": "gore"}),
            ("a sunny meadow", {"isNaughty": False, "phrase": ""}),
        ],
    )
    def test_is_this_naughty_answers_synchronously(self, api: Api, msg: str, expected: dict) -> None:
        response = api.http.post("/v2/is-this-naughty", json={"msg": msg})
        assert response.status_code == 200
        assert response.json() == expected


class TestPromptFlags:
    @pytest.mark.parametrize(
        "prompt",
        [
            "a cat --ar abc",
            "a cat --v 99",
            "a cat --foo",
            "a cat --chaos 101",
            "a cat --ar",
            "a cat --seed -1",
        ],
    )
    def test_malformed_flags_give_invalid_parameter(self, api: Api, prompt: str) -> None:
        response = api.imagine(prompt)
        assert response["content"] == "INVALID_PARAMETER"
        assert "imageUrl" not in response

    @pytest.mark.parametrize(
        "prompt",
        [
            "a cat --ar 16:9 --v 5.2",
            "a cat --niji 5 --s 250 --chaos 20",
            "https://example.com/a.png a cat --iw 1.5 --no text --q .5",
            "a cat --style raw --tile --stop 80",
        ],
    )
    def test_valid_flags_are_accepted(self, api: Api, prompt: str) -> None:
        response = api.imagine(prompt)
        assert response["content"] == prompt
        assert "imageUrl" in response

    def test_the_seed_flag_becomes_the_job_seed(self, api: Api) -> None:
        message_id = api.submit("/v2/imagine", msg="a cat --seed 1234")
        api.wait(message_id)
        assert api.http.post("/v2/seed", json={"messageId": message_id}).json() == {"seed": "1234"}


class TestTheFlagTable:
    """The provider and the emulator judge flags by one table (``airflow_provider_nextleg.prompt_flags``)."""

    @pytest.mark.parametrize(("prompt", "for_the_provider", "for_the_emulator"), FLAG_CASES)
    def test_the_bad_flag_of_a_prompt(
        self, prompt: str, for_the_provider: str | None, for_the_emulator: str | None
    ) -> None:
        assert prompt_flags.bad_flag(prompt, unknown_ok=True) == for_the_provider
        assert prompt_flags.bad_flag(prompt, unknown_ok=False) == for_the_emulator
        assert prompts.parse_flags(prompt).invalid == for_the_emulator

    @pytest.mark.parametrize(
        ("prompt", "expected"),
        [
            ("a cat --foo", prompts.PromptFlags(invalid="--foo")),
            ("a cat --ar 0:1", prompts.PromptFlags(invalid="--ar 0:1")),
            ("a cat --seed 7 --relax", prompts.PromptFlags(seed="7", mode="relax")),
            ("a cat --sameseed 9 --TURBO", prompts.PromptFlags(seed="9", mode="turbo")),
            ("a cat", prompts.PromptFlags()),
        ],
    )
    def test_the_emulator_refuses_unknown_flags(self, prompt: str, expected: prompts.PromptFlags) -> None:
        assert prompts.parse_flags(prompt) == expected


class TestForcedCodes:
    @pytest.mark.parametrize("code", ["FAILED_TO_PROCESS_YOUR_COMMAND", "MODERATION_OUTAGE", "IMAGE_BLOCKED"])
    def test_a_prompt_substring_forces_an_error_code(self, api: Api, emu: EmulatorServer, code: str) -> None:
        emu.set_faults(FaultSettings(forced_codes={"Sunflower": code}))
        assert api.imagine("a field of sunflowers")["content"] == code
        assert api.imagine("a field of tulips")["content"] == "a field of tulips"
