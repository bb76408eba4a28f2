"""What the UI shows of the operators: the image link while a job runs and once done, the saved images'
link, and mapped tasks' labels; in real Airflow (``dag.test()`` against the emulator) and unit by unit."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.utils.state import DagRunState

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.get_provider_info import get_provider_info
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.operators import links
from airflow_provider_nextleg.operators.links import (
    LABEL_LENGTH,
    NextLegImageLink,
    SavedImagesLink,
    browsable_url,
    shortened,
    show_progress_image,
    wait_showing_progress,
)
from airflow_provider_nextleg.polling import schedulers
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger

LINK_KEY = NextLegImageLink().xcom_key
SLOW_JOB = {"min_duration": 200.0, "max_duration": 200.0}
"""2 s jobs at the session emulator's time scale: seen running at several progress steps, however slow."""


def shown_in_ui(ti: Any, name: str) -> str | None:
    """What the API server answers for a task instance's extra link: its task deserialized from the
    metadata database, its link read from the stored XCom (Airflow runs no link code there)."""
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(ti.dag_id)
    assert dag is not None
    link: str | None = dag.get_task(ti.task_id).get_extra_links(ti, name)
    return link


def stored(ti: Any, key: str = LINK_KEY) -> Any:
    """An XCom of a task instance as the database holds it now (the image link's by default)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel.value)
            .filter_by(
                dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index, key=key
            )
            .one_or_none()
        )
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except (TypeError, ValueError):  # a link Airflow stored as its bare URL
        return row[0]


class TestImageLink:
    @pytest.mark.parametrize(
        ("image_url", "progress_image_url", "link"),
        [
            ("https://cdn/grid.png", "https://cdn/preview.png", "https://cdn/grid.png"),
            (None, "https://cdn/preview.png", "https://cdn/preview.png"),
            (None, None, ""),
        ],
    )
    def test_the_result_once_done_else_the_latest_progress_image(
        self, image_url: str | None, progress_image_url: str | None, link: str
    ):
        operator = SimpleNamespace(image_url=image_url, progress_image_url=progress_image_url)
        assert NextLegImageLink().get_link(operator, ti_key=None) == link  # type: ignore[arg-type]

    def test_a_progress_image_is_stored_at_once_under_the_links_key(self, monkeypatch: pytest.MonkeyPatch):
        stored_xcoms: list[tuple[Any, ...]] = []
        monkeypatch.setattr(
            links.BaseXCom, "set", lambda *args, **kwargs: stored_xcoms.append((args, kwargs))
        )
        ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=2)
        operator = SimpleNamespace(progress_image_url=None, log=None)
        show_progress_image(operator, ti, "https://cdn/preview-31.png")  # type: ignore[arg-type]
        place = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": 2}
        assert stored_xcoms == [(("_link_NextLegImageLink", "https://cdn/preview-31.png"), place)]
        assert operator.progress_image_url == "https://cdn/preview-31.png"

    def test_a_store_that_fails_only_delays_the_link(self, monkeypatch: pytest.MonkeyPatch):
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("supervisor gone")

        monkeypatch.setattr(links.BaseXCom, "set", refuse)
        ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
        operator = SimpleNamespace(progress_image_url=None, log=SimpleNamespace(debug=lambda *args: None))
        show_progress_image(operator, ti, "https://cdn/p.png")  # type: ignore[arg-type]
        assert operator.progress_image_url == "https://cdn/p.png"

    def test_the_provider_registers_both_links(self):
        import importlib

        for path in get_provider_info()["extra-links"]:
            module, _, name = path.rpartition(".")
            assert issubclass(getattr(importlib.import_module(module), name), links.BaseOperatorLink)
        assert {NextLegImageLink.name, SavedImagesLink.name} == {"NextLeg image", "Saved images"}


class TestWaitShowingProgress:
    async def test_each_new_progress_image_from_the_waits_own_polls(
        self, nextleg_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ):
        nextleg_emulator.configure(**SLOW_JOB)
        message_id = NextLegHook().imagine("a lighthouse at dawn").message_id
        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=0.01)
        shown: list[str] = []
        watched: set[int] = set()

        async def sample() -> None:
            while True:
                watched.update(scheduler.watched for scheduler in schedulers())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            event = await wait_showing_progress(trigger, shown.append)
        finally:
            sampler.cancel()
        assert event["status"] == "done"
        captured = capsys.readouterr()
        previews = re.findall(
            r"% done; preview: ([^\s\x1b]+)", captured.out + captured.err
        )  # no colour codes
        assert shown, "no progress image was shown"
        assert shown == previews  # each image the wait saw (the trigger logs them), once
        assert watched == {1}  # the follower hears the trigger's polls of the one message: no poll of its own

    async def test_the_wait_returns_once_its_last_show_is_over(self, nextleg_emulator: EmulatorServer):
        # A show talks to the task's supervisor from a thread; the task talks to it again as soon as the
        # wait returns, and Airflow 3.1's supervisor takes one caller at a time.
        nextleg_emulator.configure(**SLOW_JOB)
        message_id = NextLegHook().imagine("a windmill at noon").message_id
        started: list[str] = []
        finished: list[str] = []

        def slow_show(url: str) -> None:
            started.append(url)
            time.sleep(0.4)  # outlasts the job's next progress step: a show is under way as it ends
            finished.append(url)

        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=0.01)
        assert (await wait_showing_progress(trigger, slow_show))["status"] == "done"
        assert started
        assert finished == started

    async def test_a_wait_that_ends_before_the_job_leaves_nothing_running(
        self, nextleg_emulator: EmulatorServer
    ):
        nextleg_emulator.configure(**SLOW_JOB)
        message_id = NextLegHook().imagine("a slow glacier").message_id
        trigger = NextLegMessageTrigger(message_id=message_id, poll_interval=0.01)
        assert await wait_showing_progress(trigger, lambda url: None, within=0.2) is None
        assert schedulers() == []
        # The same trigger, deferred as the operator would, still ends with the result.
        assert (await wait_showing_progress(trigger, lambda url: None))["status"] == "done"

    async def test_a_job_completing_by_webhook_is_not_followed(self, monkeypatch: pytest.MonkeyPatch):
        async def waited(trigger: Any, within: Any) -> dict[str, Any]:
            return {"status": "done"}

        def follow(*args: Any) -> None:
            raise AssertionError("followed a job that is not polled")

        monkeypatch.setattr(links, "wait_in_process", waited)
        monkeypatch.setattr(links, "_ProgressFollower", follow)
        trigger = NextLegMessageTrigger(message_id="m1", job_key="k1")
        assert await wait_showing_progress(trigger, lambda url: None) == {"status": "done"}


class TestSavedImagesLink:
    @pytest.mark.parametrize(
        ("path", "url"),
        [
            (
                "s3://aws_default@my-bucket/nextleg/run 1/abc.json",
                "https://s3.console.aws.amazon.com/s3/object/my-bucket?prefix=nextleg%2Frun%201%2Fabc.json",
            ),
            (
                "gs://my-bucket/nextleg/abc.json",
                "https://console.cloud.google.com/storage/browser/_details/my-bucket/nextleg/abc.json",
            ),
            ("file:///data/nextleg/abc.json", ""),
            ("/data/nextleg/abc.json", ""),
            ("memory://nextleg/abc.json", ""),
        ],
    )
    def test_a_browsable_url_where_the_storage_has_one(self, path: str, url: str):
        assert browsable_url(ObjectStoragePath(path)) == url

    def test_no_link_before_anything_was_saved(self):
        assert SavedImagesLink().get_link(SimpleNamespace(), ti_key=None) == ""  # type: ignore[arg-type]


class TestLabels:
    def test_a_long_prompt_is_cut_on_one_line(self):
        label = shortened("a lighthouse\n keeper " * 20)
        assert len(label) == LABEL_LENGTH
        assert label.endswith("…")
        assert "\n" not in label
        assert shortened("a fox") == "a fox"

    def test_a_button_names_what_it_is_pressed_on(self):
        from airflow_provider_nextleg.operators.nextleg import ButtonOperator

        on_result = ButtonOperator(task_id="u", message={"message_id": "m1", "content": "a fox"}, button="U2")
        on_text_less = ButtonOperator(task_id="v", message={"message_id": "m1", "content": None}, button="V1")
        on_id = ButtonOperator(task_id="w", message="bm-123", button="U1")
        assert on_result.map_index_label() == "U2 of a fox"
        assert on_text_less.map_index_label() == "V1 of m1"
        assert on_id.map_index_label() == "U1 of bm-123"


@pytest.mark.usefixtures("airflow_db")
class TestOnAirflow:
    def test_mapped_tasks_show_their_prompt_or_button(
        self, dags: dict[str, Any], nextleg_emulator: EmulatorServer
    ):
        from tests.dags.nextleg_link_dags import PROMPTS

        dag_run = dags["nextleg_test_mapped_labels"].test()
        assert dag_run.state == DagRunState.SUCCESS
        labels = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in dag_run.get_task_instances()}
        short, long = PROMPTS[0], shortened(PROMPTS[1])
        assert len(long) == LABEL_LENGTH
        assert labels == {
            ("imagine", 0): short,
            ("imagine", 1): long,
            ("upscale", 0): f"U2 of {short}",
            ("upscale", 1): f"U2 of {long}",
            ("imagine_deferred", 0): short,
            ("imagine_own_label", 0): f"mine: {short.upper()}",
            ("imagine_unmapped", -1): labels[("imagine_unmapped", -1)],
        }
        assert not labels[("imagine_unmapped", -1)]  # an unmapped task keeps its plain name

    def test_the_link_shows_progress_while_the_job_runs_then_the_result(
        self,
        dags: dict[str, Any],
        nextleg_emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ):
        nextleg_emulator.configure(**SLOW_JOB)
        seen: list[tuple[str, str | None]] = []  # each progress image, and the link stored just after it

        def show(operator: Any, ti: Any, image_url: str) -> None:
            show_progress_image(operator, ti, image_url)
            seen.append((image_url, stored(ti)))

        monkeypatch.setattr(links, "show_progress_image", show)
        dag_run = dags["nextleg_test_links"].test(run_conf={"destination": tmp_path.as_uri()})
        assert dag_run.state == DagRunState.SUCCESS
        tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
        assert seen, "no progress image was shown while the job ran"
        assert all(url == link for url, link in seen), seen  # the UI's link is the new image at once
        result = stored(tis["imagine"], "return_value")
        assert shown_in_ui(tis["imagine"], "NextLeg image") == result["image_url"]
        assert (tmp_path / f"{result['message_id']}.json").exists()
        assert not shown_in_ui(tis["save"], "Saved images")  # a local folder: no link a browser opens
