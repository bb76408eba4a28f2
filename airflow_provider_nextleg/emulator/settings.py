"""Every knob of the emulator, as plain dataclasses that refuse values the emulator cannot run with.

Standard library only: the pytest plugin and the admin client import this module, and neither may pull in
FastAPI, uvicorn or Pillow just to describe a configuration. Each dataclass checks itself when built, so a
bad value is refused where it enters (the constructor, the CLI, the admin API's ``PATCH settings``) with a
:class:`SettingError` naming it, not by a 500 on the first request that uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_TOKEN = "emulator-token"
DEFAULT_ADMIN_TOKEN = "emulator-admin-token"
DEFAULT_BANNED_WORDS = ("blood", "gore", "nude", "torture")
#: Not an error code: forced on a prompt (``forced_codes``), it makes the job never finish.
STALL = "STALL"
#: The codes Midjourney puts in a failed job's ``content``, the same as the provider's ``ErrorCode`` (a
#: test keeps the two in step; the emulator does not import the provider, which needs Airflow's stack).
ERROR_CODES = (
    "JOB_QUEUED",
    "QUEUE_FULL",
    "BOT_TOOK_TOO_LONG_TO_PROCESS_YOUR_COMMAND",
    "FAILED_TO_PROCESS_YOUR_COMMAND",
    "FAILED_TO_REQUEST",
    "INTERNAL_ERROR",
    "MODERATION_OUTAGE",
    "NO_FAST_HOURS",
    "BANNED_PROMPT",
    "BLOCKED",
    "IMAGE_BLOCKED",
    "INVALID_PARAMETER",
    "INVALID_LINK",
    "BUTTON_NOT_FOUND",
    "JOB_ACTION_RESTRICTED",
    "ALREADY_REQUESTED_UPSCALE",
    "APPEAL_ACCEPTED",
    "APPEAL_REJECTED",
    "PLEASE_SUBSCRIBE_TO_MJ_IN_YOUR_DASHBOARD",
)
#: The longest duration or delay, in simulated seconds (about 11 days): with the largest time scale, still
#: a date a result's timestamps can be written as.
_MAX_SECONDS = 1e6
_MAX_TIME_SCALE = 1000.0
_MIN_TIME_SCALE = 1e-6
#: More slots than any plan has by far; the queue keeps one heap entry per slot.
_MAX_CONCURRENCY = 10_000
#: More accounts than anyone puts behind one token.
_MAX_ACCOUNTS = 100

#: What a scripted fault does. ``status``: answer ``status`` with ``body`` (an nginx-like HTML page for
#: 502/503/504 when no body is given); ``drop``: close the connection without any response; ``slow``:
#: sleep ``seconds`` (real time, so a client's timeout fires), then process and answer normally;
#: ``malformed``: process, then answer 200 with a truncated JSON body.
FaultKind = Literal["status", "drop", "slow", "malformed"]


@dataclass
class Fault:
    """A one-shot fault for the next ``count`` requests whose path starts with ``path``.

    :param path: path prefix to match, e.g. ``/v2/message`` or ``/v2/imagine``.
    :param kind: see :data:`FaultKind`.
    :param method: HTTP method to match (``GET``, ``POST``); any method when ``None``.
    :param count: how many matching requests the fault applies to.
    :param status: the status answered by a ``status`` fault.
    :param body: the body of a ``status`` fault; a default page for the status when ``None``.
    :param seconds: how long a ``slow`` fault sleeps before processing.
    :param processed: for ``status`` and ``drop``: let the request reach the service first, so the job is
        created (and paid for) although the client never sees the answer. ``malformed`` is always processed.
    """

    path: str
    kind: FaultKind = "status"
    method: str | None = None
    count: int = 1
    status: int = 503
    body: str | None = None
    seconds: float = 0.0
    processed: bool = False

    def __post_init__(self) -> None:
        _check(self.path.startswith("/"), f"fault path must start with '/', got {self.path!r}", "fault path")
        _check_ranges(self, _FAULT_RANGES, prefix="fault ")
        _check(
            self.status in _HTTP_STATUSES,
            f"fault status must be an HTTP status from 100 to 599, got {self.status!r}",
            "fault status",
        )


@dataclass
class FaultSettings:
    """Failures the emulator injects, by probability (seeded) or scripted one by one.

    Probabilities apply to API requests only (``/v2/...`` and ``/getImage``); scripted faults to any path
    outside the admin prefix, first match wins, before any probability is drawn.

    :param error_rate: probability of a 500, 502 or 503 answer (502/503 with a proxy's HTML page).
    :param drop_rate: probability of closing the connection without an answer.
    :param slow_rate: probability of sleeping ``slow_seconds`` before answering.
    :param slow_seconds: real seconds a slow answer sleeps.
    :param malformed_rate: probability of a truncated JSON body.
    :param forced_codes: prompt substring (case-insensitive) to the error code its jobs end with;
        :data:`STALL` makes the job never finish: it holds its slot for its drawn duration, stays at its
        last progress step, sends no webhook, and turns ``incomplete`` after ``expireMins``.
    :param cdn_forbidden: direct image downloads answer 403, as the real CDN sometimes does;
        ``POST /getImage`` still returns the bytes.
    :param webhook_loss_rate: probability that a finished job's webhook is never sent (an unreachable
        receiver, a lost request: the service does not retry).
    :param webhook_duplicate_rate: probability that a webhook is sent twice, the copy right after the
        first answer (as a client that retries after a timeout does).
    :param webhook_delay_rate: probability that a webhook is held back before it is sent.
    :param webhook_delay_seconds: the longest hold, in real seconds; each held webhook waits a uniform
        draw up to it, so held webhooks also arrive out of order, among themselves and with the rest.
    :param scripted: one-shot faults, consumed in order.
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    malformed_rate: float = 0.0
    forced_codes: dict[str, str] = field(default_factory=dict)
    cdn_forbidden: bool = False
    webhook_loss_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_delay_rate: float = 0.0
    webhook_delay_seconds: float = 5.0
    scripted: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_ranges(self, _FAULT_SETTINGS_RANGES)
        for needle, code in self.forced_codes.items():
            _check(
                bool(needle.strip()),
                f"forced_codes needs a prompt substring before each code, got {needle!r} for {code}",
                "forced_codes",
            )
            _check(
                code in ERROR_CODES or code == STALL,
                f"forced_codes: {code!r} is not an error code, use one of {', '.join((*ERROR_CODES, STALL))}",
                "forced_codes",
            )

    def forced_code(self, prompt: str) -> str | None:
        """The code (or :data:`STALL`) forced on ``prompt``: the first needle it contains, ignoring case."""
        lowered = prompt.lower()
        for needle, code in self.forced_codes.items():
            if needle.lower() in lowered:
                return code
        return None


