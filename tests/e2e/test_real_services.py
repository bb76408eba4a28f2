"""End to end on real Airflow services: api-server, scheduler, dag-processor and triggerer on SQLite
(LocalExecutor), running the quick-start example against the emulator over HTTP.

The second test kills the triggerer with SIGKILL while the chain waits and starts a new one: the run
must still succeed, and the emulator's ledger must show that no job was submitted twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO_ROOT

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, duplicate_submissions

pytestmark = pytest.mark.services

DAG_ID = "nextleg_imagine_variation_upscale"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class AirflowServices:
    """Airflow's services in a fresh AIRFLOW_HOME, as separate processes, killed on exit."""

    SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(self, home: Path, connection_json: str) -> None:
        self.home = home
        self.port = free_port()
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags_examples"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs a test triggers, no @daily ones
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__PORT": str(self.port),
            # Own ports for the log servers too, so that other Airflow services on the machine don't collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "4",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_NEXTLEG_DEFAULT": connection_json,
            "PYTHONWARNINGS": "ignore",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10, trust_env=False)

    def start(self, service: str) -> None:
        log = (self.home / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            [AIRFLOW, service], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, service: str) -> None:
        process = self.processes.pop(service)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> AirflowServices:
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, check=True, capture_output=True)
        try:
            for service in self.SERVICES:
                self.start(service)
            wait_for(lambda: self.api.get("/api/v2/monitor/health").status_code == 200, 90, "the api-server")
            wait_for(lambda: self.api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120, "the DAG parsed")
        except BaseException:
            self.__exit__()  # a failed start must not leave services running
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.api.close()
        for service in list(self.processes):
            self.kill(service)

    def trigger(self) -> str:
        response = self.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def run_state(self, run_id: str) -> str:
        return self.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]

    def task_states(self, run_id: str) -> dict[str, str]:
        instances = self.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        return {ti["task_id"]: ti["state"] for ti in instances["task_instances"]}

    def wait_finished(self, run_id: str, timeout: float = 180) -> str:
        return wait_for(
            lambda: (state := self.run_state(run_id)) in ("success", "failed") and state,
            timeout,
            f"run {run_id}",
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
            for path in self.home.glob("*.log")
        )


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
    with AirflowServices(home, emulator.airflow_connection_json()) as running:
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
