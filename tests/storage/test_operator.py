"""SaveImagesOperator: its Asset, execute() with a minimal context, and the example DAGs under dag.test()."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.utils.state import DagRunState

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.operators.storage import SaveImagesOperator, destination_asset
from airflow_provider_nextleg.storage import Manifest

try:
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
except ImportError:  # Airflow before 3.2
    from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags_examples"
EXAMPLE = DAGS_FOLDER / "example_nextleg_assets.py"


class TestDestinationAsset:
    @pytest.mark.parametrize(
        ("destination", "uri"),
        [
            ("file:///data/nextleg/{{ ds }}/{{ run_id }}/", "file:///data/nextleg"),
            ("file:///data/nextleg/run-{{ run_id }}/", "file:///data/nextleg"),
            ("s3://aws_conn@bucket/nextleg/{% if true %}x{% endif %}/", "s3://bucket/nextleg"),
            ("/data/nextleg/", "file:///data/nextleg"),
            (ObjectStoragePath("file:///data/fixed/"), "file:///data/fixed"),
        ],
    )
    def test_is_the_fixed_part_of_the_destination(self, destination: Any, uri: str):
        assert destination_asset(destination) == Asset(uri)

    def test_a_destination_without_a_fixed_folder_needs_outlets(self):
        with pytest.raises(NextLegInputError, match="outlets"):
            SaveImagesOperator(task_id="save", result={}, destination="{{ var.value.images }}")
        explicit = SaveImagesOperator(
            task_id="save", result={}, destination="{{ var.value.images }}", outlets=[Asset("s3://b/k")]
        )
        assert explicit.outlets == [Asset("s3://b/k")]


class TestSaveImagesOperator:
    def test_execute_saves_and_puts_the_summary_on_the_asset_event(
        self, grid: dict[str, Any], tmp_path: Path
    ):
        operator = SaveImagesOperator(task_id="save", result=grid, destination=f"file://{tmp_path}/out/")
        ti = SimpleNamespace(dag_id="dag", run_id="manual__1", task_id="save", map_index=-1, try_number=2)
        context: Any = {"ti": ti, "outlet_events": OutletEventAccessors()}

        summary = operator.execute(context)

        job = grid["message_id"]
        assert summary == {
            "message_id": job,
            "manifest": f"file://{tmp_path}/out/{job}.json",
            "files": [f"file://{tmp_path}/out/{job}_{suffix}.png" for suffix in ("grid", 0, 1, 2, 3)],
        }
        assert json.loads(json.dumps(summary)) == summary
        assert operator.outlets == [Asset(f"file://{tmp_path}/out")]
        assert context["outlet_events"][operator.outlets[0]].extra == summary
        manifest = Manifest.load(summary["manifest"])
        manifest.verify()
        assert manifest.saved_by == {
            "dag_id": "dag",
            "run_id": "manual__1",
            "task_id": "save",
            "map_index": -1,
            "try_number": 2,
        }


def return_value(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = (
            session.query(XComModel.value)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key="return_value")
            .scalar()
        )
    return json.loads(value) if isinstance(value, str) else value


def asset_events(uri: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == uri)
            .all()
        )
        session.expunge_all()
    return events


def queued_runs(dag_id: str) -> int:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetDagRunQueue).filter_by(target_dag_id=dag_id).count()


@pytest.mark.usefixtures("airflow_db")
class TestExampleDags:
    @pytest.fixture
    def dags(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
        """
        The example's DAGs, saving under ``tmp_path`` and polling the emulator's quick jobs often.

        They are written to the database first (``dag.test()`` does that itself from Airflow 3.2 on, and
        needs it done before), unpaused, as a scheduler only queues asset-triggered runs of unpaused DAGs.
        """
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        monkeypatch.setenv("NEXTLEG_IMAGES_ROOT", f"file://{tmp_path}/images")
        bag = DagBag(dag_folder=EXAMPLE, bundle_path=DAGS_FOLDER)
        assert bag.import_errors == {}
        DagBundlesManager().sync_bundles_to_db()
        sync_bag_to_db(bag, "dags-folder", None)
        with create_session() as session:
            session.query(DagModel).filter(DagModel.dag_id.in_(list(bag.dags))).update(
                {"is_paused": False}, synchronize_session=False
            )
        for dag in bag.dags.values():
            for task in dag.tasks:
                if hasattr(task, "poll_interval"):
                    task.poll_interval = 0.02
        return bag.dags

    def test_saved_images_update_the_asset_and_the_consumer_reads_them(
        self, dags: dict[str, Any], nextleg_emulator: EmulatorServer, tmp_path: Path
    ):
        producer = dags["example_nextleg_assets_producer"]
        consumer = dags["example_nextleg_assets_consumer"]
        uri = f"file://{tmp_path}/images"
        assert producer.get_task("save_images").outlets == [Asset(uri)]

        produced = producer.test()

        assert produced.state == DagRunState.SUCCESS
        summary = return_value(produced, "save_images")
        [event] = asset_events(uri)
        assert event.extra == summary
        assert event.source_dag_id == "example_nextleg_assets_producer"
        assert event.source_task_id == "save_images"
        manifest = Manifest.load(summary["manifest"])
        manifest.verify()
        assert manifest.prompt == "a lighthouse on a cliff at dawn, watercolor"
        assert (manifest.submitted_by or {}).get("task_id") == "imagine"
        assert (manifest.saved_by or {}).get("run_id") == produced.run_id
        folder = Path(ObjectStoragePath(manifest.path).parent.path)
        assert folder.parent.parent == tmp_path / "images"
        assert folder.name == produced.run_id
        assert queued_runs("example_nextleg_assets_consumer") == 1  # the scheduler's next loop starts it

        consumed = consumer.test()

        assert consumed.state == DagRunState.SUCCESS
        assert return_value(consumed, "read_manifests") == [
            {"message_id": manifest.message_id, "prompt": manifest.prompt, "files": summary["files"]}
        ]
