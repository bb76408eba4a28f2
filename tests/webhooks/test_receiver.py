"""The receiver, served by uvicorn on a port of its own: what it accepts and stores, what it refuses (and
then stores nothing), what it logs (never a token or the secret), results from the emulator's webhooks,
and the ``nextleg-webhook-receiver`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from servers import RedisServer, free_port

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, FaultSettings
from airflow_provider_nextleg.redis_connection import RedisSettings
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.config import WebhookConfig, server_webhook_config
from airflow_provider_nextleg.webhooks.inbox import LocalInbox, RedisInbox, delivery_id
from airflow_provider_nextleg.webhooks.receiver import MAX_BODY_BYTES, ConnectionCache, create_receiver_app

from .support import (
    CONN_ID,
    SECRET,
    ThreadedServer,
    nextleg_connection,
    ref_for,
    result_body,
    wait,
    webhook_url,
)

RECEIVER_BIN = str(Path(sys.executable).parent / "nextleg-webhook-receiver")


@pytest.fixture
def receiver(connection: str, local_inbox: LocalInbox) -> Iterator[ThreadedServer]:
    """The receiver, its inbox the test's directory."""
    with ThreadedServer(create_receiver_app(inbox_for=lambda config: local_inbox)) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def stored(inbox: LocalInbox) -> list[Path]:
    return sorted(inbox.directory.glob("*.json")) if inbox.directory.exists() else []


def get(inbox: Any, message_id: str, key: str) -> dict[str, Any] | None:
    return asyncio.run(inbox.get(message_id, key))


