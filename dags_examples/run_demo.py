"""
The main job of ``make demo``: the quick-start chain (imagine -> V1 -> U1) on real Airflow, offline.

It starts the bundled NextLeg emulator on a free local port (jobs take 3 to 7.5 s, the documented rate
limit on, both scaled by 0.1), points the ``nextleg_default`` connection at it, migrates a fresh SQLite
Airflow database under ``.airflow-demo/``, and runs ``nextleg_imagine_variation_upscale`` with
``dag.test()``: real task execution, each wait deferred to a trigger, as a triggerer would run it. The
images, their manifests and a contact sheet land in ``output/`` (or the folder given as argument).

Usage: ``python dags_examples/run_demo.py [OUTPUT_FOLDER] [--prompt "..."]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DAG_ID = "nextleg_imagine_variation_upscale"


def configure_airflow(home: Path, images: Path) -> None:
    """Airflow reads its configuration on first import: a fresh home, these DAGs, quiet logs but ours."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow_provider_nextleg=INFO airflow.task=INFO",
            "NEXTLEG_IMAGES_ROOT": images.as_uri(),
        }
    )
    warnings.simplefilter("ignore")  # the tasks run in this process: their deprecation noise is not the demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(REPO / "output"), help="where the images go")
    parser.add_argument(
        "--prompt", default="A Rhinoceros in the Amazon with sun shining through, photorealistic, 4k"
    )
    args = parser.parse_args()
    images = Path(args.output).resolve()
    configure_airflow(REPO / ".airflow-demo", images)

    from airflow.utils import db
    from airflow.utils.state import DagRunState

    from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings

    print("Setting up a fresh Airflow database in .airflow-demo/ ...", flush=True)
    db.resetdb()
    dag = _load_dag()
    with EmulatorServer(EmulatorSettings(time_scale=0.1, rate_limit=True)) as emulator:
        os.environ["AIRFLOW_CONN_NEXTLEG_DEFAULT"] = emulator.airflow_connection_json()
        print(f"NextLeg emulator listening on {emulator.base_url}; running {DAG_ID} ...", flush=True)
        dag_run = dag.test(run_conf={"prompt": args.prompt})
        jobs = len(emulator.jobs())  # the ledger would also count refused submissions
    folder = images / DAG_ID / dag_run.run_id  # the DAG's destination: <root>/<dag_id>/<run_id>/
    if dag_run.state != DagRunState.SUCCESS or not (folder / "contact_sheet.html").exists():
        print(f"The run ended {dag_run.state}; see the log above.", file=sys.stderr)
        return 1
    print(f"\nDone: {jobs} NextLeg jobs (grid, variation, upscale). Images, manifests and the contact sheet:")
    print(f"  {folder}")
    for path in sorted(folder.iterdir()):
        print(f"    {path.name}")
    print(f"Open {folder / 'contact_sheet.html'} in a browser to see prompt -> grid -> variation -> upscale.")
    return 0


def _load_dag() -> Any:
    """The example DAG, parsed and written to the database (``dag.test()`` on Airflow 3.1 needs that)."""
    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=HERE / "example_nextleg_chain.py", bundle_path=HERE)
    if bag.import_errors:
        raise SystemExit(f"The example DAG does not import: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.dags[DAG_ID]


if __name__ == "__main__":
    sys.exit(main())
