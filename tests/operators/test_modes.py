"""The connection's ``mode``: the load balancer and pay-per-use, through the hook, the trigger and a real
DAG run (``dag.test()``) against the emulator; and ``🖌️ Vary (Region)`` with its mask."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from airflow.utils.state import DagRunState
from PIL import Image

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.exceptions import NextLegBadRequestError, NextLegInputError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger, wait_in_process

from .test_dags import run, xcom

POOLS = {"load_balancer": ("/loadBalancer", "loadBalanceId"), "pay_per_use": ("/ppu", "ppuId")}


def in_mode(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    conn = json.loads(emulator.airflow_connection_json())
    conn["extra"]["mode"] = mode
    monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", json.dumps(conn))


def wait(message_id: str, route_id: str | None) -> dict[str, Any]:
    trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=0.0, route_id=route_id)
    return asyncio.run(wait_in_process(trigger))


def png_mask(size: int = 64) -> bytes:
    """A mask: white where the region is redrawn."""
    picture = Image.new("L", (size, size), 0)
    picture.paste(255, (size // 4, size // 4, size // 2, size // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", list(POOLS))
class TestPools:
    def test_a_job_its_wait_and_a_press_go_to_the_account_that_runs_it(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str
    ):
        in_mode(nextleg_emulator, monkeypatch, mode)
        prefix, key = POOLS[mode]
        hook = NextLegHook(retry_wait=0.01)
        submitted = hook.imagine("a lighthouse at dawn")
        assert submitted.route_id
        event = wait(submitted.message_id, submitted.route_id)
        assert event["status"] == "done"
        grid = event["result"]
        assert grid["route_id"] == submitted.route_id  # the trigger's result carries it on
        pressed = hook.button("U1", grid["button_message_id"], route_id=grid["route_id"])
        assert wait(pressed.message_id, pressed.route_id)["status"] == "done"
        ledger = nextleg_emulator.ledger()
        assert [entry["endpoint"] for entry in ledger] == [f"{prefix}/imagine", f"{prefix}/button"]
        assert ledger[1]["payload"][key] == grid["route_id"]
        assert set(nextleg_emulator.counters()["requests"]) <= {
            f"POST {prefix}/imagine",
            f"POST {prefix}/button",
            f"GET {prefix}/message",
        }

    def test_what_a_pool_does_not_offer_is_refused_before_anything_is_sent(
        self, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str
    ):
        in_mode(nextleg_emulator, monkeypatch, mode)
        hook = NextLegHook()
        with pytest.raises(NextLegInputError, match=f"not offered in mode {mode}"):
            hook.blend(["https://example.com/a.png", "https://example.com/b.png"])
        with pytest.raises(NextLegInputError, match="needs the job's"):
            hook.button("U1", "grid0000000000000000")  # no route id: the pool could not route it
        with pytest.raises(NextLegInputError, match="needs the job's"):
            hook.get_message("grid0000000000000000")
        assert nextleg_emulator.counters()["requests"] == {}

    def test_the_chain_runs_unchanged_in_the_mode(
        self, dags, airflow_db, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str
    ):
        in_mode(nextleg_emulator, monkeypatch, mode)
        prefix, key = POOLS[mode]
        dag_run, tis = run(dags["nextleg_imagine_variation_upscale"], prompt="a red kite over a hill")
        assert dag_run.state == DagRunState.SUCCESS
        grid, variation = xcom(tis["imagine"]), xcom(tis["variation"])
        ledger = nextleg_emulator.ledger()
        assert [entry["endpoint"] for entry in ledger] == [f"{prefix}/imagine"] + [f"{prefix}/button"] * 2
        assert ledger[1]["payload"][key] == grid["route_id"]  # the user passed nothing
        assert ledger[2]["payload"][key] == variation["route_id"]
        assert not nextleg_emulator.duplicate_submissions()


def test_an_unknown_mode_is_refused(nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch):
    in_mode(nextleg_emulator, monkeypatch, "round_robin")
    with pytest.raises(NextLegInputError, match="mode='round_robin', not one of direct"):
        NextLegHook().imagine("a lighthouse")
    assert nextleg_emulator.counters()["requests"] == {}


def test_an_unknown_route_id_is_the_services_400(
    nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
):
    in_mode(nextleg_emulator, monkeypatch, "load_balancer")
    with pytest.raises(NextLegBadRequestError):
        NextLegHook(retry_wait=0.01).get_message("grid0000000000000000", route_id="notAnId000000000")


class TestVaryRegion:
    def upscale(self) -> dict[str, Any]:
        hook = NextLegHook(retry_wait=0.01)
        grid = wait(hook.imagine("a fox in the snow").message_id, None)["result"]
        return wait(hook.button("U1", grid["button_message_id"]).message_id, None)["result"]

    def test_the_region_is_redrawn(self, nextleg_emulator: EmulatorServer):
        upscale = self.upscale()
        assert "🖌️ Vary (Region)" in upscale["buttons"]
        pressed = NextLegHook().button(
            "🖌️ Vary (Region)", upscale["button_message_id"], mask=png_mask(), prompt="a red fox"
        )
        event = wait(pressed.message_id, None)
        assert event["status"] == "done"
        assert len(event["result"]["image_urls"]) == 4  # a new grid
        sent = nextleg_emulator.ledger()[-1]["payload"]
        assert sent["prompt"] == "a red fox"
        assert sent["mask"]  # base64 of the PNG

    @pytest.mark.parametrize(
        ("options", "problem"),
        [
            ({}, "needs mask"),
            ({"mask": b"GIF89a not a png"}, "not a PNG of 1 to"),
            ({"mask": "a path"}, "must be a PNG's bytes"),
            ({"mask": b"\x89PNG\r\n\x1a\n" + b"\0" * 9 * 1024 * 1024}, "over"),
            ({"mask": png_mask(), "zoom": 1.5}, "zoom only go with"),
        ],
        ids=["no-mask", "not-png", "not-bytes", "too-big", "zoom"],
    )
    def test_bad_masks_are_refused_before_anything_is_sent(
        self, nextleg_emulator: EmulatorServer, options: dict[str, Any], problem: str
    ):
        with pytest.raises(NextLegInputError, match=problem):
            NextLegHook().button("🖌️ Vary (Region)", "upsc0000000000000000", **options)
        assert nextleg_emulator.counters()["requests"] == {}

    def test_a_mask_goes_only_with_vary_region(self, nextleg_emulator: EmulatorServer):
        with pytest.raises(NextLegInputError, match="mask only go with"):
            NextLegHook().button("U1", "grid0000000000000000", mask=png_mask())


class TestImmediateEndpoints:
    def test_the_url_of_one_image_of_a_grid(self, nextleg_emulator: EmulatorServer):
        hook = NextLegHook(retry_wait=0.01)
        grid = wait(hook.imagine("a glass teapot").message_id, None)["result"]
        url = hook.upscale_image_url("U2", grid["button_message_id"])
        assert url == grid["image_urls"][1]
        assert nextleg_emulator.ledger()[-1]["endpoint"] == "/v2/imagine"  # no job was started

    def test_face_swap_answers_an_image(self, nextleg_emulator: EmulatorServer):
        hook = NextLegHook(retry_wait=0.01)
        grid = wait(hook.imagine("a portrait").message_id, None)["result"]
        data = hook.face_swap(grid["image_urls"][0], grid["image_urls"][1])
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format == "PNG"
