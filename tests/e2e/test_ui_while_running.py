"""What the Airflow UI shows of running job tasks, read from a real api-server (its REST API, which the UI
calls) while the run goes on: the image link of a task waiting on its worker follows the job's progress
images, then shows the result; a mapped task shows its prompt (from the start on Airflow 3.3, once it
ends on 3.1); a deferred task's link follows its job's progress images from the triggerer, then shows the
result once it resumes.

Figures: how many samples saw a progress image, on the worker and while deferred, printed.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from packaging.version import Version

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings

from .services import AirflowServices

pytestmark = pytest.mark.services

DAG_ID = "nextleg_ui_while_running"
PROMPTS = ["a red kite over a hill", "a birch forest in the snow"]
DAG_FILE = f'''
from airflow.sdk import DAG

from airflow_provider_nextleg.operators.nextleg import ImagineOperator

with DAG(dag_id="{DAG_ID}", schedule=None):
    ImagineOperator.partial(task_id="imagine", deferrable=False, poll_interval=0.5).expand(prompt={PROMPTS!r})
    ImagineOperator(
        task_id="deferred", prompt="a quiet harbour", deferrable=True, worker_wait=0, poll_interval=0.5
    )
'''
EARLY_LABELS = Version(__import__("airflow").__version__) >= Version("3.3.0")
"""Airflow 3.3 renders a mapped task's label as its try starts; 3.1 only once the try ends."""


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # Jobs of 10 to 15 s: several progress images, each seen by more than one sample, the deferred job's
    # too, seconds after its trigger starts however busy the triggerer is.
    settings = EmulatorSettings(time_scale=0.2, rate_limit=False, min_duration=50.0, max_duration=75.0)
    with EmulatorServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def services(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    home = tmp_path_factory.mktemp("airflow-ui")
    dags = home / "dags"
    dags.mkdir()
    (dags / "ui_while_running.py").write_text(textwrap.dedent(DAG_FILE))
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    with AirflowServices(home, emulator.airflow_connection_json(), dag_id=DAG_ID, env=env) as running:
        yield running


def image_link(services: AirflowServices, run_id: str, task_id: str, map_index: int = -1) -> str | None:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/links"
    links = services.api.get(path, params={"map_index": map_index}).json()["extra_links"]
    link: str | None = links["NextLeg image"]
    return link


def result_of(services: AirflowServices, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    value = services.api.get(path, params={"map_index": map_index}).json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def is_preview(link: str | None, final: str) -> bool:
    """Whether a link is one of the job's progress images (the emulator's CDN serves them), not its result."""
    return bool(link) and link != final and "/cdn/" in str(link)


def test_links_and_labels_while_the_jobs_run(services: AirflowServices):
    run_id = services.trigger()
    samples: list[dict[str, Any]] = []  # what the UI showed of each task instance, every half second
    deadline = time.monotonic() + 180
    while services.run_state(run_id) not in ("success", "failed"):
        assert time.monotonic() < deadline, services.logs()
        for ti in services.task_instances(run_id):
            if ti["state"] in ("running", "deferred"):
                samples.append(
                    {
                        "key": (ti["task_id"], ti["map_index"]),
                        "state": ti["state"],
                        "label": ti.get("rendered_map_index"),
                        "link": image_link(services, run_id, ti["task_id"], ti["map_index"]),
                    }
                )
        time.sleep(0.5)
    assert services.run_state(run_id) == "success", services.logs()

    finals = {key: result_of(services, run_id, *key)["image_url"] for key in (("imagine", 0), ("imagine", 1))}
    finals[("deferred", -1)] = result_of(services, run_id, "deferred")["image_url"]
    for (task_id, map_index), final in finals.items():
        assert image_link(services, run_id, task_id, map_index) == final  # once done: the result
    on_worker = [sample for sample in samples if sample["key"][0] == "imagine"]
    previews = [s for s in on_worker if is_preview(s["link"], finals[s["key"]])]
    print(
        f"\n{len(previews)} of {len(on_worker)} samples of tasks running on a worker showed a progress image"
    )
    assert {s["key"] for s in previews} == {("imagine", 0), ("imagine", 1)}, samples
    # While deferred (its worker saw no image, with worker_wait=0), the trigger writes the link.
    deferred = [s for s in samples if s["key"] == ("deferred", -1) and s["state"] == "deferred"]
    deferred_previews = [s for s in deferred if is_preview(s["link"], finals[("deferred", -1)])]
    print(f"{len(deferred_previews)} of {len(deferred)} samples of the deferred task showed a progress image")
    assert deferred_previews, deferred

    labels = {
        (ti["task_id"], ti["map_index"]): ti["rendered_map_index"] for ti in services.task_instances(run_id)
    }
    assert labels[("imagine", 0)] == PROMPTS[0]
    assert labels[("imagine", 1)] == PROMPTS[1]
    if EARLY_LABELS:  # the label comes as the try starts, seconds before its job ends
        labelled = {s["key"] for s in on_worker if s["label"] == PROMPTS[s["key"][1]]}
        assert labelled == {("imagine", 0), ("imagine", 1)}, on_worker
