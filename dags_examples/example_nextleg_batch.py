"""
A scheduled content pipeline: every day, imagine a batch of prompts and upscale all four images of each.

* The day's prompts come from ``prompts/daily_prompts.txt`` beside this file (one per line) unless the
  run's ``prompts`` param overrides them; in either, ``{ds}`` is replaced with the run's logical date.
* ``ImagineOperator.partial(...).expand(prompt=...)`` maps one task instance per prompt, and
  ``ButtonOperator.partial(...).expand(message=..., button=[...])`` presses ``U1``–``U4`` on every grid
  (the cross product): a batch of N prompts makes N grids and 4N upscales.
* The job tasks run in the pool :data:`NEXTLEG_POOL` (``nextleg``), which holds as many slots as the
  account runs jobs at once (3 on Standard, 12 on Pro) and counts deferred tasks, so at most that many
  jobs are in flight however many runs go at once (a backfill, the scheduled run, a manual one).
  Create it once, before the first run::

      airflow pools set nextleg 3 "NextLeg account: jobs at once" --include-deferred

  (or ``POST /api/v2/pools`` with ``"include_deferred": true``, or Admin > Pools in the UI). A pool
  without ``--include-deferred`` frees the slot while the task waits in the triggerer, that is, while
  its job runs, so it bounds only the first seconds of each job. Without the pool the scheduler leaves
  the job tasks ``scheduled``, logging "Tasks using non-existent pool 'nextleg' will not be scheduled"
  on every loop, until it exists (``dag.test()`` ignores pools). Only an attempt waiting for its retry
  holds no slot while its job may still run, so a retry can add a job beyond the pool.
* ``max_active_runs=1`` applies to the scheduled and manual runs only. A backfill's runs count against
  the backfill's own ``max_active_runs`` (the CLI's ``--max-active-runs``, 10 from the UI and the REST
  API) and start beside a scheduled run: the pool is what keeps them off the account's queue. Each run
  works from its own logical date, so a backfill makes the same prompts a scheduled run would have::

      airflow backfill create --dag-id nextleg_daily_batch --from-date 2026-11-01 --to-date 2026-11-03

  ``--dag-run-conf '{"prompts": ["... on {ds}"]}'`` gives every backfilled run these prompts instead,
  each with its own date (prompts without ``{ds}`` would be the same jobs, paid for once a day). On
  Airflow 3.1.0 that option fails (apache/airflow#56230): give the conf in the UI's form or in
  ``POST /api/v2/backfills`` (``dag_run_conf``) there.
* New DAGs start paused. The UI's backfill form offers "Unpause nextleg_daily_batch on trigger", ticked;
  ``airflow backfill create`` and ``POST /api/v2/backfills`` leave the DAG paused and its backfill runs
  ``queued`` until it is unpaused (``airflow dags unpause nextleg_daily_batch``). Unpausing also starts
  the schedule: the latest day's run (``catchup=False``) goes beside the backfill, in the same pool.
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
NEXTLEG_POOL = "nextleg"
"""The pool of the account's jobs: a slot per job the account runs at once, deferred tasks counted."""

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
            description="Prompts for this run ({ds}: its date); empty takes prompts/daily_prompts.txt.",
        ),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["nextleg", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def prompts_for_the_day(ds: str | None = None, params: dict | None = None) -> list[str]:
        """The run's prompts, the ``prompts`` param's or else the file's, with ``{ds}`` filled in."""
        given = (params or {}).get("prompts") or []
        if not given:
            lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
            given = [line for line in lines if line.strip() and not line.startswith("#")]
        return [prompt.replace("{ds}", ds or "") for prompt in given]

    grids = ImagineOperator.partial(task_id="imagine", pool=NEXTLEG_POOL).expand(prompt=prompts_for_the_day())
    upscales = ButtonOperator.partial(task_id="upscale", pool=NEXTLEG_POOL).expand(
        message=grids.output, button=["U1", "U2", "U3", "U4"]
    )
