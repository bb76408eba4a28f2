"""Official clients run unchanged against the emulator: the Python SDK, the TypeScript SDK from npm, and
the documentation's JS flow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import midjourney_api
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import wait_until

JS = Path(__file__).parent / "js"
QUICKSTART_JS = JS / "quickstart.js"
SDK_FLOW_JS = JS / "sdk_flow.js"
NO_NODE = "node is not installed, so the JavaScript clients cannot run"


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


@pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE)
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


@pytest.fixture(scope="session")
def tnl_sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The TypeScript SDK as published (``tests/emulator/js/sdk/package-lock.json``: tnl-midjourney-api
    1.0.3 and its axios), installed with ``npm ci`` into a temporary directory; npm's cache makes later
    runs work offline. ``TNL_SDK`` may name another build of the SDK (a directory holding its
    ``package.json``), for instance one of its GitHub source, which has ``TNLBalanced``."""
    if os.environ.get("TNL_SDK"):
        yield Path(os.environ["TNL_SDK"])
        return
    if shutil.which("npm") is None:
        pytest.fail("node is installed but npm is not: install npm to run the TypeScript SDK's test")
    root = tmp_path_factory.mktemp("tnl-sdk")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(JS / "sdk" / name, root / name)
    install = subprocess.run(
        ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, f"npm could not install the SDK: {install.stderr[-2000:]}"
    yield root / "node_modules" / "tnl-midjourney-api"


def run_sdk(emulator: EmulatorServer, sdk: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "NEXTLEG_BASE_URL": emulator.base_url,
        "NEXTLEG_AUTH_TOKEN": emulator.settings.token,
        "NEXTLEG_POLL_MS": "20",
        "TNL_SDK": str(sdk),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    run = subprocess.run(
        ["node", str(SDK_FLOW_JS), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE)
class TestTypeScriptSdk:
    """``tnl-midjourney-api`` unchanged but for its base URL (an axios interceptor rewrites the host)."""

    def test_the_tnl_class_runs_every_call_it_has(self, emu: EmulatorServer, tnl_sdk: Path) -> None:
        out = run_sdk(emu, tnl_sdk)
        assert out["imagine"]["success"] is True
        grid = out["grid"]
        assert grid["ref"] == "sdk-ref"
        assert grid["buttons"] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
        assert len(grid["imageUrls"]) == 4
        assert out["variation"]["type"] == "button"
        assert out["upscale"]["imageUrls"] == [out["upscale"]["imageUrl"]]
        assert "🖌️ Vary (Region)" in out["upscale"]["buttons"]
        assert out["favorite"]["imageUrl"]
        assert out["seed"]["seed"].isdigit()
        assert out["img2img"]["content"].startswith(grid["imageUrls"][0])
        assert len(out["describe"]["content"]) == 4
        # The SDK types the settings result's content as a string (WebhookResponses.Settings).
        assert isinstance(out["settings"]["content"], str)
        assert "Relax mode" in out["settings"]["buttons"]
        assert out["slashCommand"]["type"] == "slash-command"
        assert out["info"]["content"]["Job Mode"] == "Fast"
        if "upscaleImgUrl" in out:  # in the SDK's source, not in its published releases
            assert out["upscaleImgUrl"] == {"url": grid["imageUrls"][2]}
        if "getImage" in out:  # the same
            assert out["getImage"]["status"] == 200
            assert out["getImage"]["contentType"] == "image/png"
            assert out["getImage"]["bytes"] > 1000

    def test_the_tnl_balanced_class_spreads_jobs_over_the_accounts(
        self, emu: EmulatorServer, tnl_sdk: Path
    ) -> None:
        has_balanced = subprocess.run(
            ["node", "-e", f"process.exit(require({str(tnl_sdk)!r}).TNLBalanced ? 0 : 1)"], check=False
        )
        if has_balanced.returncode != 0:
            pytest.skip(
                "the installed tnl-midjourney-api has no TNLBalanced: no release on npm has it (1.0.2 and "
                "1.0.3 do not), only the SDK's GitHub source; set TNL_SDK to a build of that source to run it"
            )
        out = run_sdk(emu, tnl_sdk, "--balanced")
        accounts = [answer["accountId"] for answer in out["imagines"]]
        assert accounts == ["emulator-account", "emulator-account-2", "emulator-account-3"]
        assert all(answer["loadBalanceId"] for answer in out["imagines"])
        assert [grid["loadBalanceId"] for grid in out["grids"]] == [
            a["loadBalanceId"] for a in out["imagines"]
        ]
        assert out["button"]["accountId"] == "emulator-account-2"
        assert out["upscale"]["imageUrls"] == [out["upscale"]["imageUrl"]]
        assert len(out["describe"]["content"]) == 4
