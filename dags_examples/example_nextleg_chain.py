"""
The NextLeg quick-start flow as a DAG: imagine a grid, make variations of its first image, upscale one.

This is the request sequence of NextLeg's own quick-start (imagine, poll, press ``V1``, poll), written
the Airflow way and carried one step further to an upscale:

* ``ImagineOperator`` submits the prompt and waits for the 2x2 grid. Waiting is deferred to the
  triggerer where ``[operators] default_deferrable`` is on (no worker slot held while Midjourney works);
  otherwise the worker polls with the same rules.
* Each operator returns the finished result (message id, button message id, buttons, image URLs) as its
  XCom, so the next step takes ``upstream.output`` and presses one of the buttons it offers. A button the
  result does not offer fails the task before anything is sent (and paid for).
* A retry never pays twice: a retried task whose job is still running waits for it, and one whose job
  already finished reuses its result (Airflow 3.3's task state store).

Trigger it with another prompt from the UI ("Trigger DAG w/ config") or the CLI:
``airflow dags trigger nextleg_imagine_variation_upscale --conf '{"prompt": "a lighthouse at dawn"}'``.
The connection ``nextleg_default`` holds the API token and base URL; ``make demo`` runs this DAG against
the bundled emulator.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator

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
