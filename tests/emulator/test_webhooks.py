"""Webhooks: the inner result object POSTed when the job finishes, once, and recorded."""

from __future__ import annotations

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings

from .support import Api, WebhookReceiver, wait_until


class TestWebhooks:
    def test_the_override_receives_the_inner_result_with_ref(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        message_id = api.submit(
            "/v2/imagine", msg="a fox", ref="run-1", webhookOverride=f"{receiver.url}/hook"
        )
        polled = api.wait(message_id)["response"]
        [record] = wait_until(emu.webhooks)  # recorded once the receiver has answered
        [delivered] = receiver.received
        assert delivered["path"] == "/hook"
        assert delivered["json"] == polled
        assert delivered["json"]["ref"] == "run-1"
        assert delivered["json"]["originatingMessageId"] == message_id
        assert record == {
            "url": f"{receiver.url}/hook",
            "messageId": message_id,
            "ref": "run-1",
            "status": 200,
            "error": None,
            "time": record["time"],
        }

    def test_the_default_webhook_is_used_without_an_override(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        emu.configure(default_webhook=receiver.url)
        message_id = api.submit("/v2/imagine", msg="a fox", webhookOverride="")
        wait_until(lambda: receiver.received)
        assert receiver.received[0]["json"]["originatingMessageId"] == message_id

    def test_failed_jobs_are_delivered_too(self, api: Api, receiver: WebhookReceiver) -> None:
        api.submit("/v2/imagine", msg="a cat --foo", webhookOverride=receiver.url)
        wait_until(lambda: receiver.received)
        assert receiver.received[0]["json"]["content"] == "INVALID_PARAMETER"

    def test_each_webhook_is_sent_once_even_when_the_receiver_fails(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        receiver.status = 500
        first = api.submit("/v2/imagine", msg="first", webhookOverride=receiver.url)
        api.wait(first)
        second = api.submit("/v2/imagine", msg="second", webhookOverride=receiver.url)
        api.wait(second)
        deliveries = wait_until(lambda: len(emu.webhooks()) == 2 and emu.webhooks())
        assert [delivery["messageId"] for delivery in deliveries] == [first, second]
        assert {delivery["status"] for delivery in deliveries} == {500}
        assert len(receiver.received) == 2

    def test_an_unreachable_webhook_is_recorded_as_an_error(self, api: Api, emu: EmulatorServer) -> None:
        api.submit("/v2/imagine", msg="nobody listens", webhookOverride="http://127.0.0.1:9/hook")
        delivery = wait_until(lambda: emu.webhooks())[0]
        assert delivery["status"] is None
        assert delivery["error"]

    def test_jobs_without_a_webhook_send_nothing(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        emu.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        api.wait(api.submit("/v2/imagine", msg="no webhook"))
        stalled = api.submit("/v2/imagine", msg="stuck forever", webhookOverride=receiver.url)
        assert api.wait(stalled, expireMins=1) == {"progress": "incomplete"}
        assert emu.webhooks() == []
        assert receiver.received == []

    def test_many_jobs_finishing_together_are_all_delivered(
        self, api: Api, receiver: WebhookReceiver
    ) -> None:
        ids = {
            api.submit("/v2/describe", url=f"https://example.com/{n}.png", webhookOverride=receiver.url)
            for n in range(20)
        }
        wait_until(lambda: len(receiver.received) == 20)
        assert {body["json"]["originatingMessageId"] for body in receiver.received} == ids
