"""The account-wide sliding-window rate limit and its 429 answer."""

from __future__ import annotations

import time

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import Api


class TestRateLimit:
    @pytest.fixture
    def limited(self, emu: EmulatorServer) -> EmulatorServer:
        """The documented limit, one request every 3 s, at a time scale that makes it 0.3 s."""
        emu.configure(rate_limit=True, rate_limit_requests=1, rate_limit_window=3.0, time_scale=0.1)
        return emu

    def test_a_second_request_within_the_window_is_refused_with_429(
        self, api: Api, limited: EmulatorServer
    ) -> None:
        assert api.http.post("/v2/imagine", json={"msg": "first"}).status_code == 200
        refused = api.http.get("/v2/info")
        assert refused.status_code == 429
        assert refused.json()["success"] is False
        assert "Too many requests" in refused.json()["msg"]
        retry_after = float(refused.headers["Retry-After"])
        assert 0 < retry_after <= 0.3
        assert "." in refused.headers["Retry-After"]  # a decimal when time runs scaled

    def test_retry_after_is_honoured_and_refusals_do_not_extend_the_wait(
        self, api: Api, limited: EmulatorServer
    ) -> None:
        api.http.get("/v2/info")
        first_refusal = api.http.get("/v2/info")
        for _ in range(5):  # hammering while refused does not push the free slot further away
            assert api.http.get("/v2/info").status_code == 429
        time.sleep(float(first_refusal.headers["Retry-After"]) + 0.01)
        assert api.http.get("/v2/info").status_code == 200

    def test_every_authenticated_api_call_counts(self, api: Api, limited: EmulatorServer) -> None:
        message_id = api.submit("/v2/imagine", msg="x")
        assert api.http.get(f"/v2/message/{message_id}").status_code == 429
        assert api.http.post("/v2/is-this-naughty", json={"msg": "x"}).status_code == 429

    def test_admin_calls_do_not_count(self, api: Api, limited: EmulatorServer) -> None:
        limited.counters()
        limited.ledger()
        assert api.http.get("/v2/info").status_code == 200

    def test_refusals_are_counted_and_in_the_ledger(self, api: Api, limited: EmulatorServer) -> None:
        api.http.post("/v2/imagine", json={"msg": "accepted"})
        api.http.post("/v2/imagine", json={"msg": "refused"})
        assert limited.counters()["rate_limited"] == {"POST /v2/imagine": 1}
        refused = limited.ledger()[1]
        assert (refused["status"], refused["messageId"], refused["payload"]) == (
            429,
            None,
            {"msg": "refused"},
        )

    def test_several_requests_per_window(self, api: Api, limited: EmulatorServer) -> None:
        limited.configure(rate_limit_requests=3)
        assert [api.http.get("/v2/info").status_code for _ in range(4)] == [200, 200, 200, 429]

    def test_unscaled_retry_after_is_whole_seconds_rounded_up(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(rate_limit=True, time_scale=1.0)
        api.http.get("/v2/info")
        assert api.http.get("/v2/info").headers["Retry-After"] == "3"

    def test_the_limit_can_be_switched_off_at_run_time(self, api: Api, limited: EmulatorServer) -> None:
        api.http.get("/v2/info")
        assert api.http.get("/v2/info").status_code == 429
        limited.configure(rate_limit=False)
        assert all(api.http.get("/v2/info").status_code == 200 for _ in range(5))

    def test_reset_clears_the_window(self, api: Api, limited: EmulatorServer) -> None:
        api.http.get("/v2/info")
        limited.reset()
        assert api.http.get("/v2/info").status_code == 200
