"""``nextleg-emulator``: serve the NextLeg emulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from airflow_provider_nextleg.emulator.server import bind_socket, make_server
from airflow_provider_nextleg.emulator.settings import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_BANNED_WORDS,
    DEFAULT_TOKEN,
    EmulatorSettings,
    FaultSettings,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = EmulatorSettings()
    parser = argparse.ArgumentParser(
        prog="nextleg-emulator",
        description="An offline emulator of the NextLeg v2 (Midjourney) API, for demos and tests.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", help=f"API token (default: the demo token {DEFAULT_TOKEN!r})")
    parser.add_argument("--admin-token", help=f"token of /_emulator/ (default: {DEFAULT_ADMIN_TOKEN!r})")
    parser.add_argument(
        "--time-scale", type=float, default=defaults.time_scale, help="real s per simulated s"
    )
    parser.add_argument(
        "--no-rate-limit", dest="rate_limit", action="store_false", help="disable the rate limit"
    )
    parser.add_argument("--rate-limit-requests", type=int, default=defaults.rate_limit_requests)
    parser.add_argument("--rate-limit-window", type=float, default=defaults.rate_limit_window, help="seconds")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--queue-length", type=int, default=defaults.queue_length)
    parser.add_argument("--min-duration", type=float, default=defaults.min_duration, help="simulated seconds")
    parser.add_argument("--max-duration", type=float, default=defaults.max_duration, help="simulated seconds")
    parser.add_argument("--fast-hours", type=float, default=defaults.fast_hours)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument("--default-webhook", help="URL the results of jobs without webhookOverride go to")
    parser.add_argument(
        "--banned-words", default=",".join(DEFAULT_BANNED_WORDS), help="comma-separated; empty for none"
    )
    parser.add_argument(
        "--no-prefilter", dest="prefilter", action="store_false", help="no 400 on banned words"
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--error-rate", type=float, default=0.0, help="probability of a 500/502/503")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="probability of a dropped connection")
    faults.add_argument("--slow-rate", type=float, default=0.0, help="probability of a slow answer")
    faults.add_argument("--slow-seconds", type=float, default=5.0, help="how slow a slow answer is")
    faults.add_argument("--malformed-rate", type=float, default=0.0, help="probability of truncated JSON")
    faults.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="PROMPT=CODE",
        help="jobs whose prompt contains PROMPT end with CODE (STALL: never finish); repeatable",
    )
    faults.add_argument("--cdn-forbidden", action="store_true", help="direct image downloads answer 403")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if any("=" not in forced for forced in args.force):
        parser.error("--force takes PROMPT=CODE")
    return args


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    defaults = EmulatorSettings()
    return EmulatorSettings(
        token=args.token or defaults.token,
        admin_token=args.admin_token or defaults.admin_token,
        time_scale=args.time_scale,
        rate_limit=args.rate_limit,
        rate_limit_requests=args.rate_limit_requests,
        rate_limit_window=args.rate_limit_window,
        concurrency=args.concurrency,
        queue_length=args.queue_length,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        fast_hours=args.fast_hours,
        seed=args.seed,
        default_webhook=args.default_webhook,
        banned_words=[word.strip() for word in args.banned_words.split(",") if word.strip()],
        prefilter=args.prefilter,
        faults=FaultSettings(
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
            malformed_rate=args.malformed_rate,
            forced_codes=dict(forced.split("=", 1) for forced in args.force),
            cdn_forbidden=args.cdn_forbidden,
        ),
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn shuts down gracefully on the signal, then raises it again: end the process with status 0."""
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"nextleg-emulator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    token = "from --token" if args.token else f"the default demo token {DEFAULT_TOKEN!r}"
    print(f"NextLeg emulator listening on {base_url} (token: {token})", flush=True)
    make_server(settings, args.log_level).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
