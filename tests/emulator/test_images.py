"""Images: real PNGs on an unauthenticated CDN path, deterministic and telling, and /getImage."""

from __future__ import annotations

import io
import uuid

import httpx
from PIL import Image

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings
from airflow_provider_nextleg.emulator.protocol import CdnFile

from .support import Api, wait_until


def download(url: str) -> httpx.Response:
    return httpx.get(url, trust_env=False)


def png(url: str) -> bytes:
    response = download(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return response.content


class TestCdn:
    def test_grid_and_quadrants_are_pngs_named_like_the_real_cdn(self, api: Api) -> None:
        result = api.imagine()
        grid = Image.open(io.BytesIO(png(result["imageUrl"])))
        assert (grid.format, grid.size) == ("PNG", (512, 512))
        quadrants = [png(url) for url in result["imageUrls"]]
        assert [url.rsplit("/", 1)[1] for url in result["imageUrls"]] == [
            "0_0.png",
            "0_1.png",
            "0_2.png",
            "0_3.png",
        ]
        assert len(set(quadrants)) == 4
        assert Image.open(io.BytesIO(quadrants[0])).size == (512, 512)

    def test_same_prompt_and_seed_draw_the_same_picture(self, api: Api) -> None:
        first = api.imagine("a koi pond --seed 99")
        second = api.imagine("a koi pond --seed 99")
        assert first["imageUrl"] != second["imageUrl"]
        assert png(first["imageUrl"]) == png(second["imageUrl"])

    def test_different_prompts_and_buttons_draw_different_pictures(self, api: Api) -> None:
        fox, owl = api.imagine("a fox --seed 1"), api.imagine("an owl --seed 1")
        assert png(fox["imageUrl"]) != png(owl["imageUrl"])
        v1, v2 = api.press(fox, "V1"), api.press(fox, "V2")
        assert len({png(fox["imageUrl"]), png(v1["imageUrl"]), png(v2["imageUrl"])}) == 3

    def test_final_images_appear_only_when_the_job_is_done(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(time_scale=0.01)
        message_id = api.submit("/v2/imagine", msg="not yet")
        preview = wait_until(lambda: api.message(message_id).get("progressImageUrl"))
        job = CdnFile.from_url(preview)
        assert job is not None
        for file in (CdnFile.image(job.uuid, "not yet"), CdnFile(job.uuid, "tile", 0)):
            assert download(file.url(emu.base_url)).status_code == 404
        assert download(CdnFile(str(uuid.uuid4()), "tile", 0).url(emu.base_url)).status_code == 404
        api.wait(message_id)
        assert download(CdnFile(job.uuid, "tile", 0).url(emu.base_url)).status_code == 200

    def test_progress_images_are_blurred_small_webp_previews(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(time_scale=0.01)
        message_id = api.submit("/v2/imagine", msg="a preview")
        response = download(wait_until(lambda: api.message(message_id).get("progressImageUrl")))
        assert response.headers["content-type"] == "image/webp"
        preview = Image.open(io.BytesIO(response.content))
        assert (preview.format, preview.size) == ("WEBP", (256, 256))

    def test_cdn_downloads_need_no_token_and_do_not_count_against_the_rate_limit(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        result = api.imagine()
        emu.configure(rate_limit=True)
        for _ in range(3):
            png(result["imageUrl"])
        assert api.http.get("/v2/info").status_code == 200
        assert emu.counters()["requests"]["GET /cdn"] == 3


class TestCdnForbidden:
    def test_direct_downloads_answer_403_but_get_image_returns_the_bytes(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        result = api.imagine()
        expected = png(result["imageUrl"])
        emu.set_faults(FaultSettings(cdn_forbidden=True))
        assert download(result["imageUrl"]).status_code == 403
        response = api.http.post("/getImage", json={"imgUrl": result["imageUrl"]})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == expected

    def test_get_image_of_an_unknown_url_is_a_404(self, api: Api) -> None:
        assert (
            api.http.post("/getImage", json={"imgUrl": "https://cdn.example.com/x/0_0.png"}).status_code
            == 404
        )
