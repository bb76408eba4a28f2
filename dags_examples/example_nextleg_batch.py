"""
A scheduled content pipeline: every day, imagine a batch of prompts and upscale all four images of each.

* The day's prompts come from ``prompts/daily_prompts.txt`` beside this file (one per line; ``{ds}``
  is replaced with the run's logical date) unless the run's ``prompts`` param overrides them.
* ``ImagineOperator.partial(...).expand(prompt=...)`` maps one task instance per prompt, and
  ``ButtonOperator.partial(...).expand(message=..., button=[...])`` presses ``U1``–``U4`` on every grid
  (the cross product): a batch of N prompts makes N grids and 4N upscales.
* Safe to backfill (``airflow backfill create --dag-id nextleg_daily_batch --from-date ... --to-date ...``):
  each run works from its own logical date, and ``max_active_runs=1`` keeps runs from piling onto the
  account. To bound the jobs in flight, create a pool with as many slots as the account runs jobs at once
  (3 on Standard, 12 on Pro), ``airflow pools set nextleg 3 "NextLeg account"``, and add
  ``pool="nextleg"`` to the operators; without it NextLeg queues the surplus jobs itself (``JOB_QUEUED``).
* Retries are cheap and honest: a failed attempt whose job is still running resumes it, a retryable
  Midjourney failure (``QUEUE_FULL``, ``FAILED_TO_PROCESS_YOUR_COMMAND``...) submits again, and a
  terminal one (``BANNED_PROMPT``...) fails without retrying.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task

from airflow_provider_nextleg.operators.nextleg import ButtonOperator, ImagineOperator

PROMPTS_FILE = Path(__file__).parent / "prompts" / "daily_prompts.txt"

with DAG(
    dag_id="nextleg_daily_batch",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "prompts": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Prompts for this run; empty takes the day's prompts from prompts/daily_prompts.txt.",
        ),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["nextleg", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def prompts_for_the_day(ds: str | None = None, params: dict | None = None) -> list[str]:
        """The run's prompts: the ``prompts`` param, or the file's lines with ``{ds}`` filled in."""
        given = (params or {}).get("prompts") or []
        if given:
            return list(given)
        lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
        return [line.replace("{ds}", ds or "") for line in lines if line.strip() and not line.startswith("#")]

    grids = ImagineOperator.partial(task_id="imagine").expand(prompt=prompts_for_the_day())
    upscales = ButtonOperator.partial(task_id="upscale").expand(
        message=grids.output, button=["U1", "U2", "U3", "U4"]
    )
