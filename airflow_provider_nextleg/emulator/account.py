"""The emulated account: its jobs, its queue, its modes, and what every message looks like when polled.

Nothing here runs on its own. A job's whole timeline (when it leaves the queue, when it finishes, how its
progress steps fall) is fixed at submission from the simulated clock and a seeded random stream, and its
state is read off that timeline when a client asks. Thousands of jobs therefore cost a dict entry each.
The server owns an :class:`Account` and calls it from its event loop only, so it needs no locks.
"""

from __future__ import annotations

import heapq
import random
import re
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_nextleg.emulator.clock import SimClock, iso
from airflow_provider_nextleg.emulator.images import (
    GRID_SIZE,
    PROGRESS_SIZE,
    QUADRANT_SIZE,
    UPSCALE_SIZE,
    ImageSpec,
)
from airflow_provider_nextleg.emulator.prompts import (
    describe_prompts,
    find_banned_word,
    is_aspect_ratio,
    is_link,
    parse_flags,
)
from airflow_provider_nextleg.emulator.settings import EmulatorSettings

GRID_BUTTONS = ("U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4")
UPSCALE_BUTTONS = (
    "Vary (Strong)",
    "Vary (Subtle)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "⬅️",
    "➡️",
    "⬆️",
    "⬇️",
    "Make Square",
    "Upscale (2x)",
    "Upscale (4x)",
    "❤️ Favorite",
    "🪄 Make Variations",
)
BIG_UPSCALE_BUTTONS = ("❤️ Favorite",)
DESCRIBE_BUTTONS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
SEED_BUTTON = "✉️"
FAVORITE_BUTTON = "❤️ Favorite"
SETTINGS_TOGGLES = (
    "MJ version 5.2",
    "MJ version 5.1",
    "Niji version 5",
    "RAW Mode",
    "Stylize low",
    "Stylize med",
    "Stylize high",
    "Public mode",
    "Stealth mode",
    "Remix mode",
    "Fast mode",
    "Relax mode",
    "Turbo mode",
    "Reset Settings",
)
SLASH_COMMANDS = {
    "relax": "Relax mode",
    "fast": "Fast mode",
    "private": "Stealth mode",
    "stealth": "Stealth mode",
}

_QUADRANTS = {"U1": 0, "U2": 1, "U3": 2, "U4": 3}
_BIGGER = {"Upscale (2x)": 1536, "Upscale (4x)": 2048}
#: toggle -> (setting, value); a value of None flips the setting between "On" and "Off".
_TOGGLE_EFFECTS: dict[str, tuple[str, str | None]] = {
    "MJ version 5.2": ("Version", "MJ version 5.2"),
    "MJ version 5.1": ("Version", "MJ version 5.1"),
    "Niji version 5": ("Version", "Niji version 5"),
    "RAW Mode": ("RAW Mode", None),
    "Stylize low": ("Stylize", "low"),
    "Stylize med": ("Stylize", "med"),
    "Stylize high": ("Stylize", "high"),
    "Public mode": ("Visibility Mode", "Public"),
    "Stealth mode": ("Visibility Mode", "Stealth"),
    "Remix mode": ("Remix", None),
    "Fast mode": ("Job Mode", "Fast"),
    "Relax mode": ("Job Mode", "Relax"),
    "Turbo mode": ("Job Mode", "Turbo"),
}
_DEFAULT_MODES = {
    "Job Mode": "Fast",
    "Visibility Mode": "Public",
    "Version": "MJ version 5.2",
    "Stylize": "med",
    "RAW Mode": "Off",
    "Remix": "Off",
}
_SLASH_REPLIES = {
    "Relax mode": "Done! Your jobs now do not cost fast-hours, but will be queued. Switch back with /fast",
    "Fast mode": "Done! Your jobs will now use fast-hours. You can always switch back with /relax",
    "Stealth mode": "Stealth mode turned on",
}


class Refused(Exception):
    """A request the service answers at once with ``400 {"success": false, "msg": ...}``."""


class NotFound(Exception):
    """A message id the account never issued (``404``)."""


