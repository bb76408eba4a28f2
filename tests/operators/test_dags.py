"""The operators and the sensor in real Airflow (``dag.test()`` on a migrated database) against the emulator.

``dag.test()`` runs each deferred task's trigger in-process, as a triggerer would (first event only).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState
from packaging.version import Version

from airflow_provider_nextleg.emulator import EmulatorServer, FaultSettings
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.operators.nextleg import QUICK_JOB_WORKER_WAIT
from airflow_provider_nextleg.storage import Manifest

AIRFLOW_VERSION = Version(__import__("airflow").__version__)
AIRFLOW_HAS_TASK_STATE = Version("3.3.0") <= AIRFLOW_VERSION
retries_after_deferral = pytest.mark.skipif(
    Version("3.2.0") > AIRFLOW_VERSION,
    reason="Airflow 3.1's dag.test() keeps next_method after a deferred try fails, so a retry replays the "
    "old trigger event instead of running execute(); its scheduler clears it",
)

pytestmark = pytest.mark.usefixtures("airflow_db")


def run(dag: Any, **conf: Any) -> tuple[Any, dict[str, Any]]:
    """Run a DAG once; return the run and its task instances by task id (and map index)."""
    dag_run = dag.test(run_conf=conf or None)
    tis = {}
    for ti in dag_run.get_task_instances():
        tis[ti.task_id if ti.map_index < 0 else (ti.task_id, ti.map_index)] = ti
    return dag_run, tis


def xcom(ti: Any, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
                key=key,
            )
            .one()
        )
        value = row.value
    if key.startswith("_link_"):
        return value  # an extra link is kept as its bare URL
    return json.loads(value) if isinstance(value, str) else value


def submissions(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [entry for entry in emulator.ledger() if entry["endpoint"] != "/v2/seed"]


class TestExampleDags:
    def test_every_example_loads(self, dags: dict[str, Any]):
        assert {
            "nextleg_imagine_variation_upscale",
            "nextleg_daily_batch",
            "nextleg_seed_and_custom_zoom",
            "nextleg_describe_then_imagine",
        } <= set(dags)

    def test_imagine_variation_upscale(self, dags, nextleg_emulator: EmulatorServer):
        dag_run, tis = run(dags["nextleg_imagine_variation_upscale"], prompt="a red kite over a hill")
        assert dag_run.state == DagRunState.SUCCESS
        grid, variation, upscale = (xcom(tis[task]) for task in ("imagine", "variation", "upscale"))
        assert grid["type"] == "imagine"
        assert grid["content"] == "a red kite over a hill"
        assert len(grid["image_urls"]) == 4
        assert variation["type"] == "button"
        assert "V1" in variation["buttons"]
        assert "Vary (Strong)" in upscale["buttons"]
        assert len(upscale["image_urls"]) == 1
        ledger = nextleg_emulator.ledger()
        assert [entry["endpoint"] for entry in ledger] == ["/v2/imagine", "/v2/button", "/v2/button"]
        assert [entry["payload"].get("button") for entry in ledger[1:]] == ["V1", "U1"]
        assert ledger[1]["payload"]["buttonMessageId"] == grid["button_message_id"]
        refs = [json.loads(entry["ref"]) for entry in ledger]
        submitters = [
            {
                "dag_id": dag_run.dag_id,
                "run_id": dag_run.run_id,
                "task_id": task,
                "map_index": -1,
                "try_number": 1,
            }
            for task in ("imagine", "variation", "upscale")
        ]
        assert refs == submitters  # the ref names the task instance, and nothing else is sent in it
        assert not nextleg_emulator.duplicate_submissions()
        # Each result names its button and its submitter; the manifests take both from the result, so
        # the DAG does not repeat the button to SaveImagesOperator.
        results = (grid, variation, upscale)
        assert [result["button"] for result in results] == [None, "V1", "U1"]
        assert [result["submitted_by"] for result in results] == submitters
        for task, result in zip(("save_grid", "save_variation", "save_upscale"), results, strict=True):
            manifest = Manifest.load(xcom(tis[task])["manifest"])
            assert (manifest.button, manifest.submitted_by) == (result["button"], result["submitted_by"])
        for task, result in zip(("imagine", "variation", "upscale"), results, strict=True):
            assert xcom(tis[task], "_link_NextLegImageLink") == result["image_url"]  # the UI's link

    def test_daily_batch_maps_prompts_and_upscales_all_four(self, dags, nextleg_emulator: EmulatorServer):
        nextleg_emulator.configure(concurrency=12, queue_length=30)
        prompts = ["a quiet harbour", "a birch forest"]
        dag_run, tis = run(dags["nextleg_daily_batch"], prompts=prompts)
        assert dag_run.state == DagRunState.SUCCESS
        upscales = [xcom(ti) for key, ti in tis.items() if isinstance(key, tuple) and key[0] == "upscale"]
        assert len(upscales) == 8
        assert all(len(result["image_urls"]) == 1 for result in upscales)
        pressed = sorted(
            entry["payload"]["button"] for entry in nextleg_emulator.ledger() if "button" in entry["payload"]
        )
        assert pressed == ["U1", "U1", "U2", "U2", "U3", "U3", "U4", "U4"]
        assert sorted(
            e["payload"]["msg"] for e in nextleg_emulator.ledger() if "msg" in e["payload"]
        ) == sorted(prompts)

    def test_seed_and_custom_zoom(self, dags, nextleg_emulator: EmulatorServer):
        dag_run, tis = run(dags["nextleg_seed_and_custom_zoom"])
        assert dag_run.state == DagRunState.SUCCESS
        seed, by_button, zoomed = xcom(tis["seed"]), xcom(tis["seed_by_button"]), xcom(tis["custom_zoom"])
        assert seed["seed"].isdigit()
        assert by_button["seed"] == seed["seed"]
        assert zoomed["type"] == "button"
        assert len(zoomed["image_urls"]) == 4  # a zoom out is a new grid
        [zoom] = [
            entry for entry in nextleg_emulator.ledger() if entry["payload"].get("button") == "Custom Zoom"
        ]
        assert zoom["payload"]["zoom"] == 1.5
        assert zoom["payload"]["ar"] == "1:1"

    def test_describe_then_imagine(self, dags, nextleg_emulator: EmulatorServer):
        dag_run, tis = run(dags["nextleg_describe_then_imagine"])
        assert dag_run.state == DagRunState.SUCCESS
        described, imagined = xcom(tis["describe"]), xcom(tis["imagine"])
        assert len(described["content"]) == 4
        assert imagined["content"] in {text.split(" ", 1)[1] for text in described["content"]}


class TestOperators:
    def test_quick_answers_are_waited_for_on_the_worker(self, dags, nextleg_emulator: EmulatorServer, capsys):
        nextleg_emulator.configure(min_duration=300.0, max_duration=300.0)  # the grid outlasts its 0.05 s
        dag_run, tis = run(dags["nextleg_test_quick_answers"])
        logs = "".join(capsys.readouterr())
        assert dag_run.state == DagRunState.SUCCESS
        grid, seed, described = (xcom(tis[task]) for task in ("imagine", "seed", "describe"))
        assert xcom(tis["sense"]) == grid | {"submitted_by": None}  # the sensor did not submit it
        assert seed["seed"]
        assert len(described["content"]) == 4
        for quick in (seed, described):
            wait = f"{QUICK_JOB_WORKER_WAIT:g} s"
            assert f"Waiting up to {wait} for NextLeg job {quick['message_id']} on this worker" in logs
        assert f"Waiting up to 0.05 s for NextLeg job {grid['message_id']} on this worker" in logs
        # Only the grid went to the triggerer: once, after its worker wait.
        assert re.findall(r"Waiting for NextLeg job (\w+) in the triggerer", logs) == [grid["message_id"]]

    def test_waiting_on_the_worker_follows_the_same_rules(self, dags, nextleg_emulator: EmulatorServer):
        dag_run, tis = run(dags["nextleg_test_chain_on_worker"])
        assert dag_run.state == DagRunState.SUCCESS
        assert all(ti.state == TaskInstanceState.SUCCESS for ti in tis.values())
        assert len(xcom(tis["upscale"])["image_urls"]) == 1
        assert len(nextleg_emulator.ledger()) == 3

    @retries_after_deferral
    def test_a_retry_resumes_the_job_instead_of_paying_again(self, dags, nextleg_emulator: EmulatorServer):
        # The job lasts 0.5 s: longer than the first try waits (0.3 s), shorter than both tries together.
        nextleg_emulator.configure(min_duration=50.0, max_duration=50.0)
        dag_run, tis = run(dags["nextleg_test_resume"])
        ti = tis["imagine"]
        assert ti.try_number == 2  # the first try gave up waiting
        if AIRFLOW_HAS_TASK_STATE:
            assert dag_run.state == DagRunState.SUCCESS
            assert len(submissions(nextleg_emulator)) == 1
            assert xcom(ti)["message_id"] == nextleg_emulator.ledger()[0]["messageId"]
            assert xcom(ti)["submitted_by"]["try_number"] == 1  # the try that submitted, not the retry
        else:  # no task state store before 3.3: every try submits
            assert len(submissions(nextleg_emulator)) == 2

    def test_clearing_a_finished_task_makes_a_new_job(self, dags, nextleg_emulator: EmulatorServer):
        dag = dags["nextleg_test_chain_on_worker"]
        run(dag)
        run(dag)
        assert len(submissions(nextleg_emulator)) == 6

    @pytest.mark.parametrize("code", ["BANNED_PROMPT", "INVALID_PARAMETER"])
    def test_terminal_code_fails_without_retries(self, dags, nextleg_emulator: EmulatorServer, code: str):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"sunflower": code}))
        dag_run, tis = run(dags["nextleg_test_failing_job"])
        assert dag_run.state == DagRunState.FAILED
        assert tis["imagine"].try_number == 1
        assert len(submissions(nextleg_emulator)) == 1

    @retries_after_deferral
    def test_retryable_code_fails_the_attempt_and_retries_submit_again(
        self, dags, nextleg_emulator: EmulatorServer
    ):
        nextleg_emulator.set_faults(
            FaultSettings(forced_codes={"sunflower": "FAILED_TO_PROCESS_YOUR_COMMAND"})
        )
        dag_run, tis = run(dags["nextleg_test_failing_job"])
        assert dag_run.state == DagRunState.FAILED
        assert tis["imagine"].try_number == 3
        assert len(submissions(nextleg_emulator)) == 3

    def test_bad_inputs_fail_before_anything_is_sent(
        self, dags, nextleg_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ):
        dag_run, tis = run(dags["nextleg_test_bad_inputs"])
        output = capsys.readouterr()
        logs = output.out + output.err
        assert dag_run.state == DagRunState.FAILED
        assert all(ti.state == TaskInstanceState.FAILED for ti in tis.values())
        assert tis["empty_prompt"].try_number == 1  # input errors are not retried
        assert nextleg_emulator.ledger() == []
        assert nextleg_emulator.counters()["requests"] == {}
        assert "prompt is empty" in logs
        assert "no_such_connection" in logs
        assert "button 'U3' is not offered" in logs
        assert "U1, U2, V1, V2" in logs
        assert "'buttons' should be a list of strings" in logs
        assert "zoom 2.5" in logs
        assert "XCom not found" not in logs  # a try that failed early pushed none, and none is read


class TestMessageSensor:
    def test_waits_for_a_job_submitted_without_waiting(self, dags, nextleg_emulator: EmulatorServer, capsys):
        # A 3 s job: still running when the sensor looks, so it defers.
        nextleg_emulator.configure(min_duration=300.0, max_duration=300.0)
        dag = dags["nextleg_test_submit_then_sense"]
        dag_run, tis = run(dag)
        assert dag_run.state == DagRunState.SUCCESS
        message_id = xcom(tis["imagine"])["message_id"]
        assert f"Waiting for NextLeg job {message_id} in the triggerer." in "".join(capsys.readouterr())
        assert xcom(tis["wait"])["message_id"] == message_id
        assert len(xcom(tis["wait"])["image_urls"]) == 4
        run(dag)  # a second run (or a clear) is a new job, even on Airflow 3.3's task state store
        assert len(submissions(nextleg_emulator)) == 2

    @pytest.mark.parametrize("mode", ["deferred", "poking"])
    def test_returns_the_finished_result(self, dags, nextleg_emulator: EmulatorServer, mode: str):
        message_id = NextLegHook().imagine("a tin robot").message_id
        dag_run, tis = run(dags[f"nextleg_test_sensor_{mode}"], message_id=message_id)
        assert dag_run.state == DagRunState.SUCCESS
        assert xcom(tis["wait"])["message_id"] == message_id
        assert xcom(tis["wait"])["buttons"][0] == "U1"

    def test_poking_logs_progress_when_it_changes(self, dags, nextleg_emulator: EmulatorServer, capsys):
        # A 5 s job: still running when the sensor starts, however slow the machine.
        nextleg_emulator.configure(min_duration=500.0, max_duration=500.0)
        dag_run, tis = run(dags["nextleg_test_submit_then_poke"])
        logs = "".join(capsys.readouterr())
        assert dag_run.state == DagRunState.SUCCESS
        message_id = xcom(tis["wait"])["message_id"]
        steps = re.findall(rf"NextLeg job {message_id} is (\d+)% done; preview: \S+/cdn/", logs)
        assert steps, "progress was never logged"
        assert len(steps) == len(set(steps)), steps  # each step once
        assert nextleg_emulator.counters()["requests"]["GET /v2/message"] > len(steps) + 10

    @pytest.mark.parametrize("mode", ["deferred", "poking"])
    def test_timeout_fails_or_skips_with_soft_fail(self, dags, nextleg_emulator: EmulatorServer, mode: str):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"stuck": "STALL"}))
        message_id = NextLegHook().imagine("a stuck job").message_id
        _dag_run, tis = run(dags[f"nextleg_test_sensor_{mode}"], message_id=message_id)
        assert tis["wait"].state == TaskInstanceState.FAILED
        assert tis["wait_soft"].state == TaskInstanceState.SKIPPED

    @pytest.mark.parametrize("mode", ["deferred", "poking"])
    @pytest.mark.parametrize("code", ["BANNED_PROMPT", "FAILED_TO_PROCESS_YOUR_COMMAND"])  # terminal, retried
    def test_failed_job_fails_the_sensor_or_skips_with_soft_fail(
        self, dags, nextleg_emulator: EmulatorServer, mode: str, code: str
    ):
        nextleg_emulator.set_faults(FaultSettings(forced_codes={"sunflower": code}))
        message_id = NextLegHook().imagine("a sunflower", ignore_prefilter=True).message_id
        _dag_run, tis = run(dags[f"nextleg_test_sensor_{mode}"], message_id=message_id)
        assert tis["wait"].state == TaskInstanceState.FAILED
        assert tis["wait_soft"].state == TaskInstanceState.SKIPPED
