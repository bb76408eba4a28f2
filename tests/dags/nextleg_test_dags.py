"""DAGs that the operator tests run with ``dag.test()`` (a DAG must live in a configured bundle for that).

Each one isolates one behaviour; the tests set the emulator up (forced codes, durations) before running it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import (
    MESSAGE_ID_XCOM_KEY,
    SEED_BUTTON,
    ButtonOperator,
    DescribeOperator,
    ImagineOperator,
)
from airflow_provider_nextleg.sensors.nextleg import MessageSensor

with DAG(dag_id="nextleg_test_chain_on_worker", schedule=None, default_args={"deferrable": False}):
    grid = ImagineOperator(task_id="imagine", prompt="a paper boat on a pond")
    variation = ButtonOperator(task_id="variation", message=grid.output, button="V1")
    ButtonOperator(task_id="upscale", message=variation.output, button="U1")

with DAG(dag_id="nextleg_test_submit_then_sense", schedule=None):
    # Submit without waiting, then wait with the sensor: the pattern for jobs started elsewhere.
    submitted = ImagineOperator(task_id="imagine", prompt="a lantern in the fog", wait_for_completion=False)
    MessageSensor(
        task_id="wait", message_id=submitted.output[MESSAGE_ID_XCOM_KEY], deferrable=True, poke_interval=0.05
    )

with DAG(dag_id="nextleg_test_submit_then_poke", schedule=None):
    submitted = ImagineOperator(task_id="imagine", prompt="a tin robot", wait_for_completion=False)
    MessageSensor(
        task_id="wait",
        message_id=submitted.output[MESSAGE_ID_XCOM_KEY],
        deferrable=False,
        poke_interval=0.05,
        timeout=60,
    )

with DAG(dag_id="nextleg_test_quick_answers", schedule=None, default_args={"deferrable": True}):
    # Quick answers are waited for on the worker; the grid outlasts its short worker wait and defers; the
    # sensor finds the grid done at its first look.
    grid = ImagineOperator(task_id="imagine", prompt="a kite in the wind", worker_wait=0.05)
    ButtonOperator(task_id="seed", message=grid.output, button=SEED_BUTTON)
    DescribeOperator(task_id="describe", url="https://example.com/kite.png")
    MessageSensor(task_id="sense", message_id=grid.output[MESSAGE_ID_XCOM_KEY], poke_interval=0.05)

with DAG(dag_id="nextleg_test_resume", schedule=None):
    # The first try gives up waiting after 0.3 s; the retry must find the job it submitted.
    ImagineOperator(
        task_id="imagine",
        prompt="a slow glacier",
        wait_timeout=0.3,
        retries=1,
        retry_delay=timedelta(0),
        deferrable=True,
    )

with DAG(dag_id="nextleg_test_failing_job", schedule=None):
    # The tests force an error code on prompts containing "sunflower".
    ImagineOperator(
        task_id="imagine",
        prompt="a sunflower field",
        retries=2,
        retry_delay=timedelta(0),
        deferrable=True,
    )

with DAG(dag_id="nextleg_test_bad_inputs", schedule=None, params={"prompt": "", "zoom": 2.5}):
    ImagineOperator(task_id="empty_prompt", prompt="{{ params.prompt }}", retries=3)
    ImagineOperator(task_id="unknown_connection", prompt="a cat", nextleg_conn_id="no_such_connection")
    offered = {
        "message_id": "grid0000000000000000",
        "status": "done",
        "button_message_id": "bmid0000000000000000",
        "buttons": ["U1", "U2", "V1", "V2"],
    }
    ButtonOperator(task_id="button_not_offered", message=offered, button="U3")
    # "U1" is in the string "U1,U2", but a string is not a list of buttons.
    ButtonOperator(task_id="buttons_not_a_list", message={**offered, "buttons": "U1,U2"}, button="U1")
    ButtonOperator(
        task_id="zoom_out_of_range",
        message={**offered, "buttons": ["Custom Zoom"]},
        button="Custom Zoom",
        zoom=2.5,
    )

for deferrable in (True, False):
    mode = "deferred" if deferrable else "poking"
    with DAG(dag_id=f"nextleg_test_sensor_{mode}", schedule=None, params={"message_id": ""}):
        MessageSensor(
            task_id="wait",
            message_id="{{ params.message_id }}",
            deferrable=deferrable,
            poke_interval=0.05,
            timeout=2,
            expire_mins=60,  # a stalled job stays unfinished (36 s at the tests' time scale), not incomplete
        )
        MessageSensor(
            task_id="wait_soft",
            message_id="{{ params.message_id }}",
            deferrable=deferrable,
            poke_interval=0.05,
            timeout=2,
            soft_fail=True,
            expire_mins=60,
        )
