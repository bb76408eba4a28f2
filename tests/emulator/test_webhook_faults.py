"""Faults of webhooks, over HTTP: lost, sent twice, held back (and so out of order), each drawn from a
seeded by the job (its id); a receiver's 5xx is not retried; the log shows no URL's query."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, FaultSettings, cli
from airflow_provider_nextleg.emulator.settings import SettingError

from .support import Api, WebhookReceiver, wait_until


def describe_jobs(api: Api, receiver: WebhookReceiver, count: int) -> list[str]:
    """``count`` quick jobs (text results, no image), each with the receiver as its webhook."""
    return [
        api.submit(
            "/v2/describe", url=f"https://example.com/{n}.png", webhookOverride=f"{receiver.url}/h?token=t{n}"
        )
        for n in range(count)
    ]


class TestWebhookFaults:
    def test_lost_webhooks_are_never_sent_and_recorded_as_lost(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        emu.set_faults(FaultSettings(webhook_loss_rate=1.0))
        [message_id] = describe_jobs(api, receiver, 1)
        [record] = wait_until(emu.webhooks)
        assert record["messageId"] == message_id
        assert (record["fault"], record["status"]) == ("lost", None)
        assert "lost" in record["error"]
        time.sleep(0.2)
        assert receiver.received == []

    def test_a_share_is_lost_the_same_jobs_in_every_run_of_a_seed(self, receiver: WebhookReceiver) -> None:
        def lost_ones() -> list[int]:
            """The indexes of the jobs whose webhook a fresh emulator loses."""
            settings = EmulatorSettings(time_scale=0.001, rate_limit=False, seed=7)
            settings.faults = FaultSettings(webhook_loss_rate=0.3)
            with EmulatorServer(settings) as emu:
                api = Api(emu.base_url, emu.settings.token)
                ids = describe_jobs(api, receiver, 40)
                api.http.close()
                records = wait_until(lambda: len(emu.webhooks()) == 40 and emu.webhooks())
            lost = {record["messageId"] for record in records if record.get("fault") == "lost"}
            return [n for n, message_id in enumerate(ids) if message_id in lost]

        first = lost_ones()
        assert 4 <= len(first) <= 20
        assert lost_ones() == first  # whatever order the webhooks fell due in

    def test_duplicated_webhooks_are_sent_twice_with_the_same_body(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        emu.set_faults(FaultSettings(webhook_duplicate_rate=1.0))
        [message_id] = describe_jobs(api, receiver, 1)
        records = wait_until(lambda: len(emu.webhooks()) == 2 and emu.webhooks())
        assert [record.get("fault") for record in records] == [None, "duplicate"]
        assert {record["status"] for record in records} == {200}
        wait_until(lambda: len(receiver.received) == 2)
        first, second = receiver.received
        assert first == second
        assert first["json"]["originatingMessageId"] == message_id

    def test_held_back_webhooks_come_late_and_out_of_order(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        emu.set_faults(FaultSettings(webhook_delay_rate=1.0, webhook_delay_seconds=0.6))
        started = time.monotonic()
        ids = describe_jobs(api, receiver, 12)
        records = wait_until(lambda: len(emu.webhooks()) == 12 and emu.webhooks(), timeout=15)
        assert all(record["fault"] == "delayed" and 0 < record["delay"] <= 0.6 for record in records)
        assert max(record["delay"] for record in records) > 0.3
        wait_until(lambda: len(receiver.received) == 12)
        finished = [body["json"]["originatingMessageId"] for body in sorted(
            receiver.received, key=lambda body: body["json"]["responseAt"])]  # fmt: skip
        arrived = [body["json"]["originatingMessageId"] for body in receiver.received]
        assert sorted(arrived) == sorted(ids)
        assert arrived != finished  # out of order
        assert time.monotonic() - started > 0.3

    def test_a_receivers_5xx_is_not_retried(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver
    ) -> None:
        receiver.status = 503
        emu.set_faults(FaultSettings(webhook_delay_rate=1.0, webhook_delay_seconds=0.05))
        describe_jobs(api, receiver, 3)
        records = wait_until(lambda: len(emu.webhooks()) == 3 and emu.webhooks())
        assert {record["status"] for record in records} == {503}
        time.sleep(0.3)
        assert len(receiver.received) == 3
        assert len(emu.webhooks()) == 3

    def test_the_log_shows_no_query_of_a_webhook_url(
        self, api: Api, emu: EmulatorServer, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="airflow_provider_nextleg.emulator")
        emu.set_faults(FaultSettings(webhook_duplicate_rate=1.0))
        describe_jobs(api, receiver, 2)
        api.submit(
            "/v2/describe", url="https://example.com/x.png", webhookOverride="http://127.0.0.1:9/h?token=tz"
        )
        wait_until(lambda: len(emu.webhooks()) == 6)
        logged = caplog.text
        assert f"{receiver.url}/h" in logged
        assert "token=" not in logged


class TestWebhookFaultSettings:
    def test_flags_become_settings(self) -> None:
        args = cli.parse_args(
            ["--webhook-loss-rate", "0.2", "--webhook-duplicate-rate", "0.1", "--webhook-delay-rate", "0.5",
             "--webhook-delay-seconds", "2"]
        )  # fmt: skip
        faults = cli.settings_from_args(args).faults
        assert (faults.webhook_loss_rate, faults.webhook_duplicate_rate) == (0.2, 0.1)
        assert (faults.webhook_delay_rate, faults.webhook_delay_seconds) == (0.5, 2.0)

    @pytest.mark.parametrize(
        ("flags", "names"),
        [
            (["--webhook-loss-rate", "1.5"], "--webhook-loss-rate"),
            (["--webhook-duplicate-rate", "nan"], "--webhook-duplicate-rate"),
            (["--webhook-delay-rate", "-0.1"], "--webhook-delay-rate"),
            (["--webhook-delay-seconds", "4000"], "--webhook-delay-seconds"),
        ],
    )
    def test_bad_values_end_with_one_line_naming_the_flag(
        self, flags: list[str], names: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(flags) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert names in line

    def test_bad_values_are_refused_by_the_settings_and_the_admin_api(self, emu: EmulatorServer) -> None:
        with pytest.raises(SettingError, match="webhook_delay_seconds"):
            FaultSettings(webhook_delay_seconds=-1)
        with pytest.raises(httpx.HTTPStatusError) as raised:
            emu._call("PUT", "/faults", {"webhook_loss_rate": 2})
        assert raised.value.response.status_code == 400
