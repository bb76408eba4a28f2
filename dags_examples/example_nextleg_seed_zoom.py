"""
Seed retrieval and Custom Zoom: reproduce a result later, and zoom out of an upscale.

* ``SeedOperator`` asks ``POST /v2/seed`` for the seed of a finished job: no new job, an immediate
  answer. Pressing ``✉️`` with ``ButtonOperator`` is the older way; it runs as a job whose result
  carries ``seed``. Either seed can be added to a prompt (``--seed 1234``) to get a similar grid again.
* ``Custom Zoom`` is a button of upscaled images. It takes ``zoom`` (1 to 2), and optionally ``ar`` (an
  aspect ratio such as ``1:1``) and ``prompt`` (replacing the original). All three are checked before
  anything is sent: ``zoom=2.5`` fails the task at once, unpaid.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator, SeedOperator

with DAG(
    dag_id="nextleg_seed_and_custom_zoom",
    schedule=None,
    tags=["nextleg", "example"],
    doc_md=__doc__,
) as dag:
    imagine = ImagineOperator(
        task_id="imagine", prompt="A lighthouse on a cliff at dusk, oil painting --ar 3:2"
    )
    seed = SeedOperator(task_id="seed", message=imagine.output)
    seed_by_button = ButtonOperator(task_id="seed_by_button", message=imagine.output, button="✉️")
    upscale = ButtonOperator(task_id="upscale", message=imagine.output, button="U2")
    zoom_out = ButtonOperator(
        task_id="custom_zoom",
        message=upscale.output,
        button="Custom Zoom",
        zoom=1.5,
        ar="1:1",
        prompt="A lighthouse on a cliff at dusk, wide coastline, oil painting",
    )
