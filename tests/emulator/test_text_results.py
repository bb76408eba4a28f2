"""Describe, blend, info, settings and slash commands."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import Api

INFO_KEYS = {
    "Fast Time Remaining",
    "Job Mode",
    "Subscription",
    "Visibility Mode",
    "Lifetime Usage",
    "Relaxed Usage",
    "Queued Jobs (fast)",
    "Queued Jobs (relax)",
}


class TestDescribe:
    def test_four_prompts_deterministic_from_the_url(self, api: Api) -> None:
        first = api.result("/v2/describe", url="https://example.com/cat.png", ref="d")
        assert first["type"] == "describe"
        assert first["ref"] == "d"
        assert len(first["content"]) == 4
        assert all(isinstance(prompt, str) and prompt for prompt in first["content"])
        assert api.result("/v2/describe", url="https://example.com/cat.png")["content"] == first["content"]
        assert api.result("/v2/describe", url="https://example.com/dog.png")["content"] != first["content"]

    def test_a_numbered_button_imagines_that_prompt(self, api: Api) -> None:
        described = api.result("/v2/describe", url="https://example.com/cat.png")
        assert described["buttons"] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]
        grid = api.press(described, "2️⃣")
        assert grid["content"] == described["content"][1].split(" ", 1)[1]
        assert len(grid["imageUrls"]) == 4

    def test_an_invalid_link_fails_and_a_missing_url_is_a_400(self, api: Api) -> None:
        assert api.result("/v2/describe", url="not a link")["content"] == "INVALID_LINK"
        assert api.http.post("/v2/describe", json={}).status_code == 400


class TestBlend:
    def test_two_to_five_urls_make_a_grid(self, api: Api) -> None:
        urls = ["https://example.com/a.png", "https://example.com/b.png", "https://example.com/c.png"]
        result = api.result("/v2/blend", urls=urls)
        assert result["type"] == "blend"
        assert result["buttons"] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
        assert len(result["imageUrls"]) == 4
        upscaled = api.press(result, "U1")
        assert upscaled["imageUrls"] == [upscaled["imageUrl"]]

    @pytest.mark.parametrize(
        "urls",
        [["https://example.com/a.png"], [f"https://example.com/{n}.png" for n in range(6)], "a,b", None],
    )
    def test_other_counts_are_a_400(self, api: Api, urls: object) -> None:
        response = api.http.post("/v2/blend", json={"urls": urls})
        assert response.status_code == 400
        assert response.json()["success"] is False

    def test_an_invalid_link_fails(self, api: Api) -> None:
        assert (
            api.result("/v2/blend", urls=["https://example.com/a.png", "ftp://x"])["content"]
            == "INVALID_LINK"
        )


class TestInfoSettingsAndSlashCommands:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_info_reports_the_documented_keys(self, api: Api, method: str) -> None:
        message_id = api.http.request(method, "/v2/info", json={} if method == "POST" else None).json()[
            "messageId"
        ]
        info = api.wait(message_id)["response"]
        assert info["type"] == "info"
        assert set(info["content"]) == INFO_KEYS
        assert info["content"]["Job Mode"] == "Fast"
        assert info["content"]["Fast Time Remaining"] == "15.00/15.0 hours (100.00%)"

    def test_settings_lists_the_toggles_as_buttons(self, api: Api) -> None:
        message_id = api.http.get("/v2/settings").json()["messageId"]
        settings = api.wait(message_id)["response"]
        assert settings["type"] == "settings"
        assert {"Fast mode", "Relax mode", "Stealth mode", "MJ version 5.2"} <= set(settings["buttons"])
        # A string, as the SDK types it (``WebhookResponses.Settings.content: string``); the modes are
        # in /v2/info.
        assert settings["content"] == "Adjust your settings here."

    def test_a_settings_toggle_changes_the_mode(self, api: Api) -> None:
        toggled = api.result("/v2/settings", settingsToggle="Relax mode")
        assert toggled["content"] == "Adjust your settings here."
        assert "Relax mode" in toggled["buttons"]
        assert api.result("/v2/info")["content"]["Job Mode"] == "Relax"

    def test_a_toggle_is_also_a_button_of_the_settings_message(self, api: Api) -> None:
        settings = api.wait(api.http.get("/v2/settings").json()["messageId"])["response"]
        assert api.press(settings, "Stealth mode")["content"] == "Adjust your settings here."
        assert api.result("/v2/info")["content"]["Visibility Mode"] == "Stealth"

    def test_an_unknown_toggle_is_not_found(self, api: Api) -> None:
        assert api.result("/v2/settings", settingsToggle="Hyper mode")["content"] == "BUTTON_NOT_FOUND"

    @pytest.mark.parametrize(
        ("cmd", "setting", "value"),
        [
            ("relax", "Job Mode", "Relax"),
            ("fast", "Job Mode", "Fast"),
            ("private", "Visibility Mode", "Stealth"),
            ("stealth", "Visibility Mode", "Stealth"),
        ],
    )
    def test_slash_commands_change_the_mode(self, api: Api, cmd: str, setting: str, value: str) -> None:
        reply = api.result("/v2/slash-commands", cmd=cmd)
        assert reply["type"] == "slash-command"
        assert api.result("/v2/info")["content"][setting] == value

    def test_an_unknown_slash_command_is_a_400(self, api: Api, emu: EmulatorServer) -> None:
        response = api.http.post("/v2/slash-commands", json={"cmd": "turbo"})
        assert response.status_code == 400
        assert response.json()["success"] is False
        assert emu.ledger()[0]["status"] == 400
