"""End to end on real Airflow services: api-server, scheduler, dag-processor and triggerer on SQLite
(LocalExecutor), running the quick-start example against the emulator over HTTP.

The second test kills the triggerer with SIGKILL while the chain waits and starts a new one: the run
must still succeed, and the emulator's ledger must show that no job was submitted twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, duplicate_submissions

from .services import AirflowServices, wait_for

pytestmark = pytest.mark.services

DAG_ID = "nextleg_imagine_variation_upscale"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # Jobs of 7.5 to 19 s: long enough to kill the triggerer while one waits, and longer than the few
    # seconds in which Airflow's scheduler can fail a task resumed from deferral (see the README).
    with EmulatorServer(EmulatorSettings(time_scale=0.25, rate_limit=False)) as server:
        yield server


@pytest.fixture(scope="module")
def services(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    # pytest keeps the latest homes (with every service's log) for a look after a failure.
    home = tmp_path_factory.mktemp("airflow-services")
    with AirflowServices(home, emulator.airflow_connection_json(), dag_id=DAG_ID) as running:
        yield running


def submissions_of(emulator: EmulatorServer, run_id: str) -> list[dict[str, Any]]:
    return [entry for entry in emulator.ledger() if json.loads(entry["ref"])["run_id"] == run_id]


def test_the_chain_succeeds_with_three_submissions(services: AirflowServices, emulator: EmulatorServer):
    run_id = services.trigger()
    assert services.wait_finished(run_id) == "success", services.logs()
    ledger = submissions_of(emulator, run_id)
    assert [entry["endpoint"] for entry in ledger] == ["/v2/imagine", "/v2/button", "/v2/button"]
    assert all(entry["status"] == 200 for entry in ledger)


def test_a_killed_triggerer_loses_nothing_and_pays_nothing_twice(
    services: AirflowServices, emulator: EmulatorServer
):
    run_id = services.trigger()
    wait_for(lambda: "deferred" in services.task_states(run_id).values(), 120, "a deferred task", 0.2)
    services.kill("triggerer")
    time.sleep(2)
    services.start("triggerer")
    assert services.wait_finished(run_id) == "success", services.logs()
    ledger = submissions_of(emulator, run_id)
    assert [entry["endpoint"] for entry in ledger] == ["/v2/imagine", "/v2/button", "/v2/button"]
    assert not duplicate_submissions(ledger)  # the same request twice in this run would be a second payment
