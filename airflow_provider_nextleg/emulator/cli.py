"""``nextleg-emulator``: serve the NextLeg emulator in the foreground until SIGINT or SIGTERM.

A bad flag, a bad setting, or an address it cannot listen on ends it at once with one line on stderr that
names the flag and what it accepts, and exit status 2, the way argparse reports usage errors; never with
a traceback, and never with a server that answers 500 to every request.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from airflow_provider_nextleg.emulator.settings import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_BANNED_WORDS,
    DEFAULT_TOKEN,
    EmulatorSettings,
    FaultSettings,
    SettingError,
)

PROG = "nextleg-emulator"
#: Settings whose flag is not ``--`` and the setting's name in kebab case.
_FLAGS = {"forced_codes": "--force"}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: the usage of some thirty flags would bury it."""

    def error(self, message: str) -> NoReturn:
        self.exit(_usage_error(f"{message} (see --help)"))


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


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


def _forced(text: str) -> tuple[str, str]:
    needle, equals, code = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"takes PROMPT=CODE, got {text!r}")
    return needle, code


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = EmulatorSettings()
    parser = _Parser(
        prog=PROG,
        description="An offline emulator of the NextLeg v2 (Midjourney) API, for demos and tests.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8765, help="0 picks a free port")
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
    parser.add_argument(
        "--latency",
        type=float,
        default=defaults.latency,
        metavar="SECONDS",
        help="real seconds every API answer is held back (not the admin API's, not the CDN's)",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--error-rate", type=float, default=0.0, help="probability of a 500/502/503")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="probability of a dropped connection")
    faults.add_argument("--slow-rate", type=float, default=0.0, help="probability of a slow answer")
    faults.add_argument("--slow-seconds", type=float, default=5.0, help="how slow a slow answer is")
    faults.add_argument("--malformed-rate", type=float, default=0.0, help="probability of truncated JSON")
    faults.add_argument(
        "--force",
        dest="forced_codes",
        type=_forced,
        action="append",
        default=[],
        metavar="PROMPT=CODE",
        help="jobs whose prompt contains PROMPT end with CODE (STALL: never finish); repeatable",
    )
    faults.add_argument("--cdn-forbidden", action="store_true", help="direct image downloads answer 403")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


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
        latency=args.latency,
        faults=FaultSettings(
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
            malformed_rate=args.malformed_rate,
            forced_codes=dict(args.forced_codes),
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
    except SettingError as exc:
        flags = "/".join(_FLAGS.get(name, f"--{name.replace('_', '-')}") for name in exc.settings)
        return _usage_error(f"argument {flags}: {exc}")
    # Imported once the flags are known good, so a usage error answers before the server's stack loads.
    from airflow_provider_nextleg.emulator.server import bind_socket, make_server

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        return _usage_error(
            f"argument --host/--port: cannot listen on {args.host} port {args.port} ({exc.strerror or exc}); "
            "give a free --port (0 picks one) and a --host that is an address of this machine"
        )
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    host, port = sock.getsockname()[:2]
    base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    token = "from --token" if args.token else f"the default demo token {DEFAULT_TOKEN!r}"
    print(f"NextLeg emulator listening on {base_url} (token: {token})", flush=True)
    make_server(settings, args.log_level).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
