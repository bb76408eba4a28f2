"""The protocol's shapes: authentication, submissions, message states, GET forms, timestamps."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings

from .support import TIME_SCALE, Api, wait_until

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
PREVIEW_URL = rf"http://127\.0\.0\.1:\d+/cdn/attachments/\d{{19}}/\d{{19}}/{UUID}_grid_0\.webp"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GRID_BUTTONS = ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
API_CALLS = [
    ("POST", "/v2/imagine"),
    ("POST", "/v2/button"),
    ("GET", "/v2/message/abc"),
    ("POST", "/v2/seed"),
    ("POST", "/v2/describe"),
    ("POST", "/v2/blend"),
    ("GET", "/v2/info"),
    ("GET", "/v2/settings"),
    ("POST", "/v2/settings"),
    ("POST", "/v2/slash-commands"),
    ("POST", "/v2/is-this-naughty"),
    ("POST", "/getImage"),
]


class TestAuthentication:
    @pytest.mark.parametrize(("method", "path"), API_CALLS)
    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "emulator-token"}]
    )
    def test_every_endpoint_refuses_a_missing_or_wrong_token(
        self, emu: EmulatorServer, method: str, path: str, headers: dict[str, str]
    ) -> None:
        response = httpx.request(method, emu.base_url + path, headers=headers, json={}, trust_env=False)
        assert response.status_code == 401
        assert response.json()["success"] is False
        assert response.json()["msg"]

    def test_the_admin_token_does_not_open_the_api(self, emu: EmulatorServer) -> None:
        headers = {"Authorization": f"Bearer {emu.settings.admin_token}"}
        response = httpx.post(
            f"{emu.base_url}/v2/imagine", headers=headers, json={"msg": "x"}, trust_env=False
        )
        assert response.status_code == 401

    def test_the_documented_auth_token_query_form_is_accepted(self, emu: EmulatorServer) -> None:
        response = httpx.get(
            f"{emu.base_url}/v2/imagine",
            params={"authToken": emu.settings.token, "msg": "a lighthouse at dusk"},
            trust_env=False,
        )
        assert response.status_code == 200
        assert response.json()["success"] is True

    def test_unauthorized_requests_are_counted(self, emu: EmulatorServer) -> None:
        httpx.get(f"{emu.base_url}/v2/info", trust_env=False)
        assert emu.counters()["unauthorized"] == {"GET /v2/info": 1}


class TestImagineFlow:
    def test_submission_answers_success_message_id_and_created_at(self, api: Api) -> None:
        body = api.http.post("/v2/imagine", json={"msg": "a koi pond"}).json()
        assert set(body) == {"success", "messageId", "createdAt"}
        assert body["success"] is True
        assert re.fullmatch(r"[A-Za-z0-9]{20}", body["messageId"])
        assert ISO.match(body["createdAt"])

    def test_running_job_shows_progress_steps_with_progress_images(self, api: Api) -> None:
        message_id = api.submit("/v2/imagine", msg="a paper boat")
        seen: list[dict] = []

        def finished() -> bool:
            body = api.message(message_id)
            seen.append(body)
            return body["progress"] == 100

        wait_until(finished, interval=0.001)
        running = [body for body in seen if body["progress"] not in (0, 100)]
        steps = sorted({body["progress"] for body in running})
        assert steps, seen
        assert set(steps) <= {31, 46, 62, 78, 93}
        for body in running:
            assert set(body) == {"progress", "progressImageUrl"}
            assert re.fullmatch(PREVIEW_URL, body["progressImageUrl"]), body
        # A new attachment at each step, like the bot's edited message: the URL changes with the progress.
        assert len({body["progressImageUrl"] for body in running}) == len(steps)
        image = httpx.get(running[0]["progressImageUrl"], trust_env=False)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/webp"

    def test_finished_imagine_has_every_documented_field(self, api: Api, emu: EmulatorServer) -> None:
        message_id = api.submit("/v2/imagine", msg="a desert city --ar 16:9 --v 5.2", ref='{"run": 7}')
        body = api.wait(message_id)
        assert set(body) == {"progress", "response"}
        response = body["response"]
        assert response["accountId"] == emu.settings.account_id
        assert ISO.match(response["createdAt"])
        assert ISO.match(response["responseAt"])
        assert response["originatingMessageId"] == message_id
        assert response["buttonMessageId"] != message_id
        assert response["buttons"] == GRID_BUTTONS
        assert response["type"] == "imagine"
        assert response["content"] == "a desert city --ar 16:9 --v 5.2"
        assert response["description"] == ""
        assert response["ref"] == '{"run": 7}'
        # Shaped like the seed's: the grid a Discord attachment named after the prompt, the four images on
        # Midjourney's CDN under the job's UUID; all served by the emulator under /cdn.
        grid = re.fullmatch(
            rf"{re.escape(emu.base_url)}/cdn/attachments/\d{{19}}/\d{{19}}/"
            rf"emulator_a_desert_city_ar_16_9_v_5_2_({UUID})\.png",
            response["imageUrl"],
        )
        assert grid, response["imageUrl"]
        assert response["imageUrls"] == [f"{emu.base_url}/cdn/{grid[1]}/0_{index}.png" for index in range(4)]
        assert message_id not in response["imageUrl"] + "".join(response["imageUrls"])
        assert "seed" not in response

    def test_ref_is_echoed_as_any_json_value(self, api: Api) -> None:
        assert api.imagine(ref={"dag": "d", "try": 2})["ref"] == {"dag": "d", "try": 2}

    def test_documented_get_form_of_imagine_and_button(self, api: Api, emu: EmulatorServer) -> None:
        token = emu.settings.token
        grid_id = httpx.get(
            f"{emu.base_url}/v2/imagine",
            params={"authToken": token, "msg": "a glass teapot"},
            trust_env=False,
        ).json()["messageId"]
        grid = api.wait(grid_id)["response"]
        pressed = httpx.get(
            f"{emu.base_url}/v2/button",
            params={"authToken": token, "buttonMessageId": grid["buttonMessageId"], "button": "V3"},
            trust_env=False,
        )
        assert pressed.status_code == 200
        variation = api.wait(pressed.json()["messageId"])["response"]
        assert variation["type"] == "button"
        assert variation["buttons"] == GRID_BUTTONS

    def test_the_ledger_never_holds_the_token(self, emu: EmulatorServer) -> None:
        httpx.get(
            f"{emu.base_url}/v2/imagine",
            params={"authToken": emu.settings.token, "msg": "x"},
            trust_env=False,
        )
        assert emu.ledger()[0]["payload"] == {"msg": "x"}

    def test_missing_prompt_is_a_400(self, api: Api) -> None:
        response = api.http.post("/v2/imagine", json={"ref": "no prompt"})
        assert response.status_code == 400
        assert response.json() == {"success": False, "msg": "msg is required"}

    def test_malformed_json_body_is_a_400(self, api: Api) -> None:
        response = api.http.post(
            "/v2/imagine", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["success"] is False


class TestMessageStates:
    def test_unknown_message_is_a_404_json(self, api: Api) -> None:
        response = api.http.get("/v2/message/doesNotExist12345678")
        assert response.status_code == 404
        assert response.json()["success"] is False

    @pytest.mark.parametrize("expire", ["soon", "nan", "-1", "0", "1.5", "inf", "1e3", "12345678"])
    def test_expire_mins_that_is_no_positive_whole_number_is_a_400(self, api: Api, expire: str) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        response = api.http.get(f"/v2/message/{message_id}", params={"expireMins": expire})
        assert response.status_code == 400
        assert response.json() == {
            "success": False,
            "msg": f"expireMins must be a positive whole number of minutes, got {expire!r}",
        }

    @pytest.mark.parametrize("expire", ["1", "12", "+3", " 7 ", "0012"])
    def test_expire_mins_in_whole_minutes_is_accepted(self, api: Api, expire: str) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        assert api.http.get(f"/v2/message/{message_id}", params={"expireMins": expire}).status_code == 200

    def test_stalled_job_is_incomplete_after_expire_mins(self, api: Api, emu: EmulatorServer) -> None:
        emu.set_faults(FaultSettings(forced_codes={"sunflower": "STALL"}))
        message_id = api.submit("/v2/imagine", msg="a sunflower field")
        assert api.wait(message_id, expireMins=1) == {"progress": "incomplete"}

    def test_stalled_job_is_incomplete_after_the_default_twelve_minutes(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.set_faults(FaultSettings(forced_codes={"sunflower": "STALL"}))
        message_id = api.submit("/v2/imagine", msg="a sunflower field")
        assert api.message(message_id)["progress"] != "incomplete"
        assert api.wait(message_id) == {"progress": "incomplete"}  # 12 simulated minutes: 0.72 s here

    def test_expiry_is_judged_against_the_finish_time(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(min_duration=90, max_duration=90)
        submitted = time.monotonic()
        message_id = api.submit("/v2/imagine", msg="a lighthouse")
        api.wait(message_id)
        # Let the 2-minute expiry pass (0.12 s here); the job finished after 90 simulated seconds, so
        # within 2 minutes but not within 1.
        time.sleep(max(0.0, submitted + 120 * TIME_SCALE + 0.05 - time.monotonic()))
        assert api.message(message_id, expireMins=2)["progress"] == 100
        assert api.message(message_id, expireMins=1) == {"progress": "incomplete"}

    def test_errors_appear_after_a_short_bot_delay(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(min_bot_delay=3, max_bot_delay=3, time_scale=0.05)  # 0.15 s
        message_id = api.submit("/v2/imagine", msg="a cat --foo")
        assert api.message(message_id) == {"progress": 0, "progressImageUrl": None}
        assert api.wait(message_id)["response"]["content"] == "INVALID_PARAMETER"

    def test_failed_job_reaches_progress_100_with_the_code_and_no_image(self, api: Api) -> None:
        response = api.imagine("a cat --foo bar")
        assert response["content"] == "INVALID_PARAMETER"
        assert response["type"] == "imagine"
        assert response["buttons"] == []
        assert "imageUrl" not in response
        assert "imageUrls" not in response
        assert "buttonMessageId" not in response
