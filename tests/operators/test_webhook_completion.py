"""Jobs that complete by webhook, in real DAG runs (``dag.test()``) against the emulator: the emulator
posts each result to the provider's receiver (standalone, under uvicorn), the trigger takes it from the
inbox, and polls only to reconcile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.utils.state import DagRunState
from webhooks.support import ThreadedServer

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings
from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.operators.nextleg import ImagineOperator
from airflow_provider_nextleg.webhooks.receiver import create_receiver_app

from .test_dags import run, xcom

SECRET = "whsec-completion-" + "4c1d9e7a2b5f8e3c6a0d"
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def receiver() -> Iterator[ThreadedServer]:
    """The provider's receiver, standalone, reading the connections as the API server would."""
    with ThreadedServer(create_receiver_app()) as server:
        yield server


def by_webhook(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, receiver: ThreadedServer) -> None:
    conn = json.loads(emulator.airflow_connection_json())
    conn["extra"] |= {"webhook_url": receiver.url, "webhook_secret": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", json.dumps(conn))


def polls(emulator: EmulatorServer) -> int:
    return emulator.counters()["requests"].get("GET /v2/message", 0)


def test_the_chain_completes_by_webhook_with_at_most_one_poll_per_job(
    dags: Any,
    nextleg_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    receiver: ThreadedServer,
    capsys: pytest.CaptureFixture[str],
):
    by_webhook(nextleg_emulator, monkeypatch, receiver)
    dag_run, tis = run(dags["nextleg_imagine_variation_upscale"], prompt="a red kite over a hill")
    assert dag_run.state == DagRunState.SUCCESS
    submissions = nextleg_emulator.ledger()
    assert len(submissions) == 3
    assert all(entry["payload"]["webhookOverride"].startswith(receiver.url) for entry in submissions)
    assert polls(nextleg_emulator) <= 3
    deliveries = nextleg_emulator.webhooks()
    assert len(deliveries) == 3
    assert {delivery.get("status") for delivery in deliveries} == {200}
    assert xcom(tis["upscale"])["button"] == "U1"
    logs = capsys.readouterr()
    everything = logs.out + logs.err + json.dumps([xcom(tis[task]) for task in ("imagine", "variation")])
    assert SECRET not in everything
    assert "token=" not in everything  # the job's token travels only to NextLeg, in webhookOverride


def test_lost_webhooks_cost_latency_not_the_job(
    dags: Any, nextleg_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, receiver: ThreadedServer
):
    by_webhook(nextleg_emulator, monkeypatch, receiver)
    nextleg_emulator.set_faults(FaultSettings(webhook_loss_rate=1.0))
    dag_run, _ = run(dags["nextleg_imagine_variation_upscale"], prompt="a lighthouse in fog")
    assert dag_run.state == DagRunState.SUCCESS  # each job found by its reconciling poll
    assert polls(nextleg_emulator) >= 3
    assert not nextleg_emulator.duplicate_submissions()


def test_completion_webhook_needs_the_connections_webhook(nextleg_emulator: EmulatorServer):
    operator = ImagineOperator(task_id="imagine", prompt="a cat", completion="webhook")
    with pytest.raises(NextLegInputError, match="names no webhook_url"):
        operator._webhooks()
    assert nextleg_emulator.counters()["requests"] == {}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"completion": "push"}, "completion='push' is none of"),
        ({"completion": "webhook", "webhook_override": "https://hooks.example/x"}, "cannot go together"),
    ],
)
def test_bad_completion_arguments_are_refused_when_the_operator_is_made(
    arguments: dict[str, Any], problem: str
):
    with pytest.raises(NextLegInputError, match=problem):
        ImagineOperator(task_id="imagine", prompt="a cat", **arguments)
