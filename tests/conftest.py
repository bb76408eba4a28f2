"""Test set-up shared by every tier.

Airflow reads its configuration when it is first imported, so the environment is set here, at the top of
the first conftest, before any test module imports airflow: a throw-away AIRFLOW_HOME, no bundled
examples, unit-test mode, and two DAG bundles: the example DAGs (the dags folder) and the test-only DAGs
of ``tests/dags``. ``dag.test()`` finds a DAG only in a configured bundle.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = REPO_ROOT / "tests" / "dags"
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="nextleg-airflow-home-")

os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags_examples")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME}/airflow.db")
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": "test-dags",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(TEST_DAGS)},
        },
    ]
)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A freshly migrated metadata database (SQLite in the test AIRFLOW_HOME), once per session."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="session")
def dags(airflow_db: None) -> dict[str, Any]:
    """
    Every DAG of both bundles by id, parsed without import errors and written to the database.

    ``dag.test()`` writes the DAG itself from Airflow 3.2 on; 3.1 needs it done before.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    found: dict[str, Any] = {}
    for bundle, folder in (("dags-folder", REPO_ROOT / "dags_examples"), ("test-dags", TEST_DAGS)):
        bag = DagBag(dag_folder=folder, bundle_path=folder)
        assert bag.import_errors == {}, bag.import_errors
        sync_bag_to_db(bag, bundle, None)
        found.update(bag.dags)
    return found


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    """
    Each test starts with no pacing state: the emulator fixture keeps one base URL and token for the
    session, so without this a test would inherit the booked slots and the learned margin of the last.
    """
    yield
    from airflow_provider_nextleg import ratelimit

    with ratelimit._limiters_lock:
        for limiter in ratelimit._host_limiters.values():
            if limiter.shared is not None:
                limiter.shared.unlink(missing_ok=True)
        ratelimit._host_limiters.clear()
        ratelimit._shared_limiters.clear()
