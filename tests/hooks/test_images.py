"""The image downloads of the hooks layer: no token on image hosts, the API's retry policy and status
mapping, ``Retry-After`` honoured, the bytes checked on every path, redirects only to http(s) and never
in a loop."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from airflow_provider_nextleg.exceptions import (
    NextLegBadRequestError,
    NextLegInputError,
    NextLegMalformedResponseError,
    NextLegRateLimitError,
)
from airflow_provider_nextleg.hooks.images import ImageDownloader, image_type
from airflow_provider_nextleg.hooks.nextleg import NextLegHook


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


Answer = tuple[int, dict[str, str], bytes]


class Host:
    """A local image host: per path, a list of answers (the last one repeats); every request recorded."""

    def __init__(self) -> None:
        self.url = ""
        self.answers: dict[str, list[Answer]] = {}
        self.seen: list[tuple[str, float, dict[str, str]]] = []

    def serve(self, path: str, *answers: Answer) -> str:
        self.answers[path] = list(answers)
        return self.url + path

    def hits(self, path: str) -> list[float]:
        return [when for seen, when, _ in self.seen if seen == path]


@pytest.fixture
def host() -> Iterator[Host]:
    state = Host()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.seen.append((self.path, time.monotonic(), dict(self.headers)))
            queue = state.answers.get(self.path) or [(404, {}, b"")]
            status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(status)
            for name, value in {"Content-Type": "image/png", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def collect(chunks: Iterable[bytes]) -> bytes:
    return b"".join(chunks)


def downloader(**changes: Any) -> ImageDownloader:
    options = {"max_bytes": 10_000_000, "timeout": 5.0, "max_attempts": 3, "retry_wait": 0.01} | changes
    return ImageDownloader(NextLegHook(), **options)


class TestImageDownloader:
    def test_an_image_is_streamed_to_its_writer_without_credentials(self, host: Host):
        url = host.serve("/a.png", (200, {}, png()))
        with downloader() as images:
            fetched = images.fetch(url, collect)
        assert (fetched.written, fetched.content_type, fetched.via) == (png(), "image/png", "direct")
        assert "Authorization" not in host.seen[0][2]

    def test_a_429_is_retried_after_its_retry_after(self, host: Host):
        url = host.serve("/busy.png", (429, {"Retry-After": "0.5"}, b""), (200, {}, png()))
        with downloader() as images:
            assert images.fetch(url, collect).written == png()
        first, second = host.hits("/busy.png")
        assert second - first >= 0.5 * 0.9

    def test_a_host_that_keeps_refusing_gives_a_rate_limit_error(self, host: Host):
        url = host.serve("/never.png", (429, {"Retry-After": "0.01"}, b""))
        with downloader() as images, pytest.raises(NextLegRateLimitError, match="gave up after 3 attempts"):
            images.fetch(url, collect)

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [(b"<html><body>Sign in</body></html>", "image/png"), (b"", "image/png"), (b"\x89PN", "image/png")],
    )
    def test_bytes_that_are_no_image_are_refused_whatever_the_header_says(
        self, host: Host, body: bytes, content_type: str
    ):
        url = host.serve("/fake.png", (200, {"Content-Type": content_type}, body))
        written: list[bytes] = []
        with downloader() as images, pytest.raises(NextLegMalformedResponseError, match="not a PNG"):
            images.fetch(url, lambda chunks: written.extend(chunks))
        assert written == []  # the writer saw nothing
        assert len(host.hits("/fake.png")) == 1  # not retried

    @pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://files.example/a.png", "data:,x"])
    def test_a_redirect_away_from_http_is_terminal(self, host: Host, location: str):
        url = host.serve("/moved.png", (302, {"Location": location}, b""))
        with downloader() as images, pytest.raises(NextLegBadRequestError, match="not an http"):
            images.fetch(url, collect)
        assert len(host.hits("/moved.png")) == 1

    def test_a_redirect_loop_is_terminal(self, host: Host):
        url = host.serve("/loop.png", (302, {"Location": "/loop.png"}, b""))
        with downloader() as images, pytest.raises(NextLegBadRequestError, match="in a loop"):
            images.fetch(url, collect)
        assert len(host.hits("/loop.png")) == 1

    def test_redirects_are_followed_a_few_times(self, host: Host):
        for hop in range(3):
            host.serve(f"/hop{hop}.png", (301, {"Location": f"/hop{hop + 1}.png"}, b""))
        host.serve("/hop3.png", (200, {}, png()))
        with downloader() as images:
            assert images.fetch(f"{host.url}/hop0.png", collect).written == png()

    def test_too_many_redirects_are_terminal(self, host: Host):
        for hop in range(10):
            host.serve(f"/far{hop}.png", (301, {"Location": f"/far{hop + 1}.png"}, b""))
        with downloader() as images, pytest.raises(NextLegBadRequestError, match="more than 5 times"):
            images.fetch(f"{host.url}/far0.png", collect)

    def test_an_oversized_image_stops_the_writer(self, host: Host):
        url = host.serve("/big.png", (200, {}, png() + b"\0" * 5000))
        with downloader(max_bytes=1000) as images, pytest.raises(NextLegInputError, match="max_bytes"):
            images.fetch(url, collect)

    @pytest.mark.parametrize(
        "changes",
        [
            {"max_bytes": 0},
            {"timeout": float("nan")},
            {"timeout": "5"},
            {"max_attempts": 0},
            {"retry_wait": -1},
        ],
    )
    def test_settings_that_cannot_work_are_refused(self, changes: dict[str, Any]):
        with pytest.raises(NextLegInputError, match="cannot work"):
            downloader(**changes)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n0000", "image/png"),
        (b"\xff\xd8\xff\xe0000000000", "image/jpeg"),
        (b"GIF89a000000", "image/gif"),
        (b"RIFF0000WEBP", "image/webp"),
        (b"<!doctype html>", None),
    ],
)
def test_image_type_reads_the_first_bytes(head: bytes, kind: str | None):
    assert image_type(head) == kind
