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
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {
            "name": "test-dags",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(TEST_DAGS)},
        },
    ]
)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """A freshly migrated metadata database (SQLite in the test AIRFLOW_HOME), once per session."""
    from airflow.utils import db

    db.resetdb()
    yield
