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
import sys
from collections.abc import Sequence

from airflow_provider_nextleg import cli_support

PROG = "nextleg-webhook-receiver"
DEFAULT_PORT = 8766


def _size(text: str) -> int:
    size = int(text) if text.isdigit() else 0
    if not 1024 <= size <= 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError(f"must be a number of bytes from 1024 to 67108864, got {text!r}")
    return size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli_support.UsageErrorParser(
        prog=PROG, description="Receive NextLeg's webhooks for the NextLeg Airflow provider."
    )
    cli_support.add_listen_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--max-body-bytes",
        type=_size,
        default=1024 * 1024,
        help="largest webhook body accepted; larger ones get 413 (default: 1048576)",
    )
    cli_support.add_log_level(parser, "log level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sock = cli_support.bind_socket(args.host, args.port)
    except (OSError, OverflowError) as exc:
        return cli_support.cannot_listen(PROG, args.host, args.port, exc)
    cli_support.configure_logging(args.log_level)
    # Imported once the flags are known good: Airflow takes a few seconds to import.
    import uvicorn

    from airflow_provider_nextleg.webhooks.receiver import create_receiver_app

    app = create_receiver_app(max_body_bytes=args.max_body_bytes)
    config = uvicorn.Config(
        app, log_level=args.log_level, access_log=False, log_config=None, timeout_graceful_shutdown=5
    )
    url = cli_support.serve_until_signal(sock)
    print(f"NextLeg webhook receiver listening on {url}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
