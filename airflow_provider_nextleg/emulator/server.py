"""Running the emulator: under uvicorn on a bound socket, in the foreground (CLI) or a background thread."""

from __future__ import annotations

import copy
import json
import threading
import time
from types import TracebackType
from urllib.parse import quote, urlencode

import uvicorn

from airflow_provider_nextleg.cli_support import bind_socket
from airflow_provider_nextleg.emulator.admin import EmulatorAdmin
from airflow_provider_nextleg.emulator.app import create_app
from airflow_provider_nextleg.emulator.settings import EmulatorSettings


def make_server(settings: EmulatorSettings, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for the emulator, wired so that faults can drop its connections."""
    app = create_app(settings)
    # A slow fault may hold a request for a long time: do not let it hold a shutdown too.
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    app.state.emulator.server_state = server.server_state
    return server


class EmulatorServer(EmulatorAdmin):
    """The emulator on a port of its own in a background thread, with the admin client's methods.

    ``with EmulatorServer(EmulatorSettings(time_scale=0.01, rate_limit=False)) as emu:`` serves on
    ``emu.base_url`` until the block ends. The port is bound when the object is built, so ``base_url`` is
    known before the server starts.

    :param settings: the emulator's settings; a copy is taken and ``emu.settings`` is the live one, which
        :meth:`configure` changes.
    :param host: the interface to listen on.
    :param port: the port, or 0 for a free one.
    :param log_level: uvicorn's log level.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.settings = copy.deepcopy(settings or EmulatorSettings())
        self._socket = bind_socket(host, port)
        super().__init__(f"http://{host}:{self._socket.getsockname()[1]}", self.settings.admin_token)
        self._server = make_server(self.settings, log_level)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Start serving and wait until the emulator answers."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="nextleg-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The NextLeg emulator did not start on {self.base_url}")
            time.sleep(0.01)
        self.configure()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()
        self._socket.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def connection_extra(self) -> dict[str, float]:
        """What the hook reads from the connection's extra: its pacing and its request timeout."""
        return {"rate_limit_interval": self.settings.rate_limit_interval, "timeout": 30.0}

    def airflow_connection_json(self, conn_id: str = "nextleg_default") -> str:
        """The emulator as an Airflow connection in JSON, e.g. for ``AIRFLOW_CONN_NEXTLEG_DEFAULT``.

        Airflow takes the connection id from the variable's name, so ``conn_id`` only names the
        connection in its ``description``.
        """
        return json.dumps(
            {
                "conn_type": "nextleg",
                "description": f"NextLeg emulator for {conn_id}",
                "host": self.base_url,
                "password": self.settings.token,
                "extra": self.connection_extra(),
            }
        )

    def connection_uri(self) -> str:
        """The same connection as an Airflow URI, the host (a full URL) percent-encoded as Airflow expects."""
        return (
            f"nextleg://:{quote(self.settings.token, safe='')}@{quote(self.base_url, safe='')}"
            f"/?{urlencode(self.connection_extra())}"
        )
