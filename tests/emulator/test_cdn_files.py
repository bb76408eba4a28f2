"""The CDN's URL scheme: real-shaped, every URL the emulator writes parses back to the file it names, and
nothing else does."""

from __future__ import annotations

import re

import pytest

from airflow_provider_nextleg.emulator.protocol import DISCORD_CHANNEL, CdnFile

UUID = "4f1c2a7e-9b3d-4e8f-a1c2-3d4e5f6a7b8c"
EVERY_KIND = [
    CdnFile.image(UUID, "A red fox, in the snow --ar 16:9"),
    CdnFile.image(UUID, "!!!"),
    *(CdnFile(UUID, "tile", index) for index in range(4)),
    CdnFile(UUID, "preview", 31),
    CdnFile(UUID, "preview", 93),
]
SNOWFLAKE = r"\d{19}"


class TestCdnFile:
    @pytest.mark.parametrize("file", EVERY_KIND, ids=lambda file: f"{file.kind}-{file.number}-{file.stem}")
    def test_every_url_written_parses_back_to_its_file(self, file: CdnFile) -> None:
        url = file.url("http://127.0.0.1:8765")
        assert url.startswith("http://127.0.0.1:8765/cdn/")
        assert CdnFile.from_url(url) == file
        assert CdnFile.from_url(file.url("https://cdn.example.com")) == file  # whatever host it came from

    def test_the_grid_is_a_discord_attachment_named_after_the_prompt(self) -> None:
        url = CdnFile.image(UUID, "A red fox, in the snow --ar 16:9").url("http://h")
        assert re.fullmatch(
            rf"http://h/cdn/attachments/{DISCORD_CHANNEL}/{SNOWFLAKE}/"
            rf"emulator_a_red_fox_in_the_snow_ar_16_9_{UUID}\.png",
            url,
        )

    def test_tiles_are_on_midjourneys_cdn_path(self) -> None:
        assert CdnFile(UUID, "tile", 2).url("http://h") == f"http://h/cdn/{UUID}/0_2.png"

    def test_each_preview_step_is_a_webp_attachment_of_its_own(self) -> None:
        first, later = (CdnFile(UUID, "preview", step).url("http://h") for step in (31, 62))
        assert first.endswith(f"/{UUID}_grid_0.webp")
        assert first != later
        assert re.fullmatch(
            rf"http://h/cdn/attachments/{DISCORD_CHANNEL}/{SNOWFLAKE}/{UUID}_grid_0\.webp", first
        )
        assert CdnFile(UUID, "preview", 31).media_type == "image/webp"
        assert CdnFile(UUID, "tile", 0).media_type == "image/png"

    def test_the_real_hosts_paths_name_the_same_files(self) -> None:
        """``/getImage`` takes the URL a client holds, whatever host it names."""
        image = CdnFile.image(UUID, "a fox")
        discord = image.url("https://cdn.discordapp.com").replace("/cdn/attachments", "/attachments")
        assert CdnFile.from_url(discord) == image
        assert CdnFile.from_url(f"https://cdn.midjourney.com/{UUID}/0_1.png") == CdnFile(UUID, "tile", 1)

    @pytest.mark.parametrize(
        "url",
        [
            f"http://h/cdn/{UUID}/0_4.png",
            f"http://h/cdn/{UUID}/0_0.webp",
            f"http://h/cdn/{UUID}/0_0.png/more",
            "http://h/cdn/not-a-uuid/0_0.png",
            f"http://h/cdn/attachments/{DISCORD_CHANNEL}/1234567890123456789/emulator_{UUID}.png",
            f"http://h/cdn/attachments/1234567890123456789/{{a}}/emulator_{UUID}.png",
            f"http://h/cdn/attachments/{DISCORD_CHANNEL}/1234567890123456789/{UUID}_grid_0.webp",
            f"http://h/images/{UUID}/0_0.png",
            "http://h/cdn/job1/grid.png",
            "not a url",
            "http://[::1/cdn/x",
        ],
    )
    def test_urls_of_no_cdn_file_parse_to_none(self, url: str) -> None:
        if "{a}" in url:
            url = url.replace("{a}", CdnFile.image(UUID, "").path.split("/")[4])
        assert CdnFile.from_url(url) is None
