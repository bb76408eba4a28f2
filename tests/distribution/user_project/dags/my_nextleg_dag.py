"""A user's DAG: imagine a grid, make variations of its first image (deferred, as in production)."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator

with DAG(dag_id="my_nextleg_chain", schedule=None, default_args={"deferrable": True}):
    grid = ImagineOperator(task_id="imagine", prompt="a paper lantern over a quiet river")
    ButtonOperator(task_id="variation", message=grid.output, button="V1")
