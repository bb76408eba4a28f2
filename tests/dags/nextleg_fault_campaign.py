"""The chain the fault campaign runs on real Airflow services (``tests/e2e/test_fault_campaign.py``).

The quick-start chain (imagine, a variation, its upscale) as a user who expects failures writes it:
deferrable, with retries, each run's prompt from its conf. The campaign forces error codes on some
prompts and injects faults into the emulator's answers. The retries serve the failed jobs and the waits;
a submission whose fate is unknown fails its task without them, as a retry would pay again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator

with DAG(
    dag_id="nextleg_fault_campaign",
    schedule=None,
    params={"prompt": Param("a quiet harbour", type="string")},
    default_args={"retries": 4, "retry_delay": timedelta(seconds=3), "deferrable": True},
):
    grid = ImagineOperator(task_id="imagine", prompt="{{ params.prompt }}")
    variation = ButtonOperator(task_id="variation", message=grid.output, button="V1")
    ButtonOperator(task_id="upscale", message=variation.output, button="U1")
