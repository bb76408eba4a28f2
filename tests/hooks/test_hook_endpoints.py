"""Every endpoint of the hook over real HTTP against the emulator, through both faces."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg.emulator import FaultSettings
from airflow_provider_nextleg.models import MessageStatus, NaughtyResult, SubmitResult

from .helpers import connection_json, poll


class TestImageJobs:
    def test_imagine_then_buttons(self, call, nextleg_emulator):
        submitted = call("imagine", "a lighthouse at dawn --ar 16:9", ref="flow-1")
        assert isinstance(submitted, SubmitResult)
        assert submitted.created_at is not None

        grid = poll(call, submitted.message_id)
        assert grid.status is MessageStatus.DONE
        assert (grid.type, grid.ref, grid.content) == ("imagine", "flow-1", "a lighthouse at dawn --ar 16:9")
        assert grid.buttons == ("U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4")
        assert len(grid.image_urls) == 4
        assert grid.originating_message_id == submitted.message_id

        variation = poll(call, call("button", "V1", grid.button_message_id, ref="flow-2").message_id)
        assert (variation.status, variation.type, variation.ref) == (MessageStatus.DONE, "button", "flow-2")

        upscale = poll(call, call("button", "U1", grid.button_message_id).message_id)
        assert "Custom Zoom" in upscale.buttons
        zoom = call("button", "Custom Zoom", upscale.button_message_id, zoom=1.5, ar="1:1", prompt="wider")
        assert poll(call, zoom.message_id).status is MessageStatus.DONE

        sent = [(entry["endpoint"], entry["payload"]) for entry in nextleg_emulator.ledger()]
        assert sent == [
            ("/v2/imagine", {"msg": "a lighthouse at dawn --ar 16:9", "ref": "flow-1"}),
            ("/v2/button", {"button": "V1", "buttonMessageId": grid.button_message_id, "ref": "flow-2"}),
            ("/v2/button", {"button": "U1", "buttonMessageId": grid.button_message_id}),
            (
                "/v2/button",
                {
                    "button": "Custom Zoom",
                    "buttonMessageId": upscale.button_message_id,
                    "prompt": "wider",
                    "zoom": 1.5,
                    "ar": "1:1",
                },
            ),
        ]

    def test_seed_and_image(self, call):
        grid = poll(call, call("imagine", "a red fox in snow").message_id)
        assert call("get_seed", grid.message_id).isdigit()
        image = call("get_image", grid.image_url)
        assert image.startswith(b"\x89PNG")

    def test_expire_mins_defaults_to_the_connection(self, call, nextleg_emulator, monkeypatch):
        # A stalled job turns incomplete after expireMins: 1 minute is 0.6 s at the emulator's time scale.
        monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", connection_json(nextleg_emulator, expire_mins=1))
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stall": "STALL"}))
        submitted = call("imagine", "a stall of apples")
        assert poll(call, submitted.message_id).status is MessageStatus.INCOMPLETE

    def test_describe(self, call):
        grid = poll(call, call("imagine", "an old map").message_id)
        described = poll(call, call("describe", grid.image_urls[0], ref="d").message_id)
        assert described.type == "describe"
        assert isinstance(described.content, list)
        assert len(described.content) == 4

    def test_blend(self, call):
        grid = poll(call, call("imagine", "two birds").message_id)
        blended = poll(call, call("blend", list(grid.image_urls[:2])).message_id)
        assert (blended.status, blended.type) == (MessageStatus.DONE, "blend")


class TestAccountCalls:
    def test_info(self, call, nextleg_emulator):
        info = poll(call, call("info", ref="account-check").message_id)
        assert info.type == "info"
        assert isinstance(info.content, dict)
        assert "Job Mode" in info.content
        (entry,) = nextleg_emulator.ledger()
        assert (entry["method"], entry["endpoint"], entry["ref"]) == ("GET", "/v2/info", "account-check")

    def test_settings_and_toggle(self, call):
        settings = poll(call, call("get_settings").message_id)
        assert "Relax mode" in settings.buttons
        toggled = poll(call, call("toggle_setting", "Relax mode").message_id)
        assert toggled.status is MessageStatus.DONE
        info = poll(call, call("info").message_id)
        assert info.content["Job Mode"] == "Relax"

    @pytest.mark.parametrize("command", ["relax", "fast", "private", "stealth"])
    def test_slash_commands(self, call, nextleg_emulator, command):
        assert poll(call, call("slash_command", command).message_id).status is MessageStatus.DONE
        assert nextleg_emulator.ledger()[0]["payload"] == {"cmd": command}

    def test_is_this_naughty(self, call, nextleg_emulator):
        assert call("is_this_naughty", "a blood moon over the sea") == NaughtyResult(True, "blood")
        assert call("is_this_naughty", "a calm sea") == NaughtyResult(False, None)
        assert nextleg_emulator.ledger() == []  # a check, not a job
