"""Real Airflow services for the end-to-end tests, as separate processes in a fresh AIRFLOW_HOME.

:class:`AirflowServices` is one host on SQLite with the LocalExecutor; :class:`MultiHostServices` is a
production-shaped deployment: the CeleryExecutor with a Redis broker, PostgreSQL as the metadata
database, and several "hosts", each a Celery worker and a triggerer with a temporary directory of its
own (so the host limiter's file, kept there, cannot join them). Every process is started in a session of
its own and killed by its process group on exit; every worker and triggerer runs with
``--skip-serve-logs``, since their log servers bind fixed ports on every interface and would collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import servers
from conftest import REPO_ROOT
from servers import free_port

AIRFLOW = str(Path(sys.executable).parent / "airflow")
NOT_YET = (httpx.HTTPError, OSError)
"""What a service that is still starting answers."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """:func:`servers.wait_for`, an HTTP error meaning "not yet"."""
    return servers.wait_for(condition, timeout, what, interval, ignore=NOT_YET)


class AirflowServices:
    """
    Airflow's services in a fresh AIRFLOW_HOME, as separate processes, killed on exit.

    :param home: the AIRFLOW_HOME (also where each service's output goes, ``<name>.log``).
    :param connection_json: the ``nextleg_default`` connection, as JSON.
    :param dag_id: the DAG the test runs; entering waits until it is parsed.
    :param env: settings added to (or replacing) the defaults, e.g. another database.
    """

    def __init__(
        self, home: Path, connection_json: str, *, dag_id: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.home = home
        self.dag_id = dag_id
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
            # Own ports for the log servers too, should one start after all.
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
            **(env or {}),
        }
        #: name -> (the ``airflow`` command's arguments, environment added for that process)
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "api-server": (["api-server"], {}),
            "scheduler": (["scheduler", "--skip-serve-logs"], {}),
            "dag-processor": (["dag-processor"], {}),
            "triggerer": (["triggerer", "--skip-serve-logs"], {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30, trust_env=False)

    # --- processes ---------------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start the service ``name`` (a key of :attr:`commands`)."""
        arguments, extra_env = self.commands[name]
        log = (self.home / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [AIRFLOW, *arguments],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """Kill the service ``name`` and every process it started (its process group)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def migrate(self) -> None:
        result = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            output = result.stdout[-3000:] + result.stderr[-3000:]
            raise RuntimeError(f"airflow db migrate failed:\n{output}")

    def cli(self, *arguments: str) -> str:
        """Run ``airflow <arguments>`` against this home and database, as a user would; its output."""
        result = subprocess.run([AIRFLOW, *arguments], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(arguments)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result.stdout

    def create_pool(self, name: str, slots: int, description: str) -> None:
        """The pool ``name`` with ``slots``, counting deferred tasks, made with the command users run."""
        self.cli("pools", "set", name, str(slots), description, "--include-deferred")

    def __enter__(self) -> AirflowServices:
        try:
            self.migrate()
            for name in self.commands:
                self.start(name)
            wait_for(self.healthy, 120, "the api-server")
            wait_for(
                lambda: self.api.get(f"/api/v2/dags/{self.dag_id}").status_code == 200,
                180,
                f"DAG {self.dag_id} parsed",
            )
        except BaseException:
            self.__exit__()  # a failed start must not leave services running
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.api.close()
        for name in list(self.processes):
            self.kill(name)

    def healthy(self) -> bool:
        return self.api.get("/api/v2/monitor/health").status_code == 200

    # --- the REST API ------------------------------------------------------------------------------------

    def trigger(self, conf: Mapping[str, Any] | None = None) -> str:
        """Start a run of the DAG now, with ``conf`` (which overrides the DAG's params); its run id."""
        body: dict[str, Any] = {"logical_date": None}
        if conf is not None:
            body["conf"] = dict(conf)
        response = self.api.post(f"/api/v2/dags/{self.dag_id}/dagRuns", json=body)
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def backfill(self, from_date: str, to_date: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """
        Backfill the DAG for the logical dates from ``from_date`` to ``to_date`` (ISO dates, both included)
        as the UI's form does, over REST; the backfill. (``airflow backfill create --dag-run-conf`` fails
        on Airflow 3.1.0, apache/airflow#56230.)
        """
        body: dict[str, Any] = {
            "dag_id": self.dag_id,
            "from_date": f"{from_date}T00:00:00Z",
            "to_date": f"{to_date}T00:00:00Z",
            "dag_run_conf": dict(conf or {}),
        }
        for _ in range(5):  # Airflow 3.1.0's api-server answered 500 once in CI: try again shortly
            response = self.api.post("/api/v2/backfills", json=body)
            if response.status_code < 500:
                break
            time.sleep(2)
        response.raise_for_status()
        return response.json()

    def run_state(self, run_id: str) -> str:
        return self.api.get(f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}").json()["state"]

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones one by one (the API pages them by 100)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.api.get(
                f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found)},
            ).json()
            found.extend(page["task_instances"])
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_states(self, run_id: str) -> dict[str, str]:
        """The state of each task of an unmapped DAG, by task id."""
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(run_id)}

    def wait_finished(self, run_id: str, timeout: float = 180) -> str:
        return wait_for(
            lambda: (state := self.run_state(run_id)) in ("success", "failed") and state,
            timeout,
            f"run {run_id}",
        )

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-tail:]
            for path in sorted(self.home.glob("*.log"))
        )


