"""The token's pools of accounts: the load balancer (``/loadBalancer/...``, ``loadBalanceId``) and
pay-per-use (``/ppu/...``, ``ppuId``), over HTTP as the SDK's ``TNLBalanced`` and real clients call them."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import Api, WebhookReceiver, wait_until

GRID_BUTTONS = ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]


def submit(api: Api, path: str, **fields: Any) -> dict[str, Any]:
    response = api.http.post(path, json=fields)
    assert response.status_code == 200, response.text
    return response.json()


def finished(api: Api, pool: str, key: str, answer: dict[str, Any]) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = api.http.get(f"/{pool}/message/{answer['messageId']}", params={key: answer[key]})
        assert response.status_code == 200, response.text
        body = response.json()
        return body if body["progress"] == 100 else None

    return wait_until(done)["response"]


class TestLoadBalancer:
    def test_imagine_answers_with_load_balance_id_and_account_id(self, api: Api, emu: EmulatorServer) -> None:
        answer = submit(api, "/loadBalancer/imagine", msg="a lighthouse")
        assert set(answer) == {"success", "messageId", "createdAt", "loadBalanceId", "accountId"}
        assert answer["accountId"] == emu.settings.account_id  # the first account takes the first job
        result = finished(api, "loadBalancer", "loadBalanceId", answer)
        assert result["loadBalanceId"] == answer["loadBalanceId"]
        assert result["accountId"] == answer["accountId"]
        assert result["buttons"] == GRID_BUTTONS

    def test_new_jobs_go_round_robin_over_the_accounts(self, api: Api, emu: EmulatorServer) -> None:
        accounts = [submit(api, "/loadBalancer/imagine", msg=f"job {n}")["accountId"] for n in range(7)]
        names = [account["accountId"] for account in emu.accounts()["loadBalancer"]]
        assert names == ["emulator-account", "emulator-account-2", "emulator-account-3"]
        assert accounts == [names[n % 3] for n in range(7)]
        assert submit(api, "/loadBalancer/describe", url="https://example.com/a.png")["accountId"] == names[1]

    def test_each_account_has_its_own_queue(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(concurrency=1, queue_length=0, load_balancer_accounts=2, time_scale=0.01)
        first, second, third = (submit(api, "/loadBalancer/imagine", msg=f"job {n}") for n in range(3))
        assert first["accountId"] != second["accountId"]
        # Two accounts with one slot each run two jobs at once; the third finds its account's slot taken
        # and no room in its queue.
        for answer in (first, second):
            assert finished(api, "loadBalancer", "loadBalanceId", answer)["buttons"] == GRID_BUTTONS
        assert finished(api, "loadBalancer", "loadBalanceId", third)["content"] == "QUEUE_FULL"

    def test_a_press_sends_the_load_balance_id_and_stays_on_its_account(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        submit(api, "/loadBalancer/imagine", msg="taken by the first account")
        answer = submit(api, "/loadBalancer/imagine", msg="a fox")
        grid = finished(api, "loadBalancer", "loadBalanceId", answer)
        pressed = submit(
            api,
            "/loadBalancer/button",
            button="U1",
            buttonMessageId=grid["buttonMessageId"],
            loadBalanceId=grid["loadBalanceId"],
        )
        assert pressed["accountId"] == answer["accountId"] == "emulator-account-2"
        assert pressed["loadBalanceId"] != answer["loadBalanceId"]  # one per submission
        upscale = finished(api, "loadBalancer", "loadBalanceId", pressed)
        assert upscale["imageUrls"] == [upscale["imageUrl"]]
        assert upscale["loadBalanceId"] == pressed["loadBalanceId"]

    @pytest.mark.parametrize("load_balance_id", [None, "", "noSuchLoadBalanceId0"])
    def test_a_press_without_a_known_load_balance_id_is_refused(
        self, api: Api, emu: EmulatorServer, load_balance_id: str | None
    ) -> None:
        grid = finished(api, "loadBalancer", "loadBalanceId", submit(api, "/loadBalancer/imagine", msg="x"))
        fields = {"button": "U1", "buttonMessageId": grid["buttonMessageId"]}
        if load_balance_id is not None:
            fields["loadBalanceId"] = load_balance_id
        response = api.http.post("/loadBalancer/button", json=fields)
        assert response.status_code == 400
        assert response.json()["success"] is False
        assert response.json()["msg"].startswith("Invalid loadBalanceId")
        assert emu.ledger()[-1]["status"] == 400

    def test_a_poll_without_a_known_load_balance_id_is_refused(self, api: Api) -> None:
        answer = submit(api, "/loadBalancer/imagine", msg="x")
        for params in ({}, {"loadBalanceId": "noSuchLoadBalanceId0"}):
            response = api.http.get(f"/loadBalancer/message/{answer['messageId']}", params=params)
            assert response.status_code == 400
            assert response.json()["msg"].startswith("Invalid loadBalanceId")

    def test_a_load_balanced_job_is_found_on_its_account_only(self, api: Api) -> None:
        first = submit(api, "/loadBalancer/imagine", msg="on the first account")
        second = submit(api, "/loadBalancer/imagine", msg="on the second")
        crossed = api.http.get(
            f"/loadBalancer/message/{first['messageId']}", params={"loadBalanceId": second["loadBalanceId"]}
        )
        assert crossed.status_code == 404
        assert api.http.get(f"/v2/message/{second['messageId']}").status_code == 404
        # The first account is the one /v2 uses.
        assert api.http.get(f"/v2/message/{first['messageId']}").status_code == 200

    def test_expire_mins_rides_along(self, api: Api) -> None:
        answer = submit(api, "/loadBalancer/imagine", msg="x")
        response = api.http.get(
            f"/loadBalancer/message/{answer['messageId']}",
            params={"loadBalanceId": answer["loadBalanceId"], "expireMins": "0"},
        )
        assert response.status_code == 400

    def test_webhooks_carry_the_load_balance_id(self, api: Api, receiver: WebhookReceiver) -> None:
        submit(api, "/loadBalancer/imagine", msg="first")
        answer = submit(api, "/loadBalancer/imagine", msg="second", webhookOverride=receiver.url, ref="r")
        (delivery,) = wait_until(lambda: receiver.received)
        assert delivery["json"]["loadBalanceId"] == answer["loadBalanceId"]
        assert delivery["json"]["accountId"] == "emulator-account-2"

    def test_the_pool_can_shrink_and_grow_at_run_time(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(load_balancer_accounts=1)
        assert {submit(api, "/loadBalancer/imagine", msg=str(n))["accountId"] for n in range(3)} == {
            "emulator-account"
        }
        emu.configure(load_balancer_accounts=4)
        assert len(emu.accounts()["loadBalancer"]) == 4

    def test_the_rate_limit_is_the_tokens_whatever_the_pool(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(rate_limit=True, rate_limit_window=1000.0, time_scale=1.0)
        assert api.http.post("/loadBalancer/imagine", json={"msg": "a"}).status_code == 200
        for path in ("/loadBalancer/imagine", "/v2/imagine", "/ppu/imagine"):
            assert api.http.post(path, json={"msg": "b"}).status_code == 429


class TestPayPerUse:
    def test_imagine_answers_with_a_ppu_id_and_the_result_carries_it(self, api: Api) -> None:
        answer = submit(api, "/ppu/imagine", msg="an avatar", ignorePrefilter="false")
        assert set(answer) == {"success", "messageId", "createdAt", "ppuId"}
        result = finished(api, "ppu", "ppuId", answer)
        assert result["ppuId"] == answer["ppuId"]
        assert result["accountId"] == "nextleg-ppu"
        pressed = submit(
            api, "/ppu/button", button="V1", buttonMessageId=result["buttonMessageId"], ppuId=result["ppuId"]
        )
        assert finished(api, "ppu", "ppuId", pressed)["buttons"] == GRID_BUTTONS

    def test_each_image_job_costs_a_credit_and_none_left_is_a_402(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.configure(ppu_credits=2)
        assert submit(api, "/ppu/imagine", msg="a cat --foo")  # fails: costs nothing
        paid = [submit(api, "/ppu/imagine", msg=f"paid {n}") for n in range(2)]
        assert emu.accounts()["ppu"]["credits"] == 0
        refused = api.http.post("/ppu/imagine", json={"msg": "one more"})
        assert refused.status_code == 402
        assert refused.json()["success"] is False
        assert "credits" in refused.json()["msg"]
        result = finished(api, "ppu", "ppuId", paid[0])
        button = api.http.post(
            "/ppu/button", json={"button": "U1", "buttonMessageId": result["buttonMessageId"], "ppuId": "x"}
        )
        assert button.status_code == 402  # no credit: refused before the id is even looked at
        emu.reset()
        assert emu.accounts()["ppu"]["credits"] == 2

    def test_a_press_or_poll_without_a_known_ppu_id_is_refused(self, api: Api) -> None:
        answer = submit(api, "/ppu/imagine", msg="x")
        result = finished(api, "ppu", "ppuId", answer)
        response = api.http.post(
            "/ppu/button", json={"button": "U1", "buttonMessageId": result["buttonMessageId"]}
        )
        assert response.status_code == 400
        assert response.json()["msg"].startswith("Invalid ppuId")
        poll = api.http.get(f"/ppu/message/{answer['messageId']}", params={"ppuId": "nope"})
        assert poll.status_code == 400
        assert api.http.get(f"/v2/message/{answer['messageId']}").status_code == 404

    def test_the_ledger_and_duplicates_see_the_pools(self, api: Api, emu: EmulatorServer) -> None:
        for _ in range(2):
            submit(api, "/ppu/imagine", msg="twice", ref="same")
            submit(api, "/loadBalancer/imagine", msg="twice too")
        assert [entry["endpoint"] for entry in emu.ledger()] == ["/ppu/imagine", "/loadBalancer/imagine"] * 2
        assert len(emu.duplicate_submissions()) == 2
        jobs = emu.jobs()
        assert [job["accountId"] for job in jobs] == [
            "nextleg-ppu",
            "emulator-account",
            "nextleg-ppu",
            "emulator-account-2",
        ]
