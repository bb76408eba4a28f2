"""``nextleg-emulator``: serve the NextLeg emulator in the foreground until SIGINT or SIGTERM.

A bad flag, a bad setting, or an address it cannot listen on ends it at once with one line on stderr that
names the flag and what it accepts, and exit status 2, the way argparse reports usage errors; never with
a traceback, and never with a server that answers 500 to every request. Without the ``[emulator]`` extra
it ends the same way, ``--help`` included, with one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from airflow_provider_nextleg import cli_support
from airflow_provider_nextleg.emulator.extra import missing_extra_message
from airflow_provider_nextleg.emulator.settings import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_BANNED_WORDS,
    DEFAULT_TOKEN,
    EmulatorSettings,
    FaultSettings,
    SettingError,
)

PROG = "nextleg-emulator"
DEFAULT_PORT = 8765
#: Settings whose flag is not ``--`` and the setting's name in kebab case.
_FLAGS = {"forced_codes": "--force"}


def _forced(text: str) -> tuple[str, str]:
    needle, equals, code = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"takes PROMPT=CODE, got {text!r}")
    return needle, code


def _default(value: object) -> str:
    """How ``--help`` writes a default: the value itself, as the flag takes it."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--help`` names each flag's real default once, from the settings' own defaults."""
    defaults, fault_defaults = EmulatorSettings(), FaultSettings()
    parser = cli_support.UsageErrorParser(
        prog=PROG, description="An offline emulator of the NextLeg v2 (Midjourney) API, for demos and tests."
    )

    def flag(group: argparse._ActionsContainer, name: str, help: str, **kwargs: Any) -> None:
        """A flag of a setting, its help ending with the setting's default; ``--no-x`` turns ``x`` off."""
        if name.startswith("--no-"):
            kwargs.update(dest=name.removeprefix("--no-").replace("-", "_"), action="store_false")
        setting = kwargs.pop("setting", kwargs.get("dest", name.removeprefix("--").replace("-", "_")))
        source = fault_defaults if group is faults else defaults
        value = kwargs.pop("shown", getattr(source, setting, None))
        kwargs.setdefault("default", getattr(source, setting, None))
        group.add_argument(name, help=f"{help} (default: {_default(value)})", **kwargs)

    cli_support.add_listen_arguments(parser, DEFAULT_PORT)
    parser.add_argument("--token", help=f"API token (default: the demo token {DEFAULT_TOKEN})")
    parser.add_argument("--admin-token", help=f"token of /_emulator/ (default: {DEFAULT_ADMIN_TOKEN})")
    faults = parser.add_argument_group("faults")
    flag(parser, "--time-scale", "real seconds per simulated second", type=float)
    flag(parser, "--no-rate-limit", "do not enforce the token's sliding-window rate limit", shown="enforced")
    flag(parser, "--rate-limit-requests", "requests allowed per window", type=int)
    flag(parser, "--rate-limit-window", "window length, in seconds", type=float)
    flag(parser, "--concurrency", "jobs an account runs at once", type=int)
    flag(parser, "--queue-length", "jobs that may wait for a slot", type=int)
    flag(parser, "--min-duration", "shortest fast job, in simulated seconds", type=float)
    flag(parser, "--max-duration", "longest fast job, in simulated seconds", type=float)
    flag(parser, "--fast-hours", "fast GPU hours of the subscription", type=float)
    flag(parser, "--expire-mins", "minutes after which an unfinished job is incomplete", type=float)
    flag(parser, "--seed", "seed of every random draw", type=int)
    flag(parser, "--account-id", "accountId of the results")
    flag(
        parser,
        "--load-balancer-accounts",
        "Midjourney accounts behind the token for /loadBalancer/ (the first is /v2's)",
        type=int,
    )
    flag(parser, "--ppu-credits", "pay-per-use credits, one per image job on /ppu/", type=int)
    flag(
        parser,
        "--cdn-403-rate",
        "share of non-browser downloads of imageUrls answered 403; /getImage still serves them",
        type=float,
    )
    flag(
        parser,
        "--default-webhook",
        "URL the results of jobs without webhookOverride go to",
        shown="none",
    )
    flag(
        parser,
        "--banned-words",
        "comma-separated; empty for none",
        default=",".join(DEFAULT_BANNED_WORDS),
        shown=",".join(DEFAULT_BANNED_WORDS),
    )
    flag(
        parser,
        "--no-prefilter",
        "accept banned prompts, which then fail as jobs, instead of a 400",
        shown="the prefilter refuses them",
    )
    flag(
        parser,
        "--latency",
        "real seconds every API answer is held back (not the admin API's, not the CDN's)",
        type=float,
        metavar="SECONDS",
    )
    flag(faults, "--error-rate", "probability of a 500/502/503", type=float)
    flag(faults, "--drop-rate", "probability of a dropped connection", type=float)
    flag(faults, "--slow-rate", "probability of a slow answer", type=float)
    flag(faults, "--slow-seconds", "how slow a slow answer is, in real seconds", type=float)
    flag(faults, "--malformed-rate", "probability of truncated JSON", type=float)
    flag(
        faults,
        "--force",
        "jobs whose prompt contains PROMPT end with CODE (STALL: never finish); repeatable",
        dest="forced_codes",
        type=_forced,
        action="append",
        default=[],
        metavar="PROMPT=CODE",
        shown="none",
    )
    flag(faults, "--webhook-loss-rate", "probability that a webhook is never sent", type=float)
    flag(faults, "--webhook-duplicate-rate", "probability that a webhook is sent twice", type=float)
    flag(faults, "--webhook-delay-rate", "probability that a webhook is held back", type=float)
    flag(
        faults,
        "--webhook-delay-seconds",
        "longest hold of a held-back webhook, in real seconds (a uniform draw up to it)",
        type=float,
    )
    flag(
        faults,
        "--cdn-forbidden",
        "every direct image download answers 403",
        action="store_true",
        shown="off",
    )
    cli_support.add_log_level(parser, "uvicorn's log level")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """The settings the flags give: a flag's destination is its setting's name (:func:`parse_args`)."""
    flags = vars(args)

    def given(settings: type[EmulatorSettings | FaultSettings]) -> dict[str, Any]:
        return {
            field.name: flags[field.name] for field in dataclasses.fields(settings) if field.name in flags
        }

    defaults = EmulatorSettings()
    faults = FaultSettings(**given(FaultSettings) | {"forced_codes": dict(args.forced_codes)})
    return EmulatorSettings(
        **given(EmulatorSettings)
        | {
            "token": args.token or defaults.token,
            "admin_token": args.admin_token or defaults.admin_token,
            "banned_words": [word.strip() for word in args.banned_words.split(",") if word.strip()],
            "faults": faults,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    missing_extra = missing_extra_message()
    if missing_extra:  # before the flags: --help would describe a server that cannot start
        return cli_support.usage_error(PROG, missing_extra)
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingError as exc:
        flags = "/".join(_FLAGS.get(name, f"--{name.replace('_', '-')}") for name in exc.settings)
        return cli_support.usage_error(PROG, f"argument {flags}: {exc}")
    # Imported once the flags are known good, so a usage error answers before the server's stack loads.
    from airflow_provider_nextleg.emulator.server import make_server

    try:
        sock = cli_support.bind_socket(args.host, args.port)
    except (OSError, OverflowError) as exc:
        return cli_support.cannot_listen(PROG, args.host, args.port, exc)
    cli_support.configure_logging(args.log_level)
    base_url = cli_support.serve_until_signal(sock)
    token = "from --token" if args.token else f"the default demo token {DEFAULT_TOKEN!r}"
    print(f"NextLeg emulator listening on {base_url} (token: {token})", flush=True)
    make_server(settings, args.log_level).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
