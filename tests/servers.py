"""Real servers for the tests: redis-server and PostgreSQL from Debian's packages, each started on a free
port in a temporary directory and stopped by its PID.

``make setup`` installs both packages where they are missing (as root, with apt-get). A test that needs
one calls :func:`need_binary`, which installs the package itself when it can, skips when it cannot (not
root, no apt-get), and fails instead of skipping under CI, where the Makefile must have installed it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.5,
    ignore: tuple[type[BaseException], ...] = (OSError,),
) -> Any:
    """Call ``condition`` until it returns something true, and return that; fail after ``timeout`` s.

    :param ignore: exceptions that mean "not yet" (a refused connection, say).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except ignore:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def need_binary(name: str, package: str, *, candidates: tuple[str, ...] = ()) -> str:
    """
    The path of the program ``name`` from the Debian package ``package``, installed now if it can be.

    :param candidates: glob patterns tried after ``PATH`` (PostgreSQL keeps its programs out of it).
    """
    found = _find(name, candidates)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", package]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = _find(name, candidates)
        if found:
            return found
    message = f"{name} is missing and cannot be installed here: `make setup` installs Debian's {package}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _find(name: str, candidates: tuple[str, ...]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for pattern in candidates:
        matches = sorted(glob.glob(pattern), key=_version_key)
        if matches:
            return matches[-1]
    return None


def _version_key(path: str) -> list[int]:
    return [int(part) for part in Path(path).parts if part.isdigit()]


def stop_pid(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server by its PID: SIGTERM (SIGCONT first, should it be paused), then SIGKILL."""
    if process.poll() is not None:
        return
    for signum in (signal.SIGCONT, signal.SIGTERM):
        os.kill(process.pid, signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """
    A private ``redis-server`` on 127.0.0.1, no persistence, its files in ``directory``.

    ``stop()`` and ``start()`` again keep the port, as a restarted Redis does; ``pause()`` and
    ``resume()`` freeze it (SIGSTOP/SIGCONT), as a hung one is.

    :param directory: the server's working directory (its log goes there).
    :param password: ``--requirepass``, if any.
    :param port: the port; a free one by default.
    """

    def __init__(self, directory: Path, *, password: str | None = None, port: int | None = None) -> None:
        self.binary = need_binary("redis-server", "redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        command += ["no", "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout, f"redis-server on port {self.port}", interval=0.05)
        return self

    def ping(self) -> bool:
        """Whether the server answers (a raw RESP exchange: no client library involved)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            if self.password:
                sock.sendall(_resp("AUTH", self.password))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(_resp("PING"))
            return sock.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def uri(self, db: int = 0) -> str:
        """The server as an Airflow connection URI (``?db=N``: RedisHook ignores a ``/N`` path)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/?db={db}"

    def url(self, db: int = 0) -> str:
        """The server as a redis-py / Celery broker URL."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (used to read ``INFO commandstats`` without a client library)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            if self.password:
                sock.sendall(_resp("AUTH", self.password))
                sock.recv(64)
            sock.sendall(_resp(*args))
            data = sock.recv(65536)
            if data.startswith(b"$"):
                size = int(data[1 : data.index(b"\r\n")])
                while len(data) < data.index(b"\r\n") + 2 + size:
                    data += sock.recv(65536)
            return data

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _resp(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


POSTGRES_BIN = ("/usr/lib/postgresql/*/bin/initdb",)


class PostgresServer:
    """
    A private PostgreSQL on 127.0.0.1 in a fresh temporary directory, with a user and database ``airflow``.

    ``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user (which
    the Debian package creates) through ``runuser``, in a directory of the system's temporary directory
    owned by it (pytest's own temporary directories are private to root). Durability is off: it is a
    test database.
    """

    def __init__(self, port: int | None = None) -> None:
        initdb = need_binary("initdb", "postgresql", candidates=POSTGRES_BIN)
        self.bin = Path(initdb).resolve().parent
        self.port = port or free_port()
        as_root = os.geteuid() == 0
        # /tmp for root: a TMPDIR of root's own may be closed to the postgres user
        self.root = Path(tempfile.mkdtemp(prefix="nextleg-postgres-", dir="/tmp" if as_root else None))
        self.data = self.root / "data"
        self.as_postgres: list[str] = []
        if as_root:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.started = False

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``airflow`` database."""
        return f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{self.port}/airflow"

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self.as_postgres, *command], capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        log = str(self.root / "postgres.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.started = True
        for statement in ("CREATE USER airflow PASSWORD 'airflow'", "CREATE DATABASE airflow OWNER airflow"):
            psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
            self._run(*psql, "-v", "ON_ERROR_STOP=1", "-c", statement)
        return self

    def pid(self) -> int | None:
        """The postmaster's PID, from its pid file."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the postmaster by its PID (a fast shutdown), then remove its directory."""
        pid = self.pid() if self.started else None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
