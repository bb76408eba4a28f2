"""``nextleg-webhook-receiver``: serve the webhook receiver on its own, in the foreground until SIGINT or
SIGTERM, for deployments where NextLeg cannot reach Airflow's API server (behind a reverse proxy, say).

It serves at its root: the connections' ``webhook_url`` is this server's public URL. It reads connections
as Airflow does outside its API server (environment variables, the configured secrets backend, the
metadata database when one is configured), and stores results in the inbox each connection names (Redis
with ``redis_conn_id``, else this host's directory, which the triggerers must share).

A bad flag or an address it cannot listen on ends it at once with one line on stderr and exit status 2,
as ``nextleg-emulator`` does. Uvicorn's access log stays off: it would write each URL's token; the
receiver logs each request itself, without it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

PROG = "nextleg-webhook-receiver"
DEFAULT_PORT = 8766


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(_usage_error(f"{message} (see --help)"))


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 to 65535 (0 picks a free one), got {text!r}"
        )
    return port


def _size(text: str) -> int:
    size = int(text) if text.isdigit() else 0
    if not 1024 <= size <= 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError(f"must be a number of bytes from 1024 to 67108864, got {text!r}")
    return size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Receive NextLeg's webhooks for the NextLeg Airflow provider.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port; 0 picks a free one (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_size,
        default=1024 * 1024,
        help="largest webhook body accepted; larger ones get 413 (default: 1048576)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    return parser.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sock = _bind(args.host, args.port)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        return _usage_error(
            f"argument --host/--port: cannot listen on {args.host} port {args.port} ({reason}); "
            "give a free --port (0 picks one) and a --host that is an address of this machine"
        )
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported once the flags are known good: Airflow takes a few seconds to import.
    import uvicorn

    from airflow_provider_nextleg.webhooks.receiver import create_receiver_app

    app = create_receiver_app(max_body_bytes=args.max_body_bytes)
    config = uvicorn.Config(
        app, log_level=args.log_level, access_log=False, log_config=None, timeout_graceful_shutdown=5
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(f"NextLeg webhook receiver listening on {url}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
