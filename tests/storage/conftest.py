"""Fixtures of the storage tests: the emulator and a hook on it, finished jobs, and a scriptable image host.

The emulator comes from the provider's pytest plugin (``nextleg_emulator``: reset per test, and
``AIRFLOW_CONN_NEXTLEG_DEFAULT`` pointing at it). The database fixture ``airflow_db`` is the shared one of
``tests/conftest.py``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from PIL import Image

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.models import JobResult, MessageStatus, SubmitResult, TaskIdentity, job_ref

#: A 30 to 75 s job lasts 60 to 150 ms.
TIME_SCALE = 0.002

SUBMITTER: TaskIdentity = {
    "dag_id": "pipeline",
    "run_id": "manual__1",
    "task_id": "imagine",
    "map_index": -1,
    "try_number": 1,
}
"""The task instance that submits the tests' jobs, as a job operator names itself in its ref and result."""


def png(size: int = 64, colour: str = "teal") -> bytes:
    """A real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def done_result(message_id: str, image_url: str | None, image_urls: list[str]) -> dict[str, Any]:
    """A finished result in ``JobResult.to_xcom()`` form, for images served by :class:`ImageHost`."""
    return JobResult(
        message_id=message_id,
        status=MessageStatus.DONE,
        button_message_id=f"{message_id}-buttons",
        buttons=("U1", "V1"),
        image_url=image_url,
        image_urls=tuple(image_urls),
        content="a test prompt",
        type="imagine",
    ).to_xcom()


@dataclass
class Answer:
    """What :class:`ImageHost` answers to one request.

    :param body: the body.
    :param status: the HTTP status.
    :param content_type: the ``Content-Type``.
    :param send: how many bytes of ``body`` to send before closing the connection (all by default);
        ``Content-Length`` still announces the whole body, so the client sees the download break off.
    :param chunked: send without ``Content-Length``, in chunks.
    """

    body: bytes
    status: int = 200
    content_type: str = "image/png"
    send: int | None = None
    chunked: bool = False


@dataclass
class ImageHost:
    """A local HTTP server standing for an image CDN: scripted answers per path, every request recorded.

    ``host.serve("/a.png", Answer(...), Answer(...))`` answers the first request for ``/a.png`` with the
    first answer, and every later one with the last.
    """

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, list[Answer]] = field(default_factory=dict)

    def serve(self, path: str, *answers: Answer) -> str:
        self.answers[path] = list(answers)
        return self.url + path

    def requests_for(self, path: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["path"] == path]

    def answer(self, path: str) -> Answer:
        queue = self.answers.get(path) or [Answer(b"not found", 404, "text/plain")]
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            host.requests.append({"path": self.path, "headers": dict(self.headers)})
            answer = host.answer(self.path)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(answer.body), 4096):
                    chunk = answer.body[start : start + 4096]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body[: answer.send])
            if answer.send is not None:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield host
    server.shutdown()
    server.server_close()


@pytest.fixture
def emu(nextleg_emulator: EmulatorServer) -> EmulatorServer:
    """The plugin's clean per-test emulator, made faster."""
    nextleg_emulator.configure(time_scale=TIME_SCALE)
    return nextleg_emulator


@pytest.fixture
def hook(emu: EmulatorServer) -> Iterator[NextLegHook]:
    """A hook on the emulator with quick retries."""
    hook = NextLegHook(retry_wait=0.01)
    yield hook
    hook.close()


def wait_for_result(hook: NextLegHook, submitted: SubmitResult, **named: Any) -> dict[str, Any]:
    """
    Wait for a submitted job; return its result as a job operator would (``to_xcom()``).

    :param named: what the operator adds to the result: ``button``, ``submitted_by``.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = hook.get_message(submitted.message_id)
        if message.status.is_terminal:
            return replace(JobResult.from_message(message), **named).to_xcom()
        time.sleep(0.02)
    raise AssertionError(f"job {submitted.message_id} did not finish")


@pytest.fixture
def finish(hook: NextLegHook) -> Callable[..., dict[str, Any]]:
    """:func:`wait_for_result` with this test's hook."""

    def wait(submitted: SubmitResult, **named: Any) -> dict[str, Any]:
        return wait_for_result(hook, submitted, **named)

    return wait


@pytest.fixture
def grid(hook: NextLegHook, finish: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A finished imagine job, submitted with a job operator's ``ref``, its result naming its submitter."""
    return finish(
        hook.imagine("a red fox in the snow", ref=job_ref(SUBMITTER, "campaign-7")), submitted_by=SUBMITTER
    )


@pytest.fixture
def destination(tmp_path: Any) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{tmp_path}/images/")
