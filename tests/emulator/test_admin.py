"""The /_emulator/ admin API: its own token, ledger, counters, settings, reset, duplicate detection."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorAdmin, EmulatorServer, Fault, duplicate_submissions

from .support import Api

ADMIN_CALLS = [
    ("GET", "/ledger"),
    ("GET", "/counters"),
    ("GET", "/webhooks"),
    ("GET", "/faults"),
    ("PUT", "/faults"),
    ("POST", "/faults"),
    ("GET", "/settings"),
    ("PATCH", "/settings"),
    ("POST", "/reset"),
]


class TestAdminAuth:
    @pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
    def test_the_api_token_or_none_is_refused(self, emu: EmulatorServer, method: str, path: str) -> None:
        for headers in ({}, {"Authorization": f"Bearer {emu.settings.token}"}):
            response = httpx.request(
                method, f"{emu.base_url}/_emulator{path}", headers=headers, json={}, trust_env=False
            )
            assert response.status_code == 401
            assert response.json()["success"] is False

    def test_a_separate_admin_client_works_over_http(self, emu: EmulatorServer, api: Api) -> None:
        api.submit("/v2/imagine", msg="seen by another client")
        admin = EmulatorAdmin(emu.base_url, emu.settings.admin_token)
        try:
            assert admin.ledger()[0]["payload"] == {"msg": "seen by another client"}
        finally:
            admin.close()


class TestLedgerAndCounters:
    def test_the_ledger_records_submissions_with_their_outcome(self, api: Api, emu: EmulatorServer) -> None:
        accepted = api.submit("/v2/imagine", msg="a fox", ref="r-1", webhookOverride="http://127.0.0.1:9/")
        api.http.post("/v2/imagine", json={"msg": "blood"})
        api.http.get(f"/v2/message/{accepted}")
        first, refused = emu.ledger()
        assert first["endpoint"] == "/v2/imagine"
        assert first["method"] == "POST"
        assert first["payload"] == {"msg": "a fox", "ref": "r-1", "webhookOverride": "http://127.0.0.1:9/"}
        assert (first["ref"], first["status"], first["messageId"], first["error"]) == (
            "r-1",
            200,
            accepted,
            None,
        )
        assert first["time"].endswith("Z")
        assert (refused["status"], refused["messageId"], refused["error"]) == (
            400,
            None,
            "Invalid phrase: 'blood'",
        )

    def test_counters_count_requests_per_endpoint(self, api: Api, emu: EmulatorServer) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        for _ in range(3):
            api.http.get(f"/v2/message/{message_id}")
        counters = emu.counters()
        assert counters["requests"] == {"POST /v2/imagine": 1, "GET /v2/message": 3}
        assert counters["rate_limited"] == counters["faults"] == counters["unauthorized"] == {}

    def test_reset_clears_jobs_ledger_counters_and_faults(self, api: Api, emu: EmulatorServer) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        emu.add_fault(Fault("/v2/info", "drop"))
        emu.reset()
        assert api.http.get(f"/v2/message/{message_id}").status_code == 404
        assert emu.ledger() == []
        assert emu.counters()["requests"] == {"GET /v2/message": 1}
        assert emu.faults()["scripted"] == []


class TestSettings:
    def test_configure_changes_settings_and_never_shows_tokens(self, emu: EmulatorServer) -> None:
        settings = emu.configure(concurrency=12, default_webhook="http://example.com/hook")
        assert (settings["concurrency"], settings["default_webhook"]) == (12, "http://example.com/hook")
        assert "token" not in settings
        assert "admin_token" not in settings
        assert emu.settings.concurrency == 12  # the in-process server shares the live settings

    @pytest.mark.parametrize("changes", [{"no_such_setting": 1}, {"concurrency": "many"}, {"time_scale": 0}])
    def test_invalid_changes_are_a_400_and_change_nothing(self, emu: EmulatorServer, changes: dict) -> None:
        with pytest.raises(httpx.HTTPStatusError) as error:
            emu.configure(**changes)
        assert error.value.response.status_code == 400
        assert emu.configure()["concurrency"] == 3


class TestDuplicateSubmissions:
    def test_a_job_paid_for_twice_is_found(self, api: Api, emu: EmulatorServer) -> None:
        api.submit("/v2/imagine", msg="a fox", ref="try-1")
        api.submit("/v2/imagine", msg="a fox", ref="try-2")  # a retry with a new ref still pays twice
        api.submit("/v2/imagine", msg="an owl", ref="try-1")
        api.http.post("/v2/imagine", json={"msg": "blood"})
        api.http.post("/v2/imagine", json={"msg": "blood"})  # refused twice: never paid
        [group] = emu.duplicate_submissions()
        assert [entry["ref"] for entry in group] == ["try-1", "try-2"]
        [by_ref] = emu.duplicate_submissions(by="ref")
        assert [entry["payload"]["msg"] for entry in by_ref] == ["a fox", "an owl"]

    def test_unpaid_calls_and_distinct_jobs_are_not_duplicates(self, api: Api, emu: EmulatorServer) -> None:
        api.submit("/v2/info")
        api.submit("/v2/info")
        api.submit("/v2/imagine", msg="a fox")
        api.submit("/v2/imagine", msg="a fox --ar 2:3")
        assert emu.duplicate_submissions() == []

    def test_the_helper_works_on_a_saved_ledger(self) -> None:
        entry = {"endpoint": "/v2/button", "payload": {"button": "U1", "buttonMessageId": "b"}, "ref": ""}
        ledger = [{**entry, "messageId": "m1"}, {**entry, "messageId": "m2"}, {**entry, "messageId": None}]
        assert [len(group) for group in duplicate_submissions(ledger)] == [2]
