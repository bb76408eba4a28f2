"""What the webhook tests share: a receiver served by uvicorn in a thread, results shaped like NextLeg's,
and the connections the receiver reads (in the environment, as Airflow's secrets lookup finds them)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn

from airflow_provider_nextleg.webhooks import tokens

CONN_ID = "nextleg_hooks"
SECRET = "whsec-" + "7f3a9c1e5b2d4f60a8e1c3b5d7f9a0b2"


def nextleg_connection(secret: str | None = SECRET, url: str | None = None, **extra: Any) -> str:
    """A nextleg connection (JSON, for ``AIRFLOW_CONN_<ID>``) with the webhook extras."""
    fields = {key: value for key, value in {"webhook_secret": secret, "webhook_url": url}.items() if value}
    return json.dumps(
        {"conn_type": "nextleg", "host": "http://127.0.0.1:9", "password": "api-token-unused",
         "extra": {**fields, **extra}}
    )  # fmt: skip


def ref_for(job_key: str, **fields: Any) -> str:
    """The operator's JSON ref, with the job key under ``"job"``."""
    return json.dumps({"dag_id": "d", "run_id": "r", "task_id": "t", **fields, "job": job_key})


def result_body(message_id: str, job_key: str | None, **fields: Any) -> dict[str, Any]:
    """A finished imagine result, as NextLeg POSTs it."""
    body: dict[str, Any] = {
        "accountId": "acc",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "responseAt": "2024-01-01T00:00:40.000Z",
        "originatingMessageId": message_id,
        "buttonMessageId": "btn-" + message_id,
        "buttons": ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"],
        "imageUrl": f"https://cdn.example.com/{message_id}/grid.png",
        "imageUrls": [f"https://cdn.example.com/{message_id}/{n}.png" for n in range(4)],
        "type": "imagine",
        "content": "a fox",
        "description": "",
        "ref": ref_for(job_key) if job_key else "",
    }
    body.update(fields)
    return body


def webhook_url(base: str, job_key: str, secret: str = SECRET, conn_id: str = CONN_ID) -> str:
    return tokens.webhook_override_url(base, conn_id, job_key, secret)


class ThreadedServer:
    """An ASGI app under uvicorn on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(512)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        wait(lambda: self._server.started, 10, "the receiver to start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def wait(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
