"""What the package's console scripts (``nextleg-emulator``, ``nextleg-webhook-receiver``) share.

A bad flag or an address a script cannot listen on ends it at once with one line on stderr, naming the
flag and what it accepts, and exit status 2, the way argparse reports usage errors; SIGINT and SIGTERM end
a server in the foreground with status 0. Only the standard library: each script must answer a usage
error before its server's stack (Airflow, uvicorn, Pillow) loads, or without it installed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from types import FrameType
from typing import NoReturn


def usage_error(prog: str, message: str) -> int:
    """Write ``<prog>: error: <message>`` on stderr; the exit status of a usage error, 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


class UsageErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: the usage of some thirty flags would bury it."""

    def error(self, message: str) -> NoReturn:
        self.exit(usage_error(self.prog, f"{message} (see --help)"))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 to 65535 (0 picks a free one), got {text!r}"
        )
    return port


def add_listen_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """``--host`` (default 127.0.0.1) and ``--port`` (0 picks a free one)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=default_port, help=f"port; 0 picks a free one (default: {default_port})"
    )


def add_log_level(parser: argparse.ArgumentParser, whose: str) -> None:
    """``--log-level``, from debug to error (default info); ``whose`` names what it sets in its help."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help=f"{whose} (default: info)",
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, made before serving so the port is known (``port=0`` picks a free one) and
    clients that connect before uvicorn is up wait in the backlog instead of being refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def cannot_listen(prog: str, host: str, port: int, exc: Exception) -> int:
    """The usage error of an address :func:`bind_socket` could not listen on, naming the reason."""
    reason = getattr(exc, "strerror", None) or exc
    return usage_error(
        prog,
        f"argument --host/--port: cannot listen on {host} port {port} ({reason}); "
        "give a free --port (0 picks one) and a --host that is an address of this machine",
    )


def configure_logging(log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn shuts down gracefully on the signal, then raises it again: end the process with status 0."""
    raise SystemExit(0)


def serve_until_signal(sock: socket.socket) -> str:
    """Make SIGINT and SIGTERM end the process with status 0; the URL ``sock`` serves at."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