class MultiHostServices(AirflowServices):
    """
    A deployment across ``hosts``: one api-server, scheduler and dag-processor; on each host a Celery
    worker (``worker@<host>``) and a triggerer, with ``TMPDIR`` a directory of that host's own.

    :param database_url: the SQLAlchemy URL of the PostgreSQL metadata database (also Celery's results).
    :param broker_url: Celery's Redis broker.
    :param hosts: the hosts' names.
    :param worker_concurrency: task slots of each worker.
    :param triggerer_capacity: triggers each triggerer runs at most (small enough that both take some).
    """

    def __init__(
        self,
        home: Path,
        connection_json: str,
        *,
        dag_id: str,
        database_url: str,
        broker_url: str,
        hosts: Sequence[str] = ("host-a", "host-b"),
        worker_concurrency: int = 2,
        triggerer_capacity: int = 1000,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from cryptography.fernet import Fernet

        super().__init__(
            home,
            connection_json,
            dag_id=dag_id,
            env={
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(2 * worker_concurrency * len(hosts)),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                # one secret and one key for every process, as every host of a deployment has
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__TRIGGERER__CAPACITY": str(triggerer_capacity),
                **(env or {}),
            },
        )
        self.hosts = tuple(hosts)
        self.host_services: list[str] = []
        del self.commands["triggerer"]
        for host in self.hosts:
            temp = home / host / "tmp"
            temp.mkdir(parents=True, exist_ok=True)
            host_env = {"TMPDIR": str(temp)}
            worker = ["celery", "worker", "--celery-hostname", f"worker@{host}"]
            worker += ["--concurrency", str(worker_concurrency), "--skip-serve-logs"]
            self.commands[f"{host}-worker"] = (worker, host_env)
            self.commands[f"{host}-triggerer"] = (["triggerer", "--skip-serve-logs"], host_env)
            self.host_services += [f"{host}-worker", f"{host}-triggerer"]

    def __enter__(self) -> MultiHostServices:
        super().__enter__()
        try:
            self.wait_hosts_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def restart_hosts(self, connection_json: str) -> None:
        """Stop every host's worker and triggerer and start them again with another NextLeg connection."""
        self.env["AIRFLOW_CONN_NEXTLEG_DEFAULT"] = connection_json
        for name in self.host_services:
            if name in self.processes:
                self.kill(name)
        for host in self.hosts:
            (self.home / f"{host}-worker.log").open("ab").write(b"\n=== restarted\n")
        for name in self.host_services:
            self.start(name)
        self.wait_hosts_ready()

    def wait_hosts_ready(self, timeout: float = 120) -> None:
        """Every worker has said ``ready`` (since its latest start) and every triggerer beats."""
        for host in self.hosts:
            log = self.home / f"{host}-worker.log"
            wait_for(
                lambda log=log: " ready." in log.read_text(errors="replace").rsplit("=== restarted", 1)[-1],
                timeout,
                f"the Celery worker of {host}",
            )
        wait_for(
            lambda: self.api.get("/api/v2/monitor/health").json()["triggerer"]["status"] == "healthy",
            timeout,
            "a triggerer",
        )


def connection_with(connection_json: str, **extra: Any) -> str:
    """The same NextLeg connection with more extras."""
    connection = json.loads(connection_json)
    connection["extra"] = {**connection.get("extra", {}), **extra}
    return json.dumps(connection)