class TestAccepting:
    def test_a_valid_webhook_is_stored_for_its_job(
        self, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        key = tokens.new_job_key()
        body = result_body("msg-1", key)
        response = http.post(webhook_url(receiver.url, key), json=body)
        assert response.status_code == 200
        assert response.json() == {"stored": True}
        assert get(local_inbox, "msg-1", key) == body

    def test_a_duplicate_changes_nothing(
        self, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        key = tokens.new_job_key()
        url = webhook_url(receiver.url, key)
        first = result_body("msg-dup", key)
        assert http.post(url, json=first).json() == {"stored": True}
        second = http.post(url, json=result_body("msg-dup", key, content="another"))
        assert (second.status_code, second.json()) == (200, {"stored": False})
        assert get(local_inbox, "msg-dup", key) == first
        assert len(stored(local_inbox)) == 1

    def test_a_failed_job_is_a_result_too(
        self, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        key = tokens.new_job_key()
        body = result_body("msg-banned", key, content="BANNED_PROMPT", buttons=[])
        for name in ("imageUrl", "imageUrls", "buttonMessageId"):
            del body[name]
        assert http.post(webhook_url(receiver.url, key), json=body).status_code == 200
        assert get(local_inbox, "msg-banned", key) == body

    def test_health(self, receiver: ThreadedServer, http: httpx.Client) -> None:
        assert http.get(f"{receiver.url}/health").json() == {"status": "ok"}


def forged(base: str) -> dict[str, tuple[str, Any]]:
    """Requests the receiver must refuse, by name: (URL, body or raw bytes)."""
    key, other = tokens.new_job_key(), tokens.new_job_key()
    good = webhook_url(base, key)
    path = urlsplit(good).path
    return {
        "wrong token": (f"{base}{path}?token={'A' * 43}", result_body("m1", key)),
        "no token": (f"{base}{path}", result_body("m2", key)),
        "another job's token": (
            f"{base}{path}?token={tokens.job_token(SECRET, CONN_ID, other)}",
            result_body("m3", key),
        ),
        "a token signed with another secret": (
            webhook_url(base, key, secret="x" * 32),
            result_body("m4", key),
        ),
        "a ref naming another job": (good, result_body("m5", other)),
        "a ref without a job": (good, result_body("m6", None, ref=json.dumps({"dag_id": "d"}))),
        "a plain ref": (good, result_body("m7", None, ref="run-1")),
        "an unknown connection": (webhook_url(base, key, conn_id="nextleg_nobody"), result_body("m8", key)),
        "a malformed job key": (f"{base}/webhook/{CONN_ID}/short?token=x", result_body("m9", key)),
    }


class TestRefusing:
    @pytest.mark.parametrize("case", list(forged("http://x")))
    def test_forged_webhooks_are_403_and_store_nothing(
        self, case: str, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        url, body = forged(receiver.url)[case]
        response = http.post(url, json=body)
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}
        assert stored(local_inbox) == []

    def test_a_connection_without_a_secret_receives_nothing(
        self, monkeypatch: pytest.MonkeyPatch, receiver: ThreadedServer, http: httpx.Client
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_OPEN", nextleg_connection(secret=None))
        key = tokens.new_job_key()
        token = tokens.job_token("", "nextleg_open", key)
        response = http.post(
            f"{receiver.url}/webhook/nextleg_open/{key}?token={token}", json=result_body("m", key)
        )
        assert response.status_code == 403

    def test_an_oversize_body_is_413_and_stores_nothing(
        self, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        key = tokens.new_job_key()
        url = webhook_url(receiver.url, key)
        big = result_body("m-big", key, description="x" * MAX_BODY_BYTES)
        assert http.post(url, json=big).status_code == 413  # said by Content-Length

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused once the limit is passed
            data = json.dumps(big).encode()
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]

        assert http.post(url, content=chunks()).status_code == 413
        assert stored(local_inbox) == []

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[1, 2]",
            json.dumps({"content": "a fox", "type": "imagine"}).encode(),  # no message id
            json.dumps({"originatingMessageId": "m", "type": "imagine", "content": "a fox"}).encode(),
            json.dumps({"originatingMessageId": "m", "progress": 40}).encode(),  # not finished
            json.dumps({"originatingMessageId": "m", "content": "JOB_QUEUED"}).encode(),
            json.dumps({"originatingMessageId": "m", "buttons": "U1"}).encode(),
        ],
    )
    def test_what_is_no_nextleg_result_is_400_and_stores_nothing(
        self, body: bytes, receiver: ThreadedServer, http: httpx.Client, local_inbox: LocalInbox
    ) -> None:
        key = tokens.new_job_key()
        response = http.post(webhook_url(receiver.url, key), content=body)
        assert response.status_code == 400
        assert stored(local_inbox) == []


class TestLookups:
    def test_a_burst_costs_one_lookup_per_connection(
        self, connection: str, local_inbox: LocalInbox, http: httpx.Client
    ) -> None:
        looked_up: list[str] = []

        def read(conn_id: str) -> WebhookConfig:
            looked_up.append(conn_id)
            time.sleep(0.1)  # a slow database: the burst arrives while the lookup runs
            return server_webhook_config(conn_id)

        app = create_receiver_app(configs=ConnectionCache(read), inbox_for=lambda config: local_inbox)
        with ThreadedServer(app) as receiver, ThreadPoolExecutor(16) as pool:
            keys = [tokens.new_job_key() for _ in range(30)]
            answers = list(pool.map(
                lambda key: http.post(webhook_url(receiver.url, key), json=result_body(f"m-{key}", key)), keys
            ))  # fmt: skip
            nobody = [webhook_url(receiver.url, key, conn_id="nextleg_nobody") for key in keys[:10]]
            refused = list(pool.map(lambda url: http.post(url, json=result_body("m", None)), nobody))
        assert {answer.status_code for answer in answers} == {200}
        assert {answer.status_code for answer in refused} == {403}
        assert looked_up == [CONN_ID, "nextleg_nobody"]
        assert len(stored(local_inbox)) == 30


class TestSecrecy:
    def test_no_token_secret_or_url_in_any_log_line(
        self,
        caplog: pytest.LogCaptureFixture,
        receiver: ThreadedServer,
        http: httpx.Client,
        local_inbox: LocalInbox,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        key = tokens.new_job_key()
        url = webhook_url(receiver.url, key)
        cases = [(url, result_body("m-ok", key)), (url, result_body("m-ok", key))]
        cases += list(forged(receiver.url).values())
        cases.append((url, {"originatingMessageId": "m", "progress": 5}))
        secrets_seen = {SECRET}
        for target, body in cases:
            http.post(target, json=body)
            secrets_seen.update(
                token for token in parse_qs(urlsplit(target).query).get("token", []) if len(token) > 8
            )
        http.post(url, content=b"x" * (MAX_BODY_BYTES + 1))
        logged = server_side(caplog)
        assert "stored" in logged
        assert "refused" in logged
        for secret in secrets_seen:
            assert secret not in logged
        assert "?token=" not in logged


class TestRedisInbox:
    @pytest.fixture
    def redis_receiver(
        self, monkeypatch: pytest.MonkeyPatch, connection: str, tmp_path: Path
    ) -> Iterator[tuple[ThreadedServer, RedisServer]]:
        """The receiver with its default inbox: Redis, which the connection's redis_conn_id names."""
        with RedisServer(tmp_path / "redis", password="pw-recv-81f2") as redis:
            monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_INBOX_REDIS", redis.uri(db=4))
            monkeypatch.setenv(
                f"AIRFLOW_CONN_{CONN_ID.upper()}", nextleg_connection(redis_conn_id="nextleg_inbox_redis")
            )
            with ThreadedServer(create_receiver_app()) as server:
                yield server, redis

    def test_results_go_to_redis_and_an_unavailable_redis_is_503(
        self, redis_receiver: tuple[ThreadedServer, RedisServer], http: httpx.Client
    ) -> None:
        server, redis = redis_receiver
        inbox = RedisInbox(
            RedisSettings("nextleg_inbox_redis", "127.0.0.1", redis.port, password=redis.password, db=4)
        )
        key = tokens.new_job_key()

        async def wait_while_posting() -> dict[str, Any] | None:
            async with inbox.watch("m-redis", key) as waiter:
                posted = asyncio.to_thread(
                    http.post, webhook_url(server.url, key), json=result_body("m-redis", key)
                )
                assert (await posted).status_code == 200
                result = await waiter.result(5)
            await inbox.aclose()
            return result

        assert asyncio.run(wait_while_posting()) == result_body("m-redis", key)
        redis.stop()
        other = tokens.new_job_key()
        response = http.post(webhook_url(server.url, other), json=result_body("m-down", other))
        assert (response.status_code, response.json()) == (503, {"error": "inbox unavailable"})


class TestFromTheEmulator:
    @pytest.fixture
    def emu(self) -> Iterator[EmulatorServer]:
        with EmulatorServer(EmulatorSettings(time_scale=0.001, rate_limit=False, cdn_403_rate=0.0)) as emu:
            yield emu

    def submit(self, emu: EmulatorServer, http: httpx.Client, base: str, prompt: str) -> tuple[str, str]:
        key = tokens.new_job_key()
        response = http.post(
            f"{emu.base_url}/v2/imagine",
            headers={"Authorization": f"Bearer {emu.settings.token}"},
            json={"msg": prompt, "ref": ref_for(key), "webhookOverride": webhook_url(base, key)},
        )
        return response.json()["messageId"], key

    def test_the_services_webhooks_reach_the_inbox_and_duplicates_change_nothing(
        self,
        emu: EmulatorServer,
        receiver: ThreadedServer,
        http: httpx.Client,
        local_inbox: LocalInbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        emu.set_faults(FaultSettings(webhook_duplicate_rate=1.0))
        jobs = [self.submit(emu, http, receiver.url, f"a fox number {n}") for n in range(5)]
        deliveries = wait(lambda: len(emu.webhooks()) == 10 and emu.webhooks(), 20, "ten deliveries")
        assert {delivery["status"] for delivery in deliveries} == {200}
        assert sum(delivery.get("fault") == "duplicate" for delivery in deliveries) == 5
        assert len(stored(local_inbox)) == 5
        for message_id, key in jobs:
            result = get(local_inbox, message_id, key)
            assert result is not None
            assert result["originatingMessageId"] == message_id
        logged = server_side(caplog)
        for delivery in deliveries:
            assert parse_qs(urlsplit(delivery["url"]).query)["token"][0] not in logged

    def test_a_lost_webhook_leaves_nothing_and_a_5xx_is_not_retried(
        self,
        emu: EmulatorServer,
        http: httpx.Client,
        tmp_path: Path,
        connection: str,
    ) -> None:
        emu.set_faults(FaultSettings(webhook_loss_rate=1.0))
        blocked = LocalInbox(tmp_path / "not-a-dir" / "inbox")
        (tmp_path / "not-a-dir").write_text("")  # the inbox cannot be written: the receiver answers 503
        with ThreadedServer(create_receiver_app(inbox_for=lambda config: blocked)) as receiver:
            self.submit(emu, http, receiver.url, "lost")
            [lost] = wait(emu.webhooks, 10, "the lost delivery")
            assert (lost["fault"], lost["status"]) == ("lost", None)
            emu.set_faults(FaultSettings())
            self.submit(emu, http, receiver.url, "refused")
            wait(lambda: len(emu.webhooks()) == 2, 10, "the second delivery")
            assert emu.webhooks()[1]["status"] == 503
            with pytest.raises(AssertionError):
                wait(lambda: len(emu.webhooks()) > 2, 0.5, "a retry")


class TestCommand:
    @pytest.mark.parametrize(
        ("flags", "says"),
        [
            (["--port", "abc"], "argument --port"),
            (["--port", "70000"], "argument --port"),
            (["--max-body-bytes", "5"], "argument --max-body-bytes"),
            (["--nonsense"], "unrecognized arguments"),
            (["--host", "203.0.113.7", "--port", "0"], "cannot listen on 203.0.113.7"),
        ],
    )
    def test_bad_flags_end_with_one_line_and_status_2(self, flags: list[str], says: str) -> None:
        done = subprocess.run([RECEIVER_BIN, *flags], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("nextleg-webhook-receiver: error: ")
        assert says in line

    def test_it_serves_the_connections_of_the_environment_into_this_hosts_inbox(
        self, tmp_path: Path, http: httpx.Client
    ) -> None:
        temp = tmp_path / "host-tmp"
        temp.mkdir()
        port = free_port()
        env = {**os.environ, "TMPDIR": str(temp), f"AIRFLOW_CONN_{CONN_ID.upper()}": nextleg_connection()}
        log = (tmp_path / "receiver.log").open("w+b")
        process = subprocess.Popen(
            [RECEIVER_BIN, "--port", str(port), "--log-level", "debug"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait(lambda: _healthy(http, base), 60, "the receiver command", interval=0.2)
            key = tokens.new_job_key()
            url = webhook_url(base, key)
            assert http.post(url, json=result_body("m-cli", key)).json() == {"stored": True}
            assert (
                http.post(url.replace("token=", "token=A"), json=result_body("m-x", key)).status_code == 403
            )
        finally:
            process.terminate()
            assert process.wait(20) == 0
        inbox = LocalInbox(temp / f"airflow-provider-nextleg-{os.getuid()}" / "inbox")
        assert (inbox.directory / f"{delivery_id('m-cli', key)}.json").exists()
        output = (tmp_path / "receiver.log").read_text()
        assert "listening on" in output
        assert "stored" in output
        assert parse_qs(urlsplit(url).query)["token"][0] not in output
        assert SECRET not in output


def server_side(caplog: pytest.LogCaptureFixture) -> str:
    """Every message logged but the test's own HTTP client's (which stands for NextLeg, and logs URLs)."""
    return "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))
    )


def _healthy(http: httpx.Client, base: str) -> bool:
    try:
        return http.get(f"{base}/health").status_code == 200
    except httpx.HTTPError:
        return False
