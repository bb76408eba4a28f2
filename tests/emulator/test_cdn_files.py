"""The CDN's URL scheme: every URL the emulator writes parses back to the file it names, and nothing else."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg.emulator.protocol import CdnFile

EVERY_KIND = [
    CdnFile("job1", "grid"),
    CdnFile("job1", "upscale"),
    *(CdnFile("job1", "quadrant", index) for index in range(4)),
    CdnFile("job1", "progress", 31),
    CdnFile("job1", "progress", 93),
]


class TestCdnFile:
    @pytest.mark.parametrize("file", EVERY_KIND, ids=lambda file: file.name)
    def test_every_url_written_parses_back_to_its_file(self, file: CdnFile) -> None:
        url = file.url("http://127.0.0.1:8765")
        assert url == f"http://127.0.0.1:8765/cdn/job1/{file.name}"
        assert CdnFile.from_url(url) == file
        assert CdnFile.from_url(file.url("https://cdn.example.com")) == file  # whatever host it came from

    @pytest.mark.parametrize(
        "url",
        [
            "http://h/cdn/job1/0_4.png",
            "http://h/cdn/job1/progress_100.png",
            "http://h/cdn/job1/grid.jpg",
            "http://h/cdn/job1/grid.png/more",
            "http://h/images/job1/grid.png",
            "http://h/cdn//grid.png",
            "not a url",
        ],
    )
    def test_urls_of_no_cdn_file_parse_to_none(self, url: str) -> None:
        assert CdnFile.from_url(url) is None