@dataclass(frozen=True)
class Origin:
    """What every submission carries besides its own fields.

    :param ref: echoed in the result, any JSON value.
    :param webhook: where the result is POSTed when the job finishes, if anywhere.
    :param base_url: the base URL the client reached the emulator on; webhooks build image URLs from it.
    """

    ref: Any
    webhook: str | None
    base_url: str


@dataclass
class Job:
    """One message of the account, with its timeline fixed at submission (simulated seconds).

    ``steps`` is 0 for bot answers (errors, info, describe...), which show progress 0 until they appear.
    """

    id: str
    type: str
    prompt: str
    content: Any
    seed: str
    origin: Origin
    created: float
    start: float
    finish: float
    steps: int = 0
    error: str | None = None
    stalled: bool = False
    image: ImageSpec | None = None
    buttons: tuple[str, ...] = ()
    button_message_id: str | None = None
    show_seed: bool = False
    pressed: set[str] = field(default_factory=set)

    def succeeded(self, now: float) -> bool:
        return self.error is None and not self.stalled and now >= self.finish

    def progress(self, now: float) -> int:
        """The progress shown while running: 0, then steps like 31, 62, 93 or 31, 46, 62, 78, 93."""
        if not self.steps:
            return 0
        phase = min(self.steps, int((now - self.start) / (self.finish - self.start) * (self.steps + 1)))
        return 0 if phase == 0 else round(31 + 62 * (phase - 1) / (self.steps - 1))


