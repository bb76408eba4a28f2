"""The DAG of ``tests/operators/test_uncertain_submission.py``: one submission, with retries to spare, so
the test sees whether a submission of unknown fate spends them (it must not: a retry would pay again)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import ImagineOperator

with DAG(dag_id="nextleg_test_uncertain_submission", schedule=None):
    ImagineOperator(task_id="imagine", prompt="a lighthouse at dawn", retries=3, retry_delay=timedelta(0))
