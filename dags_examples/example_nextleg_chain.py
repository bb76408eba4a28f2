"""
The NextLeg quick-start flow as a DAG: imagine a grid, make variations of its first image, upscale one.

This is the request sequence of NextLeg's own quick-start (imagine, poll, press ``V1``, poll), written
the Airflow way and carried one step further to an upscale:

* ``ImagineOperator`` submits the prompt and waits for the 2x2 grid. Waiting is deferred to the
  triggerer where ``[operators] default_deferrable`` is on (no worker slot held while Midjourney works);
  otherwise the worker polls with the same rules.
* Each operator returns the finished result (message id, button message id, buttons, image URLs, the
  button that made it, the task that submitted it) as its XCom, so the next step takes
  ``upstream.output`` and presses one of the buttons it offers. A button the result does not offer fails
  the task before anything is sent (and paid for).
* A retry never pays twice: a retried task whose job is still running waits for it, and one whose job
  already finished reuses its result (Airflow 3.3's task state store).
* ``SaveImagesOperator`` writes each result's images, with a JSON manifest (prompt, the button that
  made them, buttons, sha256 of every file), into ``<root>/<dag_id>/<run_id>/``; CDN links expire,
  files do not. The root comes from
  ``NEXTLEG_IMAGES_ROOT`` (default ``file:///tmp/nextleg-images``; any ``ObjectStoragePath`` URI, such as
  ``s3://aws_default@bucket/prefix``). The last task writes ``contact_sheet.html`` there: prompt, grid,
  variation and upscale side by side.

Trigger it with another prompt from the UI ("Trigger DAG w/ config") or the CLI:
``airflow dags trigger nextleg_imagine_variation_upscale --conf '{"prompt": "a lighthouse at dawn"}'``.
The connection ``nextleg_default`` holds the API token and base URL; ``make demo`` runs this DAG against
the bundled emulator.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param, task

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator
from airflow_provider_nextleg.operators.storage import SaveImagesOperator
from airflow_provider_nextleg.storage import Manifest, write_contact_sheet

IMAGES_ROOT = os.environ.get("NEXTLEG_IMAGES_ROOT", "file:///tmp/nextleg-images").rstrip("/")
DESTINATION = IMAGES_ROOT + "/{{ dag.dag_id }}/{{ run_id }}/"

with DAG(
    dag_id="nextleg_imagine_variation_upscale",
    schedule=None,
    params={
        "prompt": Param(
            "A Rhinoceros in the Amazon with sun shining through, photorealistic, 4k",
            type="string",
            minLength=1,
            description="What to imagine; flags such as --ar 16:9 are allowed.",
        ),
    },
    tags=["nextleg", "example"],
    doc_md=__doc__,
) as dag:
    imagine = ImagineOperator(task_id="imagine", prompt="{{ params.prompt }}")
    variation = ButtonOperator(task_id="variation", message=imagine.output, button="V1")
    upscale = ButtonOperator(task_id="upscale", message=variation.output, button="U1")

    saved = [
        SaveImagesOperator(task_id="save_grid", result=imagine.output, destination=DESTINATION).output,
        SaveImagesOperator(task_id="save_variation", result=variation.output, destination=DESTINATION).output,
        SaveImagesOperator(task_id="save_upscale", result=upscale.output, destination=DESTINATION).output,
    ]

    @task
    def contact_sheet(saved: list[dict]) -> str:
        """One page showing the prompt, the grid, the variation and the upscale, from the manifests."""
        manifests = [Manifest.load(summary["manifest"]) for summary in saved]
        return str(write_contact_sheet(manifests, manifests[0].folder))

    contact_sheet(saved)