class Account:
    """The account behind the API token: jobs, FIFO concurrency slots, job modes and usage."""

    def __init__(self, settings: EmulatorSettings, clock: SimClock) -> None:
        self.settings = settings
        self.clock = clock
        # Message ids must stay unique across resets (a client may still poll an old id), so their random
        # stream is never re-seeded; everything else restarts with the seed on reset.
        self._ids = random.Random(f"ids-{settings.seed}")
        self.reset()

    def reset(self) -> None:
        """Forget every job, the queue, the usage and the modes; restart the seeded random stream."""
        self._rng = random.Random(self.settings.seed)
        self.jobs: dict[str, Job] = {}
        self._by_button_id: dict[str, Job] = {}
        self._slots: list[float] = []
        self._waiting: deque[tuple[float, str]] = deque()
        self._webhooks: list[tuple[float, str]] = []
        self.modes = dict(_DEFAULT_MODES)
        self._usage = {"Fast": [0, 0.0], "Relax": [0, 0.0]}

    # -- submissions ---------------------------------------------------------------------------------------

    def imagine(self, payload: dict[str, Any], base_url: str) -> Job:
        prompt = payload.get("msg")
        if not isinstance(prompt, str) or not prompt.strip():
            raise Refused("msg is required")
        banned = find_banned_word(prompt, self.settings.banned_words)
        if banned and self.settings.prefilter and not _truthy(payload.get("ignorePrefilter")):
            raise Refused(f"Invalid phrase: '{banned}'")
        flags = parse_flags(prompt)
        error = "BANNED_PROMPT" if banned else "INVALID_PARAMETER" if flags.invalid else None
        seed = flags.seed or self._new_seed()
        image = ImageSpec("grid", prompt, seed, "imagine", GRID_SIZE)
        return self._create(
            self._origin(payload, base_url),
            "imagine",
            prompt,
            seed,
            image=image,
            buttons=GRID_BUTTONS,
            error=error,
            mode=_MODE_FLAGS.get(flags.mode or ""),
        )

    def button(self, payload: dict[str, Any], base_url: str) -> Job:
        button, handle = payload.get("button"), payload.get("buttonMessageId")
        if not isinstance(button, str) or not isinstance(handle, str) or not button or not handle:
            raise Refused("button and buttonMessageId are required")
        origin = self._origin(payload, base_url)
        parent = self._by_button_id.get(handle)
        # An unknown buttonMessageId is accepted and then fails with BUTTON_NOT_FOUND rather than answering
        # 404: the service forwards a press to Discord before it can know the message, and a client must
        # handle BUTTON_NOT_FOUND anyway (for a button the message does not offer).
        if parent is None or not parent.succeeded(self.clock.now()):
            return self._fail(origin, "button", parent.prompt if parent else "", "BUTTON_NOT_FOUND")
        if parent.type == "settings":
            return self._toggle(origin, button)
        if button == SEED_BUTTON and parent.image is not None:
            return self._create(origin, "button", parent.prompt, parent.seed, show_seed=True)
        if button not in parent.buttons:
            return self._fail(origin, "button", parent.prompt, "BUTTON_NOT_FOUND")
        if button in parent.pressed:
            return self._fail(origin, "button", parent.prompt, "ALREADY_REQUESTED_UPSCALE")
        job = self._press(origin, parent, button, payload)
        if job.error is None and (button in _QUADRANTS or button in _BIGGER):
            parent.pressed.add(button)
        return job

    def describe(self, payload: dict[str, Any], base_url: str) -> Job:
        url = payload.get("url")
        if not url:
            raise Refused("url is required")
        origin = self._origin(payload, base_url)
        if not is_link(url):
            return self._fail(origin, "describe", "", "INVALID_LINK")
        return self._create(
            origin, "describe", "", self._new_seed(), content=describe_prompts(url), buttons=DESCRIBE_BUTTONS
        )

    def blend(self, payload: dict[str, Any], base_url: str) -> Job:
        urls = payload.get("urls")
        if not isinstance(urls, list) or not 2 <= len(urls) <= 5:
            raise Refused("urls must hold 2 to 5 image URLs")
        origin = self._origin(payload, base_url)
        prompt = " ".join(str(url) for url in urls)
        if not all(is_link(url) for url in urls):
            return self._fail(origin, "blend", prompt, "INVALID_LINK")
        seed = self._new_seed()
        image = ImageSpec("grid", prompt, seed, "blend", GRID_SIZE)
        return self._create(origin, "blend", prompt, seed, image=image, buttons=GRID_BUTTONS)

    def info(self, payload: dict[str, Any], base_url: str) -> Job:
        return self._create(
            self._origin(payload, base_url), "info", "", self._new_seed(), content=self._info()
        )

    def settings_message(self, payload: dict[str, Any], base_url: str) -> Job:
        """``GET /v2/settings`` (no toggle: show them) or ``POST /v2/settings {settingsToggle}``."""
        origin = self._origin(payload, base_url)
        if "settingsToggle" not in payload:
            return self._settings_result(origin)
        return self._toggle(origin, str(payload["settingsToggle"]))

    def slash_command(self, payload: dict[str, Any], base_url: str) -> Job:
        toggle = SLASH_COMMANDS.get(str(payload.get("cmd", "")))
        if toggle is None:
            raise Refused(f"Unknown command, use one of: {', '.join(SLASH_COMMANDS)}")
        self._apply_toggle(toggle)
        origin = self._origin(payload, base_url)
        return self._create(origin, "slash-command", "", self._new_seed(), content=_SLASH_REPLIES[toggle])

    # -- reads -----------------------------------------------------------------------------------------------

    def message(self, message_id: str, expire_mins: float | None, base_url: str) -> dict[str, Any]:
        """What ``GET /v2/message/<id>`` answers right now.

        A job waiting for a concurrency slot answers ``{"progress": 0, "progressImageUrl": null,
        "response": {"content": "JOB_QUEUED", "originatingMessageId": <id>}}``: our reading of the
        service's "reported as JOB_QUEUED", shaped so that a client looking only at ``progress`` keeps
        waiting. A running job answers ``{"progress": 31, "progressImageUrl": <url>}`` (progress 0 and a
        null URL before its first step), a finished one ``{"progress": 100, "response": {...}}``, and one
        with no result ``expireMins`` after its submission ``{"progress": "incomplete"}``, even if it
        finishes later.
        """
        job = self._job(message_id)
        now = self.clock.now()
        deadline = job.created + 60 * (self.settings.expire_mins if expire_mins is None else expire_mins)
        if now >= deadline and (job.stalled or job.finish > deadline):
            return {"progress": "incomplete"}
        if now >= job.finish and not job.stalled:
            return {"progress": 100, "response": self.result(job, base_url)}
        if now < job.start:
            return {
                "progress": 0,
                "progressImageUrl": None,
                "response": {"content": "JOB_QUEUED", "originatingMessageId": job.id},
            }
        progress = job.progress(now)
        url = f"{base_url}/cdn/{job.id}/progress_{progress}.png" if progress and job.image else None
        return {"progress": progress, "progressImageUrl": url}

    def result(self, job: Job, base_url: str) -> dict[str, Any]:
        """The finished job's result object: what ``response`` holds and what a webhook receives."""
        body: dict[str, Any] = {
            "accountId": self.settings.account_id,
            "createdAt": iso(self.clock.wall(job.finish - 0.3)),
            "responseAt": iso(self.clock.wall(job.finish)),
            "originatingMessageId": job.id,
            "buttons": [] if job.error else list(job.buttons),
            "type": job.type,
            "content": job.error or job.content,
            "description": "",
            "ref": job.origin.ref,
        }
        if job.error:
            return body
        if job.buttons:
            body["buttonMessageId"] = job.button_message_id
        if job.image is not None:
            cdn = f"{base_url}/cdn/{job.id}"
            if job.image.kind == "grid":
                body["imageUrl"] = f"{cdn}/grid.png"
                body["imageUrls"] = [f"{cdn}/0_{index}.png" for index in range(4)]
            else:
                body["imageUrl"] = f"{cdn}/upscale.png"
                body["imageUrls"] = [body["imageUrl"]]
        if job.show_seed:
            body["seed"] = job.seed
        return body

    def seed_of(self, message_id: str) -> str:
        job = self._job(message_id)
        if job.image is None or not job.succeeded(self.clock.now()):
            raise Refused("This message has no finished image, so no seed yet")
        return job.seed

    def image(self, job_id: str, name: str) -> ImageSpec | None:
        """The picture behind a CDN file name of a job, or None if the job has no such picture (yet)."""
        job = self.jobs.get(job_id)
        if job is None or job.image is None:
            return None
        step = re.fullmatch(r"progress_(\d{1,2})\.png", name)
        if step:
            return replace(job.image, size=PROGRESS_SIZE, progress=int(step[1]))
        if not job.succeeded(self.clock.now()):
            return None
        if job.image.kind == "tile":
            return job.image if name == "upscale.png" else None
        quadrant = re.fullmatch(r"0_([0-3])\.png", name)
        if quadrant:
            index = int(quadrant[1])
            return replace(
                job.image,
                kind="tile",
                index=index,
                size=QUADRANT_SIZE,
                label=f"{job.image.label} #{index + 1}",
            )
        return job.image if name == "grid.png" else None

    def due_webhooks(self) -> list[Job]:
        """Jobs whose webhook is due now, each handed out once."""
        now, due = self.clock.now(), []
        while self._webhooks and self._webhooks[0][0] <= now:
            due.append(self.jobs[heapq.heappop(self._webhooks)[1]])
        return due

    def next_webhook_in(self) -> float | None:
        """Real seconds until the next webhook falls due, or None when none is pending."""
        if not self._webhooks:
            return None
        return max(0.0, self.clock.real_seconds(self._webhooks[0][0] - self.clock.now()))

    # -- internals -------------------------------------------------------------------------------------------

    def _press(self, origin: Origin, parent: Job, button: str, payload: dict[str, Any]) -> Job:
        """The job a button on a finished result starts: an upscale, a new grid, or the same picture."""
        if parent.type == "describe":
            prompt = parent.content[DESCRIBE_BUTTONS.index(button)].split(" ", 1)[1]
            seed = self._new_seed()
            image = ImageSpec("grid", prompt, seed, button, GRID_SIZE)
            return self._create(origin, "button", prompt, seed, image=image, buttons=GRID_BUTTONS)
        assert parent.image is not None
        if button == FAVORITE_BUTTON:
            return self._create(
                origin,
                "button",
                parent.prompt,
                parent.seed,
                image=parent.image,
                buttons=parent.buttons,
                generates=False,
            )
        if button in _QUADRANTS:
            image = ImageSpec(
                "tile", parent.prompt, parent.seed, button, UPSCALE_SIZE, index=_QUADRANTS[button]
            )
            return self._create(
                origin,
                "button",
                parent.prompt,
                parent.seed,
                image=image,
                buttons=UPSCALE_BUTTONS,
            )
        if button in _BIGGER:
            image = replace(parent.image, size=_BIGGER[button], label=f"{parent.image.label} {button}")
            return self._create(
                origin,
                "button",
                parent.prompt,
                parent.seed,
                image=image,
                buttons=BIG_UPSCALE_BUTTONS,
            )
        prompt, error = parent.prompt, None
        if button == "Custom Zoom":
            prompt = str(payload.get("prompt") or parent.prompt)
            error = _custom_zoom_error(payload, prompt, self.settings.banned_words)
        seed = self._new_seed()
        image = ImageSpec("grid", prompt, seed, button, GRID_SIZE)
        return self._create(origin, "button", prompt, seed, image=image, buttons=GRID_BUTTONS, error=error)

    def _toggle(self, origin: Origin, toggle: str) -> Job:
        if toggle not in SETTINGS_TOGGLES:
            return self._fail(origin, "settings", "", "BUTTON_NOT_FOUND")
        self._apply_toggle(toggle)
        return self._settings_result(origin)

    def _settings_result(self, origin: Origin) -> Job:
        return self._create(
            origin, "settings", "", self._new_seed(), content=dict(self.modes), buttons=SETTINGS_TOGGLES
        )

    def _apply_toggle(self, toggle: str) -> None:
        """Settings change when the toggle is submitted, so the next job already runs in the new mode."""
        if toggle == "Reset Settings":
            self.modes = dict(_DEFAULT_MODES)
            return
        setting, value = _TOGGLE_EFFECTS[toggle]
        self.modes[setting] = value or ("Off" if self.modes[setting] == "On" else "On")

    def _fail(self, origin: Origin, kind: str, prompt: str, code: str) -> Job:
        return self._create(origin, kind, prompt, self._new_seed(), error=code)

    def _create(
        self,
        origin: Origin,
        kind: str,
        prompt: str,
        seed: str,
        *,
        content: Any = None,
        image: ImageSpec | None = None,
        buttons: tuple[str, ...] = (),
        error: str | None = None,
        mode: str | None = None,
        generates: bool = True,
        show_seed: bool = False,
    ) -> Job:
        """Fix a new job's timeline and store it.

        A job that draws a new image (``image`` given and ``generates``) takes a concurrency slot and a
        duration; errors and text answers appear after a short bot delay and take no slot. A successful
        result's ``content`` is the prompt unless given.
        """
        now = self.clock.now()
        mode = mode or self.modes["Job Mode"]
        error = error or self._forced_code(prompt)
        stalled = error == "STALL"
        error = None if stalled else error
        runs = error is None and image is not None and generates
        error = error or (self._refusal(now, mode) if runs else None)
        if runs and error is None:
            start, finish, steps = self._schedule(now, mode)
        else:
            start, finish, steps = (
                now,
                now + self._rng.uniform(self.settings.min_bot_delay, self.settings.max_bot_delay),
                0,
            )
        job = Job(
            id=self._new_id(),
            type=kind,
            prompt=prompt,
            content=prompt if content is None else content,
            seed=seed,
            origin=origin,
            created=now,
            start=start,
            finish=finish,
            steps=steps,
            error=error,
            stalled=stalled,
            image=image,
            buttons=buttons,
            button_message_id=self._new_id() if buttons else None,
            show_seed=show_seed,
        )
        self.jobs[job.id] = job
        if job.button_message_id:
            self._by_button_id[job.button_message_id] = job
        if origin.webhook and not stalled:
            heapq.heappush(self._webhooks, (job.finish, job.id))
        return job

    def _refusal(self, now: float, mode: str) -> str | None:
        """Why an image job cannot even queue: the queue is full, or the fast hours are used up.

        ``_slots`` holds, per concurrency slot, when it frees; ``_waiting`` the start times (in order) of
        jobs still queued, so its length after dropping the started ones is the queue's current length.
        """
        while len(self._slots) < self.settings.concurrency:
            heapq.heappush(self._slots, now)
        while len(self._slots) > self.settings.concurrency:
            heapq.heappop(self._slots)
        while self._waiting and self._waiting[0][0] <= now:
            self._waiting.popleft()
        if self._slots[0] > now and len(self._waiting) >= self.settings.queue_length:
            return "QUEUE_FULL"
        if mode != "Relax" and self._usage["Fast"][1] >= self.settings.fast_hours * 3600:
            return "NO_FAST_HOURS"
        return None

    def _schedule(self, now: float, mode: str) -> tuple[float, float, int]:
        """Give an image job the first slot that frees up, in submission order: (start, finish, steps)."""
        factor = self.settings.relax_factor if mode == "Relax" else _MODE_FACTORS[mode]
        duration = self._rng.uniform(self.settings.min_duration, self.settings.max_duration) * factor
        start = max(now, heapq.heappop(self._slots))
        heapq.heappush(self._slots, start + duration)
        if start > now:
            self._waiting.append((start, mode))
        usage = self._usage["Relax" if mode == "Relax" else "Fast"]
        usage[0] += 1
        usage[1] += duration
        return start, start + duration, self._rng.choice((3, 5))

    def _forced_code(self, prompt: str) -> str | None:
        lowered = prompt.lower()
        for needle, code in self.settings.faults.forced_codes.items():
            if needle and needle.lower() in lowered:
                return code
        return None

    def _info(self) -> dict[str, str]:
        now = self.clock.now()
        total = self.settings.fast_hours
        remaining = max(0.0, total - self._usage["Fast"][1] / 3600)
        percent = 100 * remaining / total if total else 0.0
        images = self._usage["Fast"][0] + self._usage["Relax"][0]
        hours = (self._usage["Fast"][1] + self._usage["Relax"][1]) / 3600
        queued = [mode for start, mode in self._waiting if start > now]
        return {
            "Subscription": "Standard (Active monthly)",
            "Job Mode": self.modes["Job Mode"],
            "Visibility Mode": self.modes["Visibility Mode"],
            "Fast Time Remaining": f"{remaining:.2f}/{total:.1f} hours ({percent:.2f}%)",
            "Lifetime Usage": f"{images} images ({hours:.2f} hours)",
            "Relaxed Usage": f"{self._usage['Relax'][0]} images ({self._usage['Relax'][1] / 3600:.2f} hours)",
            "Queued Jobs (fast)": str(sum(mode != "Relax" for mode in queued)),
            "Queued Jobs (relax)": str(queued.count("Relax")),
        }

    def _job(self, message_id: str) -> Job:
        job = self.jobs.get(message_id)
        if job is None:
            raise NotFound(message_id)
        return job

    def _origin(self, payload: dict[str, Any], base_url: str) -> Origin:
        webhook = payload.get("webhookOverride") or self.settings.default_webhook
        return Origin(
            ref=payload.get("ref", ""), webhook=str(webhook) if webhook else None, base_url=base_url
        )

    def _new_id(self) -> str:
        return "".join(self._ids.choices(_ID_ALPHABET, k=20))

    def _new_seed(self) -> str:
        return str(self._rng.randrange(2**32))


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_MODE_FLAGS = {"relax": "Relax", "fast": "Fast", "turbo": "Turbo"}
#: how much longer than a fast job a job takes in the modes other than Relax (which uses ``relax_factor``).
_MODE_FACTORS = {"Fast": 1.0, "Turbo": 0.5}


def _truthy(value: Any) -> bool:
    """``ignorePrefilter`` is a "true"/"false" string in the docs and a bool in one client: accept both."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _custom_zoom_error(payload: dict[str, Any], prompt: str, banned_words: list[str]) -> str | None:
    """Why a ``Custom Zoom`` press fails: a zoom outside 1 to 2, a malformed ``ar``, or a bad new prompt."""
    try:
        zoom = float(payload.get("zoom"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "INVALID_PARAMETER"
    ar = payload.get("ar")
    if not 1 <= zoom <= 2 or (ar not in (None, "") and not is_aspect_ratio(str(ar))):
        return "INVALID_PARAMETER"
    if find_banned_word(prompt, banned_words):
        return "BANNED_PROMPT"
    return "INVALID_PARAMETER" if parse_flags(prompt).invalid else None
