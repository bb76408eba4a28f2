"""save_job_images and write_contact_sheet against the emulator and a scriptable local image host."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk import ObjectStoragePath
from PIL import Image

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.exceptions import (
    NextLegBadRequestError,
    NextLegConnectionError,
    NextLegInputError,
    NextLegMalformedResponseError,
)
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.storage import Manifest, save_job_images, write_contact_sheet

from .conftest import SUBMITTER, Answer, ImageHost, done_result, png, wait_for_result

Finish = Callable[..., dict[str, Any]]


def local(path: ObjectStoragePath) -> Path:
    return Path(path.path)


def listing(folder: ObjectStoragePath) -> list[str]:
    """Every file under ``folder``, hidden ones included, relative to it."""
    root = local(folder)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def save(result: Any, destination: ObjectStoragePath, hook: NextLegHook, **kwargs: Any) -> Manifest:
    """save_job_images with quick retries."""
    return save_job_images(result, destination, hook, retry_wait=0.01, **kwargs)


class TestSaveFromTheEmulator:
    def test_grid_and_tiles_land_as_real_pngs_with_their_manifest(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook
    ):
        saving_task = {"dag_id": "pipeline", "run_id": "manual__1", "task_id": "save", "map_index": -1}
        manifest = save(grid, destination, hook, saved_by=saving_task)

        job = grid["message_id"]
        names = [f"{job}_grid.png"] + [f"{job}_{index}.png" for index in range(4)]
        assert listing(destination) == sorted([*names, f"{job}.json"])
        assert [image.name for image in manifest.files] == names
        # As on the real CDN, the grid comes straight from its host and the tiles answer a server 403, so
        # they come through POST /getImage.
        assert [image.fetched_via for image in manifest.files] == ["direct"] + ["getImage"] * 4
        for image in manifest.files:
            data = local(manifest.file_path(image)).read_bytes()
            assert hashlib.sha256(data).hexdigest() == image.sha256
            assert len(data) == image.size
            assert image.content_type == "image/png"
            with Image.open(io.BytesIO(data)) as picture:
                assert picture.format == "PNG"
                picture.load()
                assert picture.size == (512, 512)
        assert [image.source_url for image in manifest.files] == [grid["image_url"], *grid["image_urls"]]
        assert [(image.role, image.index) for image in manifest.files] == [
            ("grid", None),
            *(("image", index) for index in range(4)),
        ]

        written = json.loads(local(destination / f"{job}.json").read_text())
        assert written == manifest.to_dict()
        assert written["format"] == "nextleg-images/1"
        assert written["prompt"] == "a red fox in the snow"
        assert written["message_id"] == job
        assert written["type"] == "imagine"
        assert written["button"] is None
        assert written["button_message_id"] == grid["button_message_id"]
        assert written["buttons"] == grid["buttons"]
        assert written["ref"] == grid["ref"]  # as NextLeg echoed it, with the caller's own ref inside
        assert json.loads(written["ref"])["ref"] == "campaign-7"
        assert written["submitted_by"] == SUBMITTER
        assert written["saved_by"] == saving_task
        assert datetime.fromisoformat(written["created_at"]).tzinfo is not None
        assert Manifest.load(manifest.path) == manifest
        manifest.verify()

    def test_an_upscale_is_one_image_and_its_button_is_recorded(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, finish: Finish
    ):
        upscale = finish(hook.button("U2", grid["button_message_id"]))
        manifest = save(upscale, destination, hook, button="U2")

        job = upscale["message_id"]
        assert listing(destination) == [f"{job}.json", f"{job}_0.png"]
        assert manifest.button == "U2"
        assert manifest.type == "button"
        assert manifest.prompt == "a red fox in the snow"
        with Image.open(local(destination / f"{job}_0.png")) as picture:
            assert picture.size == (1024, 1024)

    def test_the_button_and_the_submitter_come_from_the_result(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, finish: Finish
    ):
        pressing = SUBMITTER | {"task_id": "variation"}
        variation = finish(hook.button("V3", grid["button_message_id"]), button="V3", submitted_by=pressing)
        manifest = save(variation, destination, hook)
        assert manifest.button == "V3"
        assert manifest.submitted_by == pressing
        assert save(variation, destination, hook, button="V4").button == "V4"  # the argument overrides

    def test_a_result_without_button_or_submitter_names_none(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook
    ):
        # A ref that looks like a job operator's is not parsed: the result alone names the submitter.
        result = grid | {"button": None, "submitted_by": None}
        manifest = save(result, destination, hook)
        assert (manifest.button, manifest.submitted_by) == (None, None)
        assert manifest.ref == grid["ref"]

    def test_a_cdn_403_is_fetched_through_get_image_with_the_token_only_there(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        emu.configure(faults={"cdn_forbidden": True})
        manifest = save(grid, destination, hook)

        assert {image.fetched_via for image in manifest.files} == {"getImage"}
        for image in manifest.files:
            with Image.open(local(manifest.file_path(image))) as picture:
                assert picture.format == "PNG"
            assert image.content_type == "image/png"
        counters = emu.counters()
        assert counters["requests"]["GET /cdn"] == 5
        assert counters["requests"]["POST /getImage"] == 5
        assert counters["unauthorized"] == {}  # the token reached the API's own endpoint

    def test_a_rerun_keeps_the_files_and_downloads_nothing(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        first = save(grid, destination, hook)
        before = {name: local(destination / name).stat().st_mtime_ns for name in listing(destination)}
        downloads = emu.counters()["requests"]["GET /cdn"]

        second = save(grid, destination, hook)

        assert second == first  # created_at included: the first save's time is kept
        assert emu.counters()["requests"]["GET /cdn"] == downloads
        after = {name: local(destination / name).stat().st_mtime_ns for name in listing(destination)}
        assert after.keys() == before.keys()  # no duplicates, no leftovers
        assert all(after[name] == before[name] for name in after if name.endswith(".png"))

    def test_a_rerun_replaces_only_a_file_that_changed(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        first = save(grid, destination, hook)
        tile = local(first.file_path(first.files[2]))
        tile.write_bytes(b"x" * first.files[2].size)  # same size, other bytes
        with pytest.raises(Exception, match="differs from its manifest"):
            first.verify()
        downloads = emu.counters()["requests"]["GET /cdn"]

        second = save(grid, destination, hook)

        assert emu.counters()["requests"]["GET /cdn"] == downloads + 1
        assert second.files == first.files
        second.verify()

    def test_an_unreadable_earlier_manifest_means_saving_everything_again(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        first = save(grid, destination, hook)
        local(ObjectStoragePath(first.path)).write_text("{not json")
        downloads = emu.counters()["requests"]["GET /cdn"]

        second = save(grid, destination, hook)

        assert emu.counters()["requests"]["GET /cdn"] == downloads + 5
        assert second.files == first.files

    @pytest.mark.parametrize(
        "result",
        [
            {"message_id": "abc"},  # submitted without waiting
            done_result("abc", None, []) | {"status": "running"},
            done_result("abc", None, []),
            done_result("abc", "https://x/grid.png", []) | {"image_urls": "https://x/0.png"},
            "not a result",
        ],
    )
    def test_a_result_without_images_is_refused(
        self, result: Any, destination: ObjectStoragePath, hook: NextLegHook
    ):
        with pytest.raises(NextLegInputError):
            save(result, destination, hook)
        assert not local(destination).exists()


class TestImageHostSafety:
    def test_the_token_goes_to_the_api_only_never_to_the_image_host(
        self, image_host: ImageHost, destination: ObjectStoragePath, monkeypatch: pytest.MonkeyPatch
    ):
        token = "nl-distinctive-token-7f3a9c"
        settings = EmulatorSettings(token=token, time_scale=0.002, rate_limit=False)
        with EmulatorServer(settings) as emu:
            monkeypatch.setenv("AIRFLOW_CONN_NEXTLEG_DEFAULT", emu.airflow_connection_json())
            hook = NextLegHook(retry_wait=0.01)
            finished = wait_for_result(hook, hook.imagine("a red fox in the snow"))
            # The image host serves the grid and answers 403 for the tiles, which then come through the
            # emulator's POST /getImage (it reads only the URL's path, which names the file).
            grid = image_host.serve(urlsplit(finished["image_url"]).path, Answer(png(colour="red")))
            tiles = [image_host.serve(urlsplit(url).path, Answer(b"", 403)) for url in finished["image_urls"]]
            result = finished | {"image_url": grid, "image_urls": tiles}

            manifest = save(result, destination, hook)

            assert [image.fetched_via for image in manifest.files] == ["direct"] + ["getImage"] * 4
            assert emu.counters()["requests"]["POST /getImage"] == 4
            assert emu.counters()["unauthorized"] == {}
            hook.close()
        assert len(image_host.requests) == 5
        for request in image_host.requests:
            assert "authorization" not in {name.lower() for name in request["headers"]}
            assert not any(token in value for value in request["headers"].values())

    def test_a_download_that_breaks_off_is_retried(
        self, image_host: ImageHost, destination: ObjectStoragePath, hook: NextLegHook
    ):
        body = png(256)
        failing, broken = Answer(b"<h1>503</h1>", 503, "text/html"), Answer(body, send=len(body) // 2)
        url = image_host.serve("/a.png", failing, broken, Answer(body))
        manifest = save(done_result("job1", url, [url]), destination, hook)

        assert len(image_host.requests_for("/a.png")) == 3
        assert local(destination / "job1_0.png").read_bytes() == body
        assert manifest.files[0].sha256 == hashlib.sha256(body).hexdigest()

    def test_a_download_that_keeps_breaking_off_leaves_no_file(
        self, image_host: ImageHost, destination: ObjectStoragePath, hook: NextLegHook
    ):
        body = png(256)
        url = image_host.serve("/a.png", Answer(body, send=len(body) // 2))

        with pytest.raises(NextLegConnectionError, match=r"gave up after 3 attempts"):
            save(done_result("job1", url, [url]), destination, hook, max_attempts=3)

        assert len(image_host.requests_for("/a.png")) == 3
        assert listing(destination) == []  # no file under the final name, no temporary left

    def test_a_failed_download_leaves_the_earlier_file_in_place(
        self, image_host: ImageHost, destination: ObjectStoragePath, hook: NextLegHook
    ):
        old, new = png(colour="red"), png(256, colour="blue")
        url = image_host.serve("/a.png", Answer(old), Answer(new, send=100))
        first = save(done_result("job1", url, [url]), destination, hook)
        local(destination / "job1_0.png").write_bytes(b"tampered")

        with pytest.raises(NextLegConnectionError):
            save(done_result("job1", url, [url]), destination, hook, max_attempts=1)

        assert local(destination / "job1_0.png").read_bytes() == b"tampered"
        assert listing(destination) == ["job1.json", "job1_0.png"]
        assert Manifest.load(first.path) == first

    @pytest.mark.parametrize("chunked", [False, True], ids=["announced", "streamed"])
    def test_an_image_over_max_bytes_is_refused_and_not_kept(
        self, chunked: bool, image_host: ImageHost, destination: ObjectStoragePath, hook: NextLegHook
    ):
        url = image_host.serve("/big.png", Answer(png(64) + bytes(200_000), chunked=chunked))

        with pytest.raises(NextLegInputError, match="more than max_bytes allows"):
            save(done_result("job1", url, [url]), destination, hook, max_bytes=100_000)

        assert len(image_host.requests) == 1  # not retried
        assert listing(destination) == []

    def test_max_bytes_also_bounds_images_fetched_through_get_image(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        emu.configure(faults={"cdn_forbidden": True})
        with pytest.raises(NextLegInputError, match="more than max_bytes allows"):
            save(grid, destination, hook, max_bytes=1000)
        assert listing(destination) == []

    @pytest.mark.parametrize(
        ("answer", "error", "pattern"),
        [
            (Answer(b"<html>login</html>", 200, "text/html"), NextLegMalformedResponseError, "HTTP 200"),
            (Answer(b"", 200, ""), NextLegMalformedResponseError, "HTTP 200"),
            (Answer(b"gone", 404, "text/plain"), NextLegBadRequestError, "HTTP 404"),
        ],
        ids=["html", "untyped", "expired"],
    )
    def test_an_answer_that_is_not_an_image_is_an_error_naming_the_url(
        self,
        answer: Answer,
        error: type[Exception],
        pattern: str,
        image_host: ImageHost,
        destination: ObjectStoragePath,
        hook: NextLegHook,
    ):
        url = image_host.serve("/a.png", answer)
        with pytest.raises(error, match=pattern) as raised:
            save(done_result("job1", url, [url]), destination, hook)
        assert url in str(raised.value)
        assert len(image_host.requests) == 1
        assert listing(destination) == []

    @pytest.mark.parametrize(
        ("message_id", "stem"),
        [
            ("../../escaped", "escaped"),
            ("/etc/cron.d/job", "etc_cron_d_job"),
            ("a\\..\\b", "a_b"),
            ("ok-ID_1", "ok-ID_1"),
        ],
    )
    def test_names_never_leave_the_destination(
        self,
        message_id: str,
        stem: str,
        image_host: ImageHost,
        destination: ObjectStoragePath,
        hook: NextLegHook,
        tmp_path: Path,
    ):
        url = image_host.serve("/x/../../../etc/passwd.png", Answer(png()))
        image_host.serve("/etc/passwd.png", Answer(png()))  # where a client that resolves dot segments asks
        save(done_result(message_id, url, [url]), destination, hook)

        assert listing(destination) == [f"{stem}.json", f"{stem}_0.png"]
        assert sorted(path.name for path in tmp_path.iterdir()) == ["images"]

    def test_a_message_id_with_no_usable_characters_is_refused(
        self, image_host: ImageHost, destination: ObjectStoragePath, hook: NextLegHook
    ):
        url = image_host.serve("/a.png", Answer(png()))
        with pytest.raises(NextLegInputError, match="no usable file name"):
            save(done_result("../..", url, [url]), destination, hook)
        assert image_host.requests == []
        assert not local(destination).exists()

    @pytest.mark.parametrize(
        "limits", [{"max_bytes": 0}, {"timeout": 0}, {"max_attempts": 0}, {"retry_wait": -1}]
    )
    def test_limits_that_cannot_work_are_refused(
        self, limits: dict[str, Any], grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook
    ):
        with pytest.raises(NextLegInputError, match="cannot work"):
            save_job_images(grid, destination, hook, **limits)
        assert not local(destination).exists()

    @pytest.mark.parametrize(
        "url", ["file:///etc/passwd", "ftp://example.com/a.png", "javascript:alert(1)", "//example.com/a.png"]
    )
    def test_only_http_sources_are_fetched(
        self, url: str, destination: ObjectStoragePath, hook: NextLegHook, emu: EmulatorServer
    ):
        with pytest.raises(NextLegInputError, match="not an http"):
            save(done_result("job1", url, [url]), destination, hook)
        assert not local(destination).exists()
        assert emu.counters()["requests"].get("POST /getImage") is None


class TestDestinations:
    """Destinations that only a change of configuration mends fail typed and terminal, before a download."""

    def test_an_unknown_protocol(self, grid: dict[str, Any], hook: NextLegHook, emu: EmulatorServer):
        with pytest.raises(NextLegInputError, match="cannot be opened") as raised:
            save_job_images(grid, "nosuchstore://bucket/images/", hook)
        assert raised.value.advice.startswith("Use a protocol")
        assert emu.counters()["requests"].get("POST /getImage") is None

    def test_a_regular_file_where_the_folder_should_be(
        self, grid: dict[str, Any], hook: NextLegHook, tmp_path: Path
    ):
        (tmp_path / "taken").write_text("not a folder")
        with pytest.raises(NextLegInputError, match="cannot write images into"):
            save_job_images(grid, f"file://{tmp_path}/taken", hook)

    def test_a_folder_inside_a_regular_file(self, grid: dict[str, Any], hook: NextLegHook, tmp_path: Path):
        (tmp_path / "taken").write_text("not a folder")
        with pytest.raises(NextLegInputError, match="cannot write images into"):
            save_job_images(grid, f"file://{tmp_path}/taken/images/", hook)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested")
    def test_an_unwritable_folder(self, grid: dict[str, Any], hook: NextLegHook, tmp_path: Path):
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(NextLegInputError, match="cannot write images into"):
            save_job_images(grid, f"file://{locked}/images/", hook)

    @pytest.mark.parametrize("destination", ["", "   ", 42, None])
    def test_not_a_path_at_all(self, destination: Any, grid: dict[str, Any], hook: NextLegHook):
        with pytest.raises(NextLegInputError, match="not a folder path or URI"):
            save_job_images(grid, destination, hook)

    def test_a_message_id_that_is_not_a_string(self, destination: ObjectStoragePath, hook: NextLegHook):
        with pytest.raises(NextLegInputError):
            save_job_images(done_result(42, None, ["http://127.0.0.1:9/a.png"]), destination, hook)  # type: ignore[arg-type]


class TestContactSheet:
    def test_shows_the_chain_with_the_saved_images(
        self, hook: NextLegHook, finish: Finish, destination: ObjectStoragePath, tmp_path: Path
    ):
        grid = finish(hook.imagine("a <b>bold</b> fox & a hen"))
        variation = finish(hook.button("V1", grid["button_message_id"]))
        upscale = finish(hook.button("U1", variation["button_message_id"]))
        manifests = [
            save(grid, destination / "run", hook),
            save(variation, destination / "run", hook, button="V1"),
            save(upscale, destination / "elsewhere", hook, button="U1"),
        ]

        page = write_contact_sheet(manifests, destination / "run")

        assert page.name == "contact_sheet.html"
        text = local(page).read_text()
        assert re.findall(r"<h2>\d\. ([^<]+)</h2>", text) == ["imagine", "V1", "U1"]
        assert "a &lt;b&gt;bold&lt;/b&gt; fox &amp; a hen" in text
        sources = re.findall(r"<img src='([^']+)'", text)
        assert len(sources) == 5 + 5 + 1
        for source in sources:
            assert not source.startswith(("/", "file:")), source  # relative: the folder can be moved
            assert (local(page).parent / source).resolve().is_file(), source
        assert sources[-1].startswith("../elsewhere/")

    def test_links_stay_relative_from_a_page_given_as_a_bare_path(
        self, grid: dict[str, Any], destination: ObjectStoragePath, hook: NextLegHook
    ):
        manifest = save(grid, destination / "run", hook)  # file:// paths
        page = write_contact_sheet([manifest], ObjectStoragePath(str(local(destination / "run"))))
        sources = re.findall(r"<img src='([^']+)'", local(page).read_text())
        assert sources
        assert not any(source.startswith(("/", "file:")) for source in sources), sources

    def test_writes_to_a_named_page(self, grid: dict[str, Any], destination: ObjectStoragePath, hook):
        manifest = save(grid, destination, hook)
        page = write_contact_sheet([manifest], destination / "sheets" / "fox.html", title="Fox")
        assert local(page).is_file()
        assert "<title>Fox</title>" in local(page).read_text()