@dataclass
class EmulatorSettings:
    """The emulator's configuration; every duration is in simulated seconds unless said otherwise.

    Every number must be finite and in a range fit for it (time scale 1e-06 to 1000, concurrency 1 to
    10000, durations and delays up to 1,000,000 s, ...); anything else raises a :class:`SettingError`
    that says what is allowed.

    :param token: the API token clients send as ``Authorization: Bearer <token>``.
    :param admin_token: the token of the ``/_emulator/`` inspection endpoints (API token refused there).
    :param time_scale: real seconds per simulated second; 0.01 makes a 50 s job last half a second.
    :param rate_limit: whether the account-wide sliding-window rate limit is enforced.
    :param rate_limit_requests: requests allowed per window.
    :param rate_limit_window: window length in unscaled seconds (the service allows one request every 3 s).
    :param concurrency: jobs an account runs at once; later ones wait at progress 0 (``JOB_QUEUED``).
    :param queue_length: jobs that may wait; past it a submission ends with ``QUEUE_FULL``.
    :param min_duration: shortest duration of an image job in fast mode.
    :param max_duration: longest duration of an image job in fast mode.
    :param relax_factor: how much longer a job takes in relax mode.
    :param min_bot_delay: shortest delay before an error or a text result (info, describe, ...) appears.
    :param max_bot_delay: longest such delay.
    :param expire_mins: default of ``expireMins`` on ``GET /v2/message`` (12 in the documentation).
    :param fast_hours: fast GPU hours of the subscription; used up, fast jobs end with ``NO_FAST_HOURS``.
    :param seed: seeds every random draw (durations, job seeds, fault probabilities) for reproducible runs.
    :param default_webhook: the account's webhook URL, used when a request has no ``webhookOverride``.
    :param banned_words: words that make a prompt ``BANNED_PROMPT`` (whole words, case-insensitive).
    :param prefilter: refuse banned prompts at submission with a 400 unless ``ignorePrefilter`` is true.
    :param account_id: the ``accountId`` reported in results.
    :param latency: real seconds every API answer is held back (not the admin API's, not the CDN's), as
        over a slow network; the request itself is processed when it arrives.
    :param load_balancer_accounts: Midjourney accounts behind the token for ``/loadBalancer/...``, each
        with its own concurrency, queue and fast hours; the first is the one ``/v2`` uses. Changed at run
        time, accounts are added empty or the last ones dropped with their jobs.
    :param ppu_credits: pay-per-use credits (``/ppu/...``): each job that draws an image costs one; with
        none left a submission is refused with a 402. Refilled on reset; set at run time, it is the credits
        left.
    :param cdn_403_rate: the share of direct downloads of ``imageUrls`` (the tiles on Midjourney's CDN)
        answered 403 when the client is not a browser (its ``User-Agent`` does not start with
        ``Mozilla/``), as the real CDN refused servers; ``POST /getImage`` always returns the bytes. The
        documentation sends anyone who "receive[s] a 403 error when retrieving an image programmatically"
        to ``/getImage``, so the default refuses every such download; the test fixture sets 0.
    :param faults: injected failures, see :class:`FaultSettings`.
    """

    token: str = DEFAULT_TOKEN
    admin_token: str = DEFAULT_ADMIN_TOKEN
    time_scale: float = 1.0
    rate_limit: bool = True
    rate_limit_requests: int = 1
    rate_limit_window: float = 3.0
    concurrency: int = 3
    queue_length: int = 10
    min_duration: float = 30.0
    max_duration: float = 75.0
    relax_factor: float = 3.0
    min_bot_delay: float = 1.0
    max_bot_delay: float = 3.0
    expire_mins: float = 12.0
    fast_hours: float = 15.0
    seed: int = 0
    default_webhook: str | None = None
    banned_words: list[str] = field(default_factory=lambda: list(DEFAULT_BANNED_WORDS))
    prefilter: bool = True
    account_id: str = "emulator-account"
    latency: float = 0.0
    load_balancer_accounts: int = 3
    ppu_credits: int = 100
    cdn_403_rate: float = 1.0
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        for name in ("token", "admin_token"):
            _check(bool(getattr(self, name)), f"{name} must not be empty: every request would pass", name)
        _check_ranges(self, _SETTINGS_RANGES)
        _ordered("min_duration", self.min_duration, "max_duration", self.max_duration)
        _ordered("min_bot_delay", self.min_bot_delay, "max_bot_delay", self.max_bot_delay)
        if self.default_webhook is not None:
            url = urlsplit(self.default_webhook)
            _check(
                url.scheme in ("http", "https") and bool(url.hostname) and " " not in self.default_webhook,
                f"default_webhook must be an http:// or https:// URL, got {self.default_webhook!r}",
                "default_webhook",
            )

    @property
    def rate_limit_interval(self) -> float:
        """Real seconds between requests that keep a client under the rate limit."""
        return self.rate_limit_window * self.time_scale / self.rate_limit_requests


