"""pytest fixtures that run users' tests against the NextLeg emulator (registered as a pytest11 plugin).

``nextleg_emulator`` gives each test a clean emulator and points Airflow's ``nextleg_default`` connection
at it::

    def test_my_dag(nextleg_emulator):
        nextleg_emulator.add_fault(Fault("/v2/message", "status", status=503, count=2))
        ...  # run the DAG or the hook
        assert not nextleg_emulator.duplicate_submissions()

``nextleg_airflow_home`` (once per session) gives ``dag.test()`` what it needs in a user's project: a
migrated throw-away Airflow home whose DAG bundle is the project's DAG folder (the ``nextleg_dags_folder``
ini option, relative to the rootdir, default ``dags``; or override the ``nextleg_dags_folder`` fixture)::

    def test_my_dag(nextleg_airflow_home, nextleg_emulator):
        run = nextleg_airflow_home.get_dag("my_dag").test()
        assert run.state == "success"

This module is loaded in every pytest run of an environment where the provider is installed, so it
imports nothing heavy: the server is imported inside the fixture. Without the provider's ``[emulator]``
extra the plugin still loads silently, and the fixture fails with one line naming the extra to install.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_nextleg.emulator.extra import missing_extra_message
from airflow_provider_nextleg.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from airflow_provider_nextleg.emulator.server import EmulatorServer
    from airflow_provider_nextleg.testing import AirflowTestHome

#: The session emulator's settings: a 50 s job lasts half a second and the rate limit is off; the CDN
#: answers server downloads of the tiles 403 as the real one does (``cdn_403_rate``'s default), so a DAG
#: that downloads them directly instead of through ``POST /getImage`` fails here as it would in
#: production. A test of direct downloads turns that off with ``nextleg_emulator.configure(cdn_403_rate=0)``.
SESSION_SETTINGS = EmulatorSettings(time_scale=0.01, rate_limit=False)


@pytest.fixture(scope="session")
def nextleg_emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the whole session, on a free port (time scale 0.01, no rate limit)."""
    missing_extra = missing_extra_message("the nextleg_emulator fixture")
    if missing_extra:
        pytest.fail(missing_extra, pytrace=False)
    from airflow_provider_nextleg.emulator.server import EmulatorServer

    with EmulatorServer(SESSION_SETTINGS) as server:
        yield server


@pytest.fixture
def nextleg_emulator(
    nextleg_emulator_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    """The session emulator, reset to its session settings, as Airflow's ``nextleg_default`` connection."""
    server = nextleg_emulator_server
    server.reset()
    settings = dataclasses.asdict(SESSION_SETTINGS)
    for hidden in ("token", "admin_token"):
        settings.pop(hidden)
    server.configure(**settings)
    monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", server.airflow_connection_json())
    return server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "nextleg_dags_folder",
        "the DAG folder nextleg_airflow_home registers, relative to the rootdir (default: dags)",
        default="dags",
    )


@pytest.fixture(scope="session")
def nextleg_dags_folder(pytestconfig: pytest.Config) -> Path:
    """The folder of the DAGs under test: the ``nextleg_dags_folder`` ini option, from the rootdir."""
    return (pytestconfig.rootpath / str(pytestconfig.getini("nextleg_dags_folder"))).resolve()


@pytest.fixture(scope="session")
def nextleg_airflow_home(nextleg_dags_folder: Path) -> Iterator[AirflowTestHome]:
    """
    A migrated throw-away Airflow home (SQLite) for the session whose one DAG bundle is
    ``nextleg_dags_folder``, its DAGs parsed and written to the database: ``.dags``, ``.get_dag(id)``.
    """
    from airflow_provider_nextleg.testing import airflow_test_home

    with airflow_test_home(nextleg_dags_folder) as home:
        yield home
