"""What the emulator's tests share: an API client that knows the protocol's round trips, polling with a
deadline, and a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

#: Faster than the plugin's 0.01: a 30 to 75 s job lasts 30 to 75 ms, a 12-minute expiry 0.72 s.
TIME_SCALE = 0.001


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class Api:
    """An httpx client of the emulator's API with the protocol's round trips as methods."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0, trust_env=False
        )

    def submit(self, path: str, **fields: Any) -> str:
        """POST a submission, assert it was accepted, return its messageId."""
        response = self.http.post(path, json=fields)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        return body["messageId"]

    def message(self, message_id: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/v2/message/{message_id}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, message_id: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        """Poll a message until it is finished (progress 100) or incomplete; return the last answer."""

        def done() -> dict[str, Any] | None:
            body = self.message(message_id, **params)
            return body if body["progress"] in (100, "incomplete") else None

        return wait_until(done, timeout)

    def result(self, path: str, **fields: Any) -> dict[str, Any]:
        """Submit and wait: the finished result object (``response``)."""
        body = self.wait(self.submit(path, **fields))
        assert body["progress"] == 100, body
        return body["response"]

    def imagine(self, prompt: str = "a red fox in the snow", **fields: Any) -> dict[str, Any]:
        return self.result("/v2/imagine", msg=prompt, **fields)

    def press(self, parent: dict[str, Any], button: str, **fields: Any) -> dict[str, Any]:
        return self.result("/v2/button", button=button, buttonMessageId=parent["buttonMessageId"], **fields)


class WebhookReceiver:
    """A local HTTP server that records every POST it receives and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"path": self.path, "json": json.loads(body)})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