class SettingError(ValueError):
    """A setting the emulator cannot run with.

    :param message: what is wrong and what is allowed, starting with the setting's name.
    :param settings: the names of the settings at fault, for a caller that knows them by another name
        (the CLI names its flags).
    """

    def __init__(self, message: str, *settings: str) -> None:
        super().__init__(message)
        self.settings = settings


@dataclass(frozen=True)
class _Range:
    """The numbers a setting allows: finite, from ``low`` to ``high``, as ``allowed`` says in words.

    :param above_low: ``low`` itself is excluded.
    :param whole: only whole numbers (``int``, not ``bool``).
    """

    low: float
    high: float
    allowed: str
    above_low: bool = False
    whole: bool = False

    def check(self, name: str, value: float) -> None:
        # The bounds alone would let infinity through where ``high`` is math.inf.
        ok = (
            (not self.whole or (isinstance(value, int) and not isinstance(value, bool)))
            and math.isfinite(value)
            and (value > self.low if self.above_low else value >= self.low)
            and value <= self.high
        )
        _check(ok, f"{name} must be {self.allowed}, got {value!r}", name)


def _check(ok: bool, message: str, *settings: str) -> None:
    if not ok:
        raise SettingError(message, *settings)


def _check_ranges(settings: object, ranges: dict[str, _Range], prefix: str = "") -> None:
    for name, allowed in ranges.items():
        allowed.check(f"{prefix}{name}", getattr(settings, name))


