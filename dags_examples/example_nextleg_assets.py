"""
Save NextLeg images as files, and run a second DAG whenever new ones land (Airflow Assets).

Two DAGs:

``example_nextleg_assets_producer``
    ``imagine`` generates a 2x2 grid; ``save_images`` (:class:`SaveImagesOperator`) downloads the grid
    and its four tiles into ``<root>/<date>/<run_id>/`` with a JSON manifest (prompt, message id,
    buttons, each file's sha256 and size, the tasks that made them), and updates the Asset of ``<root>``.
    The CDN links of a result expire and sometimes answer 403; the saved files do not.

``example_nextleg_assets_consumer``
    Scheduled on that Asset: it runs after each save, opens the manifest named in the Asset event,
    checks every file against its sha256, and returns what it found. Replace its task with your own
    processing (thumbnails, a CMS upload, a review queue).

The root comes from the ``NEXTLEG_IMAGES_ROOT`` environment variable (default
``file:///tmp/nextleg-images``), read when the file is parsed. Any ``ObjectStoragePath`` URI works, e.g.
``s3://aws_default@my-bucket/nextleg`` with the Amazon provider installed (``aws_default`` is the
connection used to write).

To try it offline, start the emulator (``nextleg-emulator``) and point the ``nextleg_default``
connection at it (``AIRFLOW_CONN_NEXTLEG_DEFAULT``, see ``EmulatorServer.airflow_connection_json``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_nextleg.operators.nextleg import ImagineOperator
from airflow_provider_nextleg.operators.storage import SaveImagesOperator, destination_asset
from airflow_provider_nextleg.storage import Manifest

log = logging.getLogger(__name__)

IMAGES_ROOT = os.environ.get("NEXTLEG_IMAGES_ROOT", "file:///tmp/nextleg-images").rstrip("/")

# One folder per run. ``dag_run.run_after | ds`` is the run's date even for a run triggered without a
# logical date, where ``{{ ds }}`` would be undefined.
DESTINATION = IMAGES_ROOT + "/{{ dag_run.run_after | ds }}/{{ run_id }}/"

# The Asset SaveImagesOperator updates by default: the destination's fixed part, i.e. IMAGES_ROOT.
NEW_IMAGES = destination_asset(DESTINATION)

with DAG(
    dag_id="example_nextleg_assets_producer",
    schedule=None,
    catchup=False,
    tags=["nextleg", "example"],
    doc_md=__doc__,
):
    imagine = ImagineOperator(task_id="imagine", prompt="a lighthouse on a cliff at dawn, watercolor")
    SaveImagesOperator(task_id="save_images", result=imagine.output, destination=DESTINATION)


with DAG(
    dag_id="example_nextleg_assets_consumer",
    schedule=[NEW_IMAGES],
    catchup=False,
    tags=["nextleg", "example"],
    doc_md=__doc__,
):

    @task(inlets=[NEW_IMAGES])
    def read_manifests(triggering_asset_events: Any = None, inlet_events: Any = None) -> list[dict[str, Any]]:
        """
        Open and check the manifest of each save that triggered this run.

        A scheduled run gets the events that triggered it; a run started by hand (or ``dag.test()``) has
        none, so it reads the Asset's latest event instead.
        """
        events = triggering_asset_events[NEW_IMAGES] or inlet_events[NEW_IMAGES][-1:]
        found = []
        for event in events:
            manifest = Manifest.load(event.extra["manifest"])
            manifest.verify()  # every file present, with the size and sha256 the manifest recorded
            log.info("Job %s: %d files verified", manifest.message_id, len(manifest.files))
            found.append(
                {
                    "message_id": manifest.message_id,
                    "prompt": manifest.prompt,
                    "files": [str(manifest.file_path(image)) for image in manifest.files],
                }
            )
        return found

    read_manifests()
