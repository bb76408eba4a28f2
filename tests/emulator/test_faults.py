"""Fault injection: scripted one-shot faults, seeded probabilities, and the faults admin API."""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, Fault, FaultSettings

from .support import Api, wait_until

#: How a client sees a connection the server dropped: closed without an answer, or reset (which one depends
#: on timing and the Python version).
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)


class TestScriptedFaults:
    def test_the_next_two_message_polls_answer_503_with_an_html_body(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        emu.add_fault(Fault("/v2/message", "status", status=503, count=2))
        for _ in range(2):
            response = api.http.get(f"/v2/message/{message_id}")
            assert response.status_code == 503
            assert response.headers["content-type"].startswith("text/html")
            assert "<title>503 Service Temporarily Unavailable</title>" in response.text
        assert api.http.get(f"/v2/message/{message_id}").status_code == 200
        assert emu.counters()["faults"] == {"GET /v2/message": 2}

    def test_a_502_looks_like_nginx(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/info", "status", status=502))
        response = api.http.get("/v2/info")
        assert response.status_code == 502
        assert "<center>nginx</center>" in response.text

    def test_a_status_fault_with_a_json_body(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/info", "status", status=500, body='{"error": "boom"}'))
        response = api.http.get("/v2/info")
        assert (response.status_code, response.json()) == (500, {"error": "boom"})
        assert response.headers["content-type"] == "application/json"

    def test_a_drop_before_processing_creates_no_job(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/imagine", "drop"))
        with pytest.raises(DROPPED):
            api.http.post("/v2/imagine", json={"msg": "lost on the way in"})
        assert emu.ledger() == []
        assert api.http.post("/v2/imagine", json={"msg": "next one"}).status_code == 200

    def test_a_drop_after_processing_creates_the_job_the_client_never_hears_of(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.add_fault(Fault("/v2/imagine", "drop", processed=True))
        with pytest.raises(DROPPED):
            api.http.post("/v2/imagine", json={"msg": "lost on the way out"})
        [entry] = emu.ledger()
        assert entry["status"] == 200
        assert api.wait(entry["messageId"])["response"]["content"] == "lost on the way out"

    def test_a_processed_status_fault_also_creates_the_job(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/imagine", "status", status=504, processed=True))
        assert api.http.post("/v2/imagine", json={"msg": "x"}).status_code == 504
        assert emu.ledger()[0]["messageId"]

    def test_a_slow_answer_outlives_the_client_timeout_but_is_processed(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.add_fault(Fault("/v2/imagine", "slow", seconds=0.5))
        with pytest.raises(httpx.ReadTimeout):
            api.http.post("/v2/imagine", json={"msg": "slow"}, timeout=0.1)
        entry = wait_until(emu.ledger)[0]  # processed once the sleep is over
        assert api.wait(entry["messageId"])["progress"] == 100

    def test_malformed_json_is_a_truncated_body(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/imagine", "malformed"))
        response = api.http.post("/v2/imagine", json={"msg": "x"})
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
        assert emu.ledger()[0]["messageId"]

    def test_method_and_path_prefix_select_the_requests(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/settings", "status", method="POST"))
        assert api.http.get("/v2/settings").status_code == 200
        assert api.http.post("/v2/settings", json={"settingsToggle": "Fast mode"}).status_code == 503

    def test_faults_apply_in_order_and_the_admin_view_shows_what_is_left(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.add_fault(Fault("/v2/info", "status", status=502))
        emu.add_fault(Fault("/v2/info", "status", status=503, count=2))
        assert [api.http.get("/v2/info").status_code for _ in range(2)] == [502, 503]
        assert [(fault["status"], fault["count"]) for fault in emu.faults()["scripted"]] == [(503, 1)]

    def test_cdn_downloads_can_be_scripted_too(self, api: Api, emu: EmulatorServer) -> None:
        result = api.imagine()
        emu.add_fault(Fault("/cdn/", "drop"))
        with pytest.raises(DROPPED):
            httpx.get(result["imageUrl"], trust_env=False)
        assert httpx.get(result["imageUrl"], trust_env=False).status_code == 200

    def test_admin_calls_are_never_faulted(self, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/", "status", count=5))
        assert emu.ledger() == []
        assert emu.faults()["scripted"][0]["count"] == 5

    def test_a_bad_fault_is_a_400(self, emu: EmulatorServer) -> None:
        response = httpx.post(
            f"{emu.base_url}/_emulator/faults",
            json={"path": "v2/message", "kind": "explode"},
            headers={"Authorization": f"Bearer {emu.settings.admin_token}"},
            trust_env=False,
        )
        assert response.status_code == 400


class TestRandomFaults:
    def test_error_rate_one_fails_every_api_call_with_a_5xx(self, api: Api, emu: EmulatorServer) -> None:
        emu.set_faults(FaultSettings(error_rate=1.0))
        statuses = {api.http.get("/v2/info").status_code for _ in range(20)}
        assert statuses <= {500, 502, 503}
        assert len(statuses) > 1
        assert emu.ledger() == []

    def test_probabilities_are_reproducible_with_the_seed(self, api: Api, emu: EmulatorServer) -> None:
        def draw() -> list[int]:
            emu.reset()
            emu.set_faults(FaultSettings(error_rate=0.5))
            return [api.http.get("/v2/info").status_code for _ in range(20)]

        first = draw()
        assert 200 in first
        assert set(first) - {200}
        assert draw() == first

    def test_drop_rate_one_drops_every_call(self, api: Api, emu: EmulatorServer) -> None:
        emu.set_faults(FaultSettings(drop_rate=1.0))
        with pytest.raises(DROPPED):
            api.http.get("/v2/info")

    def test_slow_rate_one_delays_every_call(self, api: Api, emu: EmulatorServer) -> None:
        emu.set_faults(FaultSettings(slow_rate=1.0, slow_seconds=0.3))
        with pytest.raises(httpx.ReadTimeout):
            api.http.get("/v2/info", timeout=0.1)

    def test_malformed_rate_one_truncates_every_answer(self, api: Api, emu: EmulatorServer) -> None:
        emu.set_faults(FaultSettings(malformed_rate=1.0))
        with pytest.raises(json.JSONDecodeError):
            api.http.get("/v2/info").json()

    def test_set_faults_replaces_the_scripted_queue(self, api: Api, emu: EmulatorServer) -> None:
        emu.add_fault(Fault("/v2/info", "drop", count=3))
        emu.set_faults(FaultSettings())
        assert api.http.get("/v2/info").status_code == 200
