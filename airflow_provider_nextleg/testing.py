"""A throw-away Airflow home for users' own DAG tests: ``dag.test()`` against the NextLeg emulator.

``dag.test()`` needs a migrated metadata database, and finds a DAG only in a configured DAG bundle
(otherwise: "dag is not serialized"). :func:`airflow_test_home` gives both: a temporary ``AIRFLOW_HOME``
with a fresh SQLite database, the user's DAG folder as the dags folder and its only bundle, no bundled
examples, and every DAG of the folder parsed (import errors fail loudly) and written to the database
(Airflow 3.1's ``dag.test()`` does not write it itself). The ``nextleg_airflow_home`` pytest fixture
(the provider's pytest plugin) wraps it for a test session::

    def test_my_dag(nextleg_airflow_home, nextleg_emulator):
        run = nextleg_airflow_home.dags["my_dag"].test()
        assert run.state == "success"

Airflow reads its settings when first imported; when it was imported already (a test module's
``from airflow.sdk import ...``) this module points the imported settings and database engine at the
throw-away home, and back where they were on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The bundle :func:`airflow_test_home` registers the DAG folder as.
BUNDLE_NAME = "dags-folder"


@dataclass
class AirflowTestHome:
    """A migrated throw-away Airflow home and the DAGs of its dags folder, by id."""

    path: Path
    dags_folder: Path
    dags: dict[str, Any] = field(default_factory=dict)

    def get_dag(self, dag_id: str) -> Any:
        """The DAG ``dag_id`` of the dags folder; a ``KeyError`` naming the DAGs found otherwise."""
        try:
            return self.dags[dag_id]
        except KeyError:
            found = ", ".join(sorted(self.dags)) or "none"
            raise KeyError(f"no DAG {dag_id!r} in {self.dags_folder} (found: {found})") from None


def airflow_environment(home: Path, dags_folder: Path) -> dict[str, str]:
    """The environment of a throw-away Airflow home whose one DAG bundle is ``dags_folder``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": BUNDLE_NAME,
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(dags_folder)},
                }
            ]
        ),
    }


@contextlib.contextmanager
def airflow_test_home(
    dags_folder: str | os.PathLike[str], home: Path | None = None
) -> Iterator[AirflowTestHome]:
    """
    A migrated throw-away Airflow home that registers ``dags_folder``; removed on exit.

    :param dags_folder: the folder of the DAG files to test (the dags folder and its only bundle).
    :param home: the ``AIRFLOW_HOME`` to use (kept on exit); default a new temporary directory.
    """
    folder = Path(dags_folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"the DAG folder {folder} does not exist (point nextleg_dags_folder at it)")
    owned = home is None
    path = Path(tempfile.mkdtemp(prefix="nextleg-airflow-home-")) if home is None else home.resolve()
    environment = airflow_environment(path, folder)
    saved = {key: os.environ.get(key) for key in environment}
    imported = "airflow.settings" in sys.modules
    os.environ.update(environment)
    try:
        if imported:
            _reconfigure()
        yield AirflowTestHome(path=path, dags_folder=folder, dags=_migrate_and_load(folder))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "airflow.settings" in sys.modules:
            _reconfigure()
        if owned:
            shutil.rmtree(path, ignore_errors=True)


def _reconfigure() -> None:
    """Point an imported Airflow's settings and database engine at what the environment says now."""
    from airflow import settings

    settings.configure_vars()
    settings.reconfigure_orm()


def _migrate_and_load(folder: Path) -> dict[str, Any]:
    """A fresh metadata database; every DAG of ``folder`` parsed and written to it, by id."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.utils import db

    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]

    db.resetdb()
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=folder, bundle_path=folder)  # examples: off in the environment
    if bag.import_errors:
        errors = "\n".join(f"{file}: {error}" for file, error in bag.import_errors.items())
        raise RuntimeError(f"DAG files of {folder} failed to import:\n{errors}")
    sync_bag_to_db(bag, BUNDLE_NAME, None)
    return dict(bag.dags)
