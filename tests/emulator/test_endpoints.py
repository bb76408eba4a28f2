"""The rest of the API over HTTP: Vary (Region), /upscale-img-url, /face-swap, the v1 /api, the GET forms of
every POST endpoint, the service's error shape for unknown routes, and the CDN's 403s to servers."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.emulator.protocol import CdnFile

from .support import Api, wait_until

GRID_BUTTONS = ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
VARY_REGION = "🖌️ Vary (Region)"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"}


def mask(fmt: str = "PNG", box: tuple[int, int, int, int] | None = (512, 0, 1024, 1024)) -> str:
    """A base64 mask of a 1024 px upscale: white (redrawn) in ``box``, black elsewhere."""
    image = Image.new("L", (1024, 1024), 0)
    if box:
        image.paste(255, box)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def picture(url: str, **kwargs: Any) -> Image.Image:
    response = httpx.get(url, trust_env=False, **kwargs)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)).convert("RGB")


class TestVaryRegion:
    @pytest.fixture
    def upscale(self, api: Api) -> dict[str, Any]:
        upscale = api.press(api.imagine("a red fox in the snow"), "U2")
        assert VARY_REGION in upscale["buttons"]
        return upscale

    def test_the_masked_region_is_redrawn_in_a_new_grid(self, api: Api, upscale: dict[str, Any]) -> None:
        result = api.press(upscale, VARY_REGION, mask=mask(), prompt="a red fox with a blue scarf")
        assert result["type"] == "button"
        assert result["content"] == "a red fox with a blue scarf"
        assert result["buttons"] == GRID_BUTTONS
        tiles = [picture(url) for url in result["imageUrls"]]
        # The region (the right half) is drawn anew in each of the four images, the rest is the upscale's.
        left, right = (256, 300), (400, 300)
        assert len({tile.getpixel(left) for tile in tiles}) == 1
        assert len({tile.getpixel(right) for tile in tiles}) > 1
        assert picture(result["imageUrl"]).size == (512, 512)

    def test_a_webp_mask_and_a_data_url_are_accepted(self, api: Api, upscale: dict[str, Any]) -> None:
        for encoded in (mask("WEBP"), f"data:image/png;base64,{mask()}"):
            assert api.press(upscale, VARY_REGION, mask=encoded, prompt="x")["buttons"] == GRID_BUTTONS

    @pytest.mark.parametrize(
        "bad",
        [
            "not base64!",
            base64.b64encode(b"GIF89a not a png").decode(),
            mask("JPEG"),
            mask(box=None),  # marks nothing
        ],
        ids=["not-base64", "not-an-image", "jpeg", "empty-region"],
    )
    def test_a_mask_midjourney_cannot_use_fails_the_job(
        self, api: Api, upscale: dict[str, Any], bad: str
    ) -> None:
        result = api.press(upscale, VARY_REGION, mask=bad, prompt="x")
        assert result["content"] == "INVALID_PARAMETER"
        assert "imageUrl" not in result

    @pytest.mark.parametrize(
        ("prompt", "code"),
        [("a fox covered in blood", "BANNED_PROMPT"), ("a fox --ar 0:1", "INVALID_PARAMETER")],
    )
    def test_the_prompt_follows_the_prompt_rules(
        self, api: Api, upscale: dict[str, Any], prompt: str, code: str
    ) -> None:
        assert api.press(upscale, VARY_REGION, mask=mask(), prompt=prompt)["content"] == code

    @pytest.mark.parametrize("missing", ["mask", "prompt"])
    def test_mask_and_prompt_are_required(self, api: Api, upscale: dict[str, Any], missing: str) -> None:
        fields = {
            "button": VARY_REGION,
            "buttonMessageId": upscale["buttonMessageId"],
            "mask": mask(),
            "prompt": "x",
        }
        del fields[missing]
        response = api.http.post("/v2/button", json=fields)
        assert response.status_code == 400
        assert response.json()["msg"].startswith(f"{missing} is required with {VARY_REGION}")

    def test_a_grid_does_not_offer_it(self, api: Api) -> None:
        assert api.press(api.imagine(), VARY_REGION, mask=mask(), prompt="x")["content"] == "BUTTON_NOT_FOUND"

    def test_the_documented_get_form(self, api: Api, upscale: dict[str, Any], emu: EmulatorServer) -> None:
        response = httpx.get(
            f"{emu.base_url}/v2/button",
            params={
                "authToken": emu.settings.token,
                "buttonMessageId": upscale["buttonMessageId"],
                "button": VARY_REGION,
                "mask": mask(),
                "prompt": "a fox in a hat",
            },
            trust_env=False,
        )
        assert response.status_code == 200
        assert api.wait(response.json()["messageId"])["response"]["content"] == "a fox in a hat"


class TestUpscaleImgUrl:
    def test_answers_the_url_of_one_image_of_the_grid(self, api: Api) -> None:
        grid = api.imagine()
        for index, button in enumerate(("U1", "U2", "U3", "U4")):
            # As the SDK sends it: the button unencoded in the query.
            response = api.http.get(
                f"/upscale-img-url?buttonMessageId={grid['buttonMessageId']}&button={button}"
            )
            assert response.status_code == 200
            assert response.json() == {"url": grid["imageUrls"][index]}
        assert picture(response.json()["url"]).size == (512, 512)

    def test_it_starts_no_job(self, api: Api, emu: EmulatorServer) -> None:
        grid = api.imagine()
        api.http.get("/upscale-img-url", params={"buttonMessageId": grid["buttonMessageId"], "button": "U1"})
        assert len(emu.jobs()) == 1
        assert len(emu.ledger()) == 1

    @pytest.mark.parametrize(
        ("params", "status"),
        [
            ({"buttonMessageId": "noSuchButtonMessage0", "button": "U1"}, 404),
            ({"button": "U1"}, 400),
            ("V1", 400),
            ("U5", 400),
        ],
    )
    def test_what_it_refuses(self, api: Api, params: Any, status: int) -> None:
        if isinstance(params, str):
            params = {"buttonMessageId": api.imagine()["buttonMessageId"], "button": params}
        response = api.http.get("/upscale-img-url", params=params)
        assert response.status_code == status
        assert response.json()["success"] is False

    def test_an_upscale_has_no_grid_images(self, api: Api) -> None:
        upscale = api.press(api.imagine(), "U1")
        response = api.http.get(
            "/upscale-img-url", params={"buttonMessageId": upscale["buttonMessageId"], "button": "U1"}
        )
        assert response.status_code == 400

    def test_it_takes_the_token(self, emu: EmulatorServer) -> None:
        assert httpx.get(f"{emu.base_url}/upscale-img-url", trust_env=False).status_code == 401


class TestFaceSwap:
    def test_answers_the_target_with_the_source_face_as_png(self, api: Api) -> None:
        target = api.press(api.imagine("a knight"), "U1")["imageUrl"]
        source = api.imagine("a cat")["imageUrls"][0]
        response = api.http.post("/face-swap", json={"sourceImg": source, "targetImg": target})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        swapped = Image.open(io.BytesIO(response.content)).convert("RGB")
        original = picture(target)
        assert swapped.size == original.size == (1024, 1024)
        assert swapped.getpixel((50, 700)) == original.getpixel((50, 700))  # outside the face: the target
        assert swapped.getpixel((512, 512)) != original.getpixel((512, 512))
        assert api.http.get("/face-swap", params={"sourceImg": source, "targetImg": target}).content == (
            response.content
        )

    def test_images_elsewhere_are_drawn_from_their_url(self, api: Api) -> None:
        fields = {"sourceImg": "https://example.com/me.jpg", "targetImg": "https://example.com/hero.png"}
        first, again = (api.http.post("/face-swap", json=fields) for _ in range(2))
        assert first.status_code == 200
        assert first.content == again.content

    @pytest.mark.parametrize(
        ("fields", "status"),
        [
            ({"sourceImg": "https://example.com/a.png"}, 400),
            ({"sourceImg": "ftp://x", "targetImg": "https://example.com/a.png"}, 400),
            (
                {
                    "sourceImg": "https://example.com/a.png",
                    "targetImg": "http://h/cdn/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12 + "/0_0.png",
                },
                404,
            ),
        ],
    )
    def test_what_it_refuses(self, api: Api, emu: EmulatorServer, fields: dict, status: int) -> None:
        response = api.http.post("/face-swap", json=fields)
        assert response.status_code == status
        assert response.json()["success"] is False
        assert emu.ledger()[-1]["status"] == status


class TestV1Api:
    def test_imagine_then_a_button_then_the_seed(self, api: Api, emu: EmulatorServer) -> None:
        message_id = api.submit("/api", cmd="imagine", msg="a paper boat", ref="", webhookOverride="")
        grid = api.wait(message_id)["response"]
        assert grid["content"] == "a paper boat"
        pressed = api.submit("/api", button="U1", buttonMessageId=grid["buttonMessageId"])
        assert api.wait(pressed)["response"]["imageUrls"]
        reaction = api.submit("/api", reaction="✉️", buttonMessageId=grid["buttonMessageId"])
        assert api.wait(reaction)["response"]["seed"].isdigit()
        assert [entry["endpoint"] for entry in emu.ledger()] == ["/api"] * 3

    @pytest.mark.parametrize(
        ("fields", "kind"),
        [
            ({"cmd": "info"}, "info"),
            ({"cmd": "relax"}, "slash-command"),
            ({"cmd": "describe", "url": "https://example.com/a.png"}, "describe"),
        ],
    )
    def test_the_other_commands(self, api: Api, fields: dict, kind: str) -> None:
        assert api.result("/api", **fields)["type"] == kind

    @pytest.mark.parametrize("fields", [{}, {"cmd": "blend"}, {"cmd": "imagine"}])
    def test_a_missing_or_unknown_cmd_is_a_400(self, api: Api, fields: dict) -> None:
        response = api.http.post("/api", json=fields)
        assert response.status_code == 400
        assert response.json()["success"] is False

    def test_the_get_form(self, emu: EmulatorServer) -> None:
        response = httpx.get(
            f"{emu.base_url}/api",
            params={"authToken": emu.settings.token, "cmd": "imagine", "msg": "x"},
            trust_env=False,
        )
        assert response.status_code == 200
        assert response.json()["success"] is True


class TestGetForms:
    """ "You can pass any arguments in the POST request as encoded URI query parameters" [doc]."""

    @pytest.mark.parametrize(
        ("path", "params"),
        [
            ("/v2/imagine", {"msg": "a koi pond", "ref": "q"}),
            ("/v2/describe", {"url": "https://example.com/a.png"}),
            ("/v2/blend", [("urls", "https://example.com/a.png"), ("urls", "https://example.com/b.png")]),
            ("/v2/blend", {"urls": json.dumps(["https://example.com/a.png", "https://example.com/b.png"])}),
            ("/v2/info", {}),
            ("/v2/settings", {"settingsToggle": "Relax mode"}),
            ("/v2/slash-commands", {"cmd": "fast"}),
            ("/api", {"cmd": "info"}),
            ("/loadBalancer/imagine", {"msg": "x"}),
            ("/loadBalancer/describe", {"url": "https://example.com/a.png"}),
            ("/ppu/imagine", {"msg": "x"}),
        ],
    )
    def test_every_submission_has_a_get_form(
        self, emu: EmulatorServer, api: Api, path: str, params: Any
    ) -> None:
        query = [("authToken", emu.settings.token), *(params.items() if isinstance(params, dict) else params)]
        response = httpx.get(f"{emu.base_url}{path}", params=query, trust_env=False)
        assert response.status_code == 200, response.text
        answer = response.json()
        pool, key = path.split("/")[1], next((k for k in ("loadBalanceId", "ppuId") if k in answer), None)
        poll = f"/{pool}/message/{answer['messageId']}" if key else f"/v2/message/{answer['messageId']}"
        params = {key: answer[key]} if key else {}
        body = wait_until(
            lambda: (got := api.http.get(poll, params=params).json())["progress"] == 100 and got
        )
        assert body["response"]["content"] not in ("INVALID_LINK", "INVALID_PARAMETER", "BUTTON_NOT_FOUND")

    def test_the_synchronous_endpoints_have_a_get_form(self, api: Api) -> None:
        grid = api.imagine("a cat --seed 42")
        assert api.http.get("/v2/seed", params={"messageId": grid["originatingMessageId"]}).json() == {
            "seed": "42"
        }
        assert api.http.get("/v2/is-this-naughty", params={"msg": "gore"}).json() == {
            "isNaughty": True,
            "phrase": "gore",
        }
        image = api.http.get("/getImage", params={"imgUrl": grid["imageUrls"][0]})
        assert (image.status_code, image.headers["content-type"]) == (200, "image/png")

    def test_pool_follow_ups_have_a_get_form(self, api: Api) -> None:
        answer = api.http.get("/loadBalancer/imagine", params={"msg": "x"}).json()
        grid = wait_until(
            lambda: (
                (
                    body := api.http.get(
                        f"/loadBalancer/message/{answer['messageId']}",
                        params={"loadBalanceId": answer["loadBalanceId"]},
                    ).json()
                )["progress"]
                == 100
                and body
            )
        )["response"]
        pressed = api.http.get(
            "/loadBalancer/button",
            params={
                "button": "V1",
                "buttonMessageId": grid["buttonMessageId"],
                "loadBalanceId": grid["loadBalanceId"],
            },
        )
        assert pressed.status_code == 200
        assert pressed.json()["accountId"] == answer["accountId"]


class TestErrorShape:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/v3/imagine", 404),
            ("GET", "/", 404),
            ("POST", "/loadBalancer/blend", 404),
            ("GET", "/cdn/nothing/here.png", 404),
            ("DELETE", "/v2/imagine", 405),
            ("POST", "/v2/message/abc", 405),
            ("PUT", "/getImage", 405),
            ("POST", "/upscale-img-url", 405),
        ],
    )
    def test_unknown_routes_and_methods_answer_in_the_services_shape(
        self, api: Api, method: str, path: str, status: int
    ) -> None:
        response = api.http.request(method, path)
        assert response.status_code == status
        body = response.json()
        assert set(body) == {"success", "msg"}
        assert body["success"] is False
        assert path in body["msg"]


class TestCdn403ToServers:
    @pytest.fixture
    def realistic(self) -> Any:
        """An emulator with the settings' defaults for the CDN: every server download of a tile refused."""
        with EmulatorServer(EmulatorSettings(time_scale=0.001, rate_limit=False)) as server:
            yield server

    def test_tiles_answer_403_to_servers_and_get_image_returns_them(self, realistic: EmulatorServer) -> None:
        assert realistic.settings.cdn_403_rate == 1.0
        api = Api(realistic.base_url, realistic.settings.token)
        try:
            grid = api.imagine()
            for url in grid["imageUrls"]:
                refused = httpx.get(url, trust_env=False)
                assert refused.status_code == 403
                assert refused.headers["content-type"].startswith("text/html")
                assert picture(url, headers=BROWSER).size == (512, 512)  # a person's browser gets it
                fetched = api.http.post("/getImage", json={"imgUrl": url})
                assert (fetched.status_code, fetched.headers["content-type"]) == (200, "image/png")
            assert picture(grid["imageUrl"]).size == (512, 512)  # the Discord attachment is served
            assert realistic.counters()["forbidden"] == {"GET /cdn": 4}
        finally:
            api.http.close()

    def test_the_share_of_403s_is_a_setting(self, emu: EmulatorServer, api: Api) -> None:
        grid = api.imagine()
        emu.configure(cdn_403_rate=0.5)
        statuses = [httpx.get(grid["imageUrls"][n % 4], trust_env=False).status_code for n in range(200)]
        assert 60 < statuses.count(403) < 140
        assert set(statuses) == {200, 403}
        emu.configure(cdn_403_rate=0.0)
        assert httpx.get(grid["imageUrls"][0], trust_env=False).status_code == 200

    def test_the_plugins_fixture_refuses_servers_as_the_real_cdn_does(
        self, nextleg_emulator: EmulatorServer
    ) -> None:
        assert nextleg_emulator.configure()["cdn_403_rate"] == 1.0

    def test_get_image_takes_the_real_hosts_urls(self, api: Api) -> None:
        grid = api.imagine()
        file = CdnFile.from_url(grid["imageUrls"][1])
        assert file is not None
        real = f"https://cdn.midjourney.com/{file.uuid}/0_1.png"
        response = api.http.post("/getImage", json={"imgUrl": real})
        assert response.content == httpx.get(grid["imageUrls"][1], trust_env=False).content
