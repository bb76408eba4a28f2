"""Buttons: what each press on each result type produces, and the errors a press can end with."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from .support import Api

GRID_BUTTONS = ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
UPSCALE_BUTTONS = [
    "Vary (Strong)",
    "Vary (Subtle)",
    "🖌️ Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "⬅️",
    "➡️",
    "⬆️",
    "⬇️",
    "Make Square",
    "Upscale (2x)",
    "Upscale (4x)",
    "❤️ Favorite",
    "🪄 Make Variations",
]

#: the buttons of an upscale that make a new grid (the others need arguments or make no grid).
GRID_MAKERS = [
    b
    for b in UPSCALE_BUTTONS
    if b not in ("Custom Zoom", "🖌️ Vary (Region)", "Upscale (2x)", "Upscale (4x)", "❤️ Favorite")
]


def image_size(url: str) -> tuple[int, int]:
    response = httpx.get(url, trust_env=False)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)).size


class TestGridButtons:
    @pytest.mark.parametrize("button", ["V1", "V4", "🔄"])
    def test_variations_and_reroll_make_a_new_grid(self, api: Api, button: str) -> None:
        grid = api.imagine()
        result = api.press(grid, button)
        assert result["type"] == "button"
        assert result["buttons"] == GRID_BUTTONS
        assert result["content"] == grid["content"]
        assert len(result["imageUrls"]) == 4
        assert result["buttonMessageId"] != grid["buttonMessageId"]
        assert image_size(result["imageUrl"]) == (512, 512)

    def test_upscale_makes_one_bigger_image_with_the_v5_buttons(self, api: Api) -> None:
        result = api.press(api.imagine(), "U2")
        assert result["type"] == "button"
        assert result["buttons"] == UPSCALE_BUTTONS
        assert result["imageUrls"] == [result["imageUrl"]]
        assert image_size(result["imageUrl"]) == (1024, 1024)

    def test_the_same_upscale_twice_is_already_requested(self, api: Api) -> None:
        grid = api.imagine()
        api.press(grid, "U1")
        assert api.press(grid, "U1")["content"] == "ALREADY_REQUESTED_UPSCALE"
        assert "imageUrl" in api.press(grid, "U3")

    @pytest.mark.parametrize("button", ["Zoom Out 2x", "u1", ":arrows_counterclockwise:", "V5"])
    def test_a_button_the_message_does_not_offer_is_not_found(self, api: Api, button: str) -> None:
        result = api.press(api.imagine(), button)
        assert result["content"] == "BUTTON_NOT_FOUND"
        assert result["type"] == "button"
        assert "imageUrl" not in result

    def test_an_unknown_button_message_id_is_accepted_then_not_found(self, api: Api) -> None:
        message_id = api.submit("/v2/button", button="U1", buttonMessageId="noSuchButtonMessage0")
        assert api.wait(message_id)["response"]["content"] == "BUTTON_NOT_FOUND"

    def test_a_failed_result_offers_no_button(self, api: Api) -> None:
        failed = api.imagine("a cat --foo")
        assert "buttonMessageId" not in failed

    def test_missing_button_fields_are_a_400(self, api: Api) -> None:
        assert api.http.post("/v2/button", json={"button": "U1"}).status_code == 400


class TestUpscaleButtons:
    @pytest.mark.parametrize("button", GRID_MAKERS)
    def test_vary_zoom_and_pan_make_a_new_grid(self, api: Api, button: str) -> None:
        result = api.press(api.press(api.imagine(), "U1"), button)
        assert result["type"] == "button"
        assert result["buttons"] == GRID_BUTTONS
        assert len(result["imageUrls"]) == 4

    @pytest.mark.parametrize(("button", "size"), [("Upscale (2x)", 1536), ("Upscale (4x)", 2048)])
    def test_upscale_again_makes_a_bigger_single_image(self, api: Api, button: str, size: int) -> None:
        upscaled = api.press(api.imagine(), "U4")
        result = api.press(upscaled, button)
        assert result["imageUrls"] == [result["imageUrl"]]
        assert image_size(result["imageUrl"]) == (size, size)
        assert api.press(upscaled, button)["content"] == "ALREADY_REQUESTED_UPSCALE"

    def test_favorite_answers_with_the_same_picture(self, api: Api) -> None:
        upscaled = api.press(api.imagine(), "U1")
        result = api.press(upscaled, "❤️ Favorite")
        assert result["buttons"] == UPSCALE_BUTTONS
        assert httpx.get(result["imageUrl"], trust_env=False).content == (
            httpx.get(upscaled["imageUrl"], trust_env=False).content
        )

    def test_custom_zoom_with_zoom_ar_and_a_new_prompt(self, api: Api) -> None:
        upscaled = api.press(api.imagine(), "U1")
        result = api.press(upscaled, "Custom Zoom", zoom=1.5, ar="3:2", prompt="a wider view of the fox")
        assert result["content"] == "a wider view of the fox"
        assert result["buttons"] == GRID_BUTTONS

    @pytest.mark.parametrize(
        "fields", [{}, {"zoom": 2.5}, {"zoom": 0.9}, {"zoom": "much"}, {"zoom": 1.2, "ar": "wide"}]
    )
    def test_custom_zoom_checks_zoom_and_ar(self, api: Api, fields: dict) -> None:
        upscaled = api.press(api.imagine(), "U1")
        assert api.press(upscaled, "Custom Zoom", **fields)["content"] == "INVALID_PARAMETER"

    def test_custom_zoom_takes_a_numeric_string(self, api: Api) -> None:
        upscaled = api.press(api.imagine(), "U1")
        assert "imageUrl" in api.press(upscaled, "Custom Zoom", zoom="2")


class TestSeed:
    @pytest.mark.parametrize("which", ["grid", "upscale"])
    def test_envelope_button_returns_the_seed_on_any_image_result(self, api: Api, which: str) -> None:
        grid = api.imagine()
        parent = grid if which == "grid" else api.press(grid, "U3")
        result = api.press(parent, "✉️")
        assert result["seed"].isdigit()
        assert result["content"] == grid["content"]
        assert "imageUrl" not in result
        seed = api.http.post("/v2/seed", json={"messageId": parent["originatingMessageId"]})
        assert seed.json() == {"seed": result["seed"]}

    def test_seed_of_an_unknown_message_is_a_404(self, api: Api) -> None:
        assert api.http.post("/v2/seed", json={"messageId": "nope"}).status_code == 404

    def test_seed_of_an_unfinished_job_is_a_400(self, api: Api) -> None:
        message_id = api.submit("/v2/imagine", msg="a cat")
        assert api.http.post("/v2/seed", json={"messageId": message_id}).status_code == 400
