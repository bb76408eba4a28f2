"""Every knob of the emulator, as plain dataclasses.

Standard library only: the pytest plugin and the admin client import this module, and neither may pull in
FastAPI, uvicorn or Pillow just to describe a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_TOKEN = "emulator-token"
DEFAULT_ADMIN_TOKEN = "emulator-admin-token"
DEFAULT_BANNED_WORDS = ("blood", "gore", "nude", "torture")
#: Not an error code: forced on a prompt (``forced_codes``), it makes the job never finish.
STALL = "STALL"

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
        if not self.path.startswith("/"):
            raise ValueError(f"fault path must start with '/', got {self.path!r}")
        if self.count < 1:
            raise ValueError("fault count must be at least 1")


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
    :param scripted: one-shot faults, consumed in order.
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    malformed_rate: float = 0.0
    forced_codes: dict[str, str] = field(default_factory=dict)
    cdn_forbidden: bool = False
    scripted: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "slow_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    def forced_code(self, prompt: str) -> str | None:
        """The code (or :data:`STALL`) forced on ``prompt``: the first needle it contains, ignoring case."""
        lowered = prompt.lower()
        for needle, code in self.forced_codes.items():
            if needle and needle.lower() in lowered:
                return code
        return None


@dataclass
class EmulatorSettings:
    """The emulator's configuration; every duration is in simulated seconds unless said otherwise.

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
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if self.rate_limit_requests < 1 or self.rate_limit_window <= 0:
            raise ValueError("the rate limit needs at least one request per positive window")
        if self.concurrency < 1 or self.queue_length < 0:
            raise ValueError("concurrency must be at least 1 and queue_length not negative")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError("durations must satisfy 0 < min_duration <= max_duration")
        if not 0 <= self.min_bot_delay <= self.max_bot_delay:
            raise ValueError("bot delays must satisfy 0 <= min_bot_delay <= max_bot_delay")

    @property
    def rate_limit_interval(self) -> float:
        """Real seconds between requests that keep a client under the rate limit."""
        return self.rate_limit_window * self.time_scale / self.rate_limit_requests
