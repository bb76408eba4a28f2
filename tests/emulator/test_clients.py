"""Official clients run unchanged against the emulator: the Python SDK and the documentation's JS flow."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import midjourney_api
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import wait_until

QUICKSTART_JS = Path(__file__).parent / "js" / "quickstart.js"


def test_the_python_sdk_runs_imagine_then_v1(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midjourney_api, "BASE_URL", f"{emu.base_url}/v2")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = midjourney_api.TNL(emu.settings.token)

    def finished(message_id: str) -> dict:
        return wait_until(
            lambda: (body := client.get_message_and_progress(message_id, None))["progress"] == 100 and body
        )

    submitted = client.imagine("A Rhinoceros in the Amazon, photorealistic", ref="sdk")
    assert submitted["success"] is True
    grid = finished(submitted["messageId"])["response"]
    assert grid["ref"] == "sdk"
    pressed = client.button("V1", grid["buttonMessageId"])
    variation = finished(pressed["messageId"])["response"]
    assert variation["type"] == "button"
    assert variation["buttons"] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert variation["imageUrl"].startswith(emu.base_url)
    assert len(variation["imageUrls"]) == 4
    assert client.get_seed(submitted["messageId"])["seed"].isdigit()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed, so the JS flow cannot run")
def test_the_documented_javascript_flow_runs_unchanged(nextleg_emulator: EmulatorServer) -> None:
    """The seed's Quick Start, at the plugin's time scale (jobs of 0.3 to 0.75 s) polled every 100 ms."""
    env = {
        **os.environ,
        "NEXTLEG_BASE_URL": f"{nextleg_emulator.base_url}/v2",
        "NEXTLEG_AUTH_TOKEN": nextleg_emulator.settings.token,
        "NEXTLEG_POLL_MS": "100",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    run = subprocess.run(
        ["node", str(QUICKSTART_JS)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for banner in ("IMAGE GENERATION MESSAGE DATA", "COMPLETED IMAGE DATA", "IMAGE VARIATION MESSAGE DATA"):
        assert banner in out
    assert "Progress: " in out
    assert f"Progress Image Url: {nextleg_emulator.base_url}/cdn/" in out
    variation = out.split("COMPLETED VARIATION DATA", 1)[1]
    assert "progress: 100" in variation
    assert "type: 'button'" in variation
    assert "'U1'" in variation
    assert "'V4'" in variation
    assert "0_3.png'" in variation
    assert "buttonMessageId: '" in variation