def _ordered(low_name: str, low: float, high_name: str, high: float) -> None:
    _check(
        low <= high, f"{low_name} must not exceed {high_name}, got {low!r} > {high!r}", low_name, high_name
    )


_HTTP_STATUSES = frozenset(status.value for status in HTTPStatus)
_DURATION = _Range(
    0, _MAX_SECONDS, f"a finite number of seconds above 0, at most {_MAX_SECONDS:,.0f}", above_low=True
)
_DELAY = _Range(0, _MAX_SECONDS, f"a finite number of seconds from 0 to {_MAX_SECONDS:,.0f}")
_PROBABILITY = _Range(0, 1, "a probability between 0 and 1")
_SETTINGS_RANGES = {
    "time_scale": _Range(
        _MIN_TIME_SCALE,
        _MAX_TIME_SCALE,
        f"positive: real seconds per simulated second, a finite number from {_MIN_TIME_SCALE:g} "
        f"to {_MAX_TIME_SCALE:g}",
    ),
    "rate_limit_requests": _Range(1, math.inf, "a whole number, at least 1", whole=True),
    "rate_limit_window": _DURATION,
    "concurrency": _Range(1, _MAX_CONCURRENCY, f"a whole number from 1 to {_MAX_CONCURRENCY}", whole=True),
    "queue_length": _Range(0, math.inf, "a whole number, 0 or more", whole=True),
    "min_duration": _DURATION,
    "max_duration": _DURATION,
    "relax_factor": _Range(0, 100, "a finite number above 0, at most 100", above_low=True),
    "min_bot_delay": _DELAY,
    "max_bot_delay": _DELAY,
    "expire_mins": _Range(0, _MAX_SECONDS, "a finite number of minutes above 0", above_low=True),
    "fast_hours": _Range(0, math.inf, "a finite number of hours, 0 or more"),
    "latency": _Range(0, 3600, "a finite number of real seconds from 0 to 3,600"),
    "load_balancer_accounts": _Range(
        1, _MAX_ACCOUNTS, f"a whole number of accounts from 1 to {_MAX_ACCOUNTS}", whole=True
    ),
    "ppu_credits": _Range(0, math.inf, "a whole number of credits, 0 or more", whole=True),
    "cdn_403_rate": _PROBABILITY,
}
_FAULT_SETTINGS_RANGES = {
    "error_rate": _PROBABILITY,
    "drop_rate": _PROBABILITY,
    "slow_rate": _PROBABILITY,
    "malformed_rate": _PROBABILITY,
    "slow_seconds": _DELAY,
    "webhook_loss_rate": _PROBABILITY,
    "webhook_duplicate_rate": _PROBABILITY,
    "webhook_delay_rate": _PROBABILITY,
    "webhook_delay_seconds": _Range(0, 3600, "a finite number of real seconds from 0 to 3,600"),
}
_FAULT_RANGES = {
    "count": _Range(1, math.inf, "a whole number of requests, at least 1", whole=True),
    "seconds": _DELAY,
}
