"""DAGs for what the UI shows of the operators (``tests/operators/test_links.py``): mapped tasks' labels,
the image link while a job runs and once done, and the saved images' link."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator
from airflow_provider_nextleg.operators.storage import SaveImagesOperator

PROMPTS = [
    "a red kite over a hill",
    "a very long prompt about a lighthouse keeper who paints the sea every morning at dawn, in oils",
]

with DAG(dag_id="nextleg_test_mapped_labels", schedule=None, default_args={"poll_interval": 0.02}):
    grids = ImagineOperator.partial(task_id="imagine", deferrable=False).expand(prompt=PROMPTS)
    ButtonOperator.partial(task_id="upscale", button="U2", deferrable=False).expand(message=grids.output)
    # Deferred: Airflow 3.1 renders the label once the task resumes, 3.3 from the start as well.
    ImagineOperator.partial(task_id="imagine_deferred", deferrable=True, worker_wait=0).expand(
        prompt=PROMPTS[:1]
    )
    # The DAG's own template wins over the operator's default.
    ImagineOperator.partial(
        task_id="imagine_own_label", deferrable=False, map_index_template="mine: {{ task.prompt | upper }}"
    ).expand(prompt=PROMPTS[:1])
    ImagineOperator(task_id="imagine_unmapped", prompt=PROMPTS[0], deferrable=False)

with DAG(dag_id="nextleg_test_links", schedule=None, default_args={"poll_interval": 0.02}):
    grid = ImagineOperator(task_id="imagine", prompt="a paper lantern at dusk", deferrable=False)
    SaveImagesOperator(
        task_id="save",
        result=grid.output,
        destination="{{ dag_run.conf['destination'] }}",
        outlets=[],
    )
