"""The webhook receiver served by a real ``airflow api-server`` through the provider's plugin (the
``airflow.plugins`` entry point): the emulator's webhook for a job, and a POST for a connection made in
the metadata database over the REST API, both land in the host's inbox; a forged one is refused; the
API server's log holds neither a token nor the secret."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.inbox import LocalInbox

from .services import AirflowServices, wait_for

pytestmark = pytest.mark.services

SECRET = "whsec-e2e-" + "4b1f7d2c9a6e3f5081c7d9e2a4b6c8d0"
ENV_CONN = "nextleg_hooks"
DB_CONN = "nextleg_hooks_db"


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowServices, LocalInbox]]:
    """Only the API server, in a fresh home, with a TMPDIR of its own (where the inbox is)."""
    home = tmp_path_factory.mktemp("airflow-webhooks")
    temp = home / "tmp"
    temp.mkdir()
    connection = json.dumps(
        {"conn_type": "nextleg", "host": "http://127.0.0.1:9", "password": "unused",
         "extra": {"webhook_secret": SECRET}}
    )  # fmt: skip
    services = AirflowServices(
        home,
        connection,
        dag_id="unused",
        env={
            "TMPDIR": str(temp),
            f"AIRFLOW_CONN_{ENV_CONN.upper()}": connection,
            "AIRFLOW__API__WORKERS": "1",
        },
    )
    try:
        services.migrate()
        services.start("api-server")
        wait_for(services.healthy, 120, "the api-server")
        yield services, LocalInbox(temp / f"airflow-provider-nextleg-{os.getuid()}" / "inbox")
    finally:
        services.__exit__()


def test_webhooks_reach_the_inbox_through_the_api_servers_plugin(
    api_server: tuple[AirflowServices, LocalInbox],
) -> None:
    services, inbox = api_server
    base = f"http://127.0.0.1:{services.port}/nextleg"
    plugins = services.api.get("/api/v2/plugins").json()["plugins"]
    assert any(plugin["name"] == "nextleg_webhooks" for plugin in plugins)
    created = services.api.post(
        "/api/v2/connections",
        json={"connection_id": DB_CONN, "conn_type": "nextleg", "host": "http://127.0.0.1:9",
              "password": "unused", "extra": json.dumps({"webhook_secret": SECRET})},
    )  # fmt: skip
    assert created.status_code == 201, created.text

    # The emulator's webhook of a job submitted with the env connection's URL ...
    key = tokens.new_job_key()
    url = tokens.webhook_override_url(base, ENV_CONN, key, SECRET)
    settings = EmulatorSettings(time_scale=0.001, rate_limit=False, cdn_403_rate=0.0)
    with EmulatorServer(settings) as emu:
        message_id = httpx.post(
            f"{emu.base_url}/v2/imagine",
            headers={"Authorization": f"Bearer {emu.settings.token}"},
            json={"msg": "a fox", "ref": json.dumps({"job": key}), "webhookOverride": url},
        ).json()["messageId"]
        [delivery] = wait_for(emu.webhooks, 30, "the emulator's webhook", 0.1)
    assert delivery["status"] == 200, services.logs()
    result = asyncio.run(inbox.wait(message_id, key, timeout=5))
    assert result is not None
    assert result["originatingMessageId"] == message_id

    # ... a POST for the connection in the metadata database, and a forged one.
    other = tokens.new_job_key()
    db_url = tokens.webhook_override_url(base, DB_CONN, other, SECRET)
    body = {**result, "originatingMessageId": "msg-db", "ref": json.dumps({"job": other})}
    answer = httpx.post(db_url, json=body)
    assert (answer.status_code, answer.json()) == (200, {"stored": True})
    assert asyncio.run(inbox.get("msg-db", other)) == body
    forged = httpx.post(
        db_url.replace(db_url.split("token=")[1], "A" * 43), json=body | {"originatingMessageId": "f"}
    )
    assert forged.status_code == 403
    assert asyncio.run(inbox.get("f", other)) is None

    log = (services.home / "api-server.log").read_text(errors="replace")
    assert "stored" in log
    assert f"/nextleg/webhook/{ENV_CONN}/{key}" in log  # Airflow's access log: the path ...
    for token_url in (url, db_url):
        assert parse_qs(urlsplit(token_url).query)["token"][0] not in log  # ... never the token
    assert SECRET not in log
