"""The emulated account: what each submission and button press turns into, and the account's modes.

Nothing here runs on its own. Each submission becomes a :class:`~.jobs.Job` whose whole timeline is
fixed at once from the simulated clock, the account's queue and a seeded random stream; how it looks
when polled is the protocol's business (:mod:`.protocol`). The server owns an :class:`Account` and calls
it from its event loop only, so it needs no locks.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import random
import uuid
from dataclasses import replace
from typing import Any

from airflow_provider_nextleg.emulator.clock import SimClock
from airflow_provider_nextleg.emulator.images import GRID_SIZE, UPSCALE_SIZE, ImageSpec, Inpaint, read_mask
from airflow_provider_nextleg.emulator.jobqueue import AccountQueue
from airflow_provider_nextleg.emulator.jobs import Job, Origin, Route
from airflow_provider_nextleg.emulator.prompts import describe_prompts, find_banned_word, is_link, parse_flags
from airflow_provider_nextleg.emulator.protocol import ApiError, CdnFile
from airflow_provider_nextleg.emulator.settings import STALL, EmulatorSettings
from airflow_provider_nextleg.prompt_flags import is_aspect_ratio

GRID_BUTTONS = ("U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4")
UPSCALE_BUTTONS = (
    "Vary (Strong)",
    "Vary (Subtle)",
    "🖌️ Vary (Region)",
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
VARY_REGION_BUTTON = "🖌️ Vary (Region)"
#: What the settings result says in ``content``, as the SDK types it (a string); the toggles are its buttons.
SETTINGS_CONTENT = "Adjust your settings here."
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


class Account:
    """One Midjourney account: its jobs, its queue, its modes and its pending webhooks.

    :param settings: the live settings, which every account reads (concurrency, durations, ...).
    :param clock: the emulator's clock.
    :param index: the account's place among the token's accounts; the first (0) is the one ``/v2`` uses,
        and it draws exactly the random streams a single-account emulator drew.
    :param account_id: the ``accountId`` of its results; ``None`` for the live ``settings.account_id``.
    """

    def __init__(
        self, settings: EmulatorSettings, clock: SimClock, index: int = 0, account_id: str | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.index = index
        self._account_id = account_id
        # Message ids must stay unique across resets (a client may still poll an old id), so their random
        # stream is never re-seeded; everything else restarts with the seed on reset.
        self._ids = random.Random(f"ids-{settings.seed}" + (f"-{index}" if index else ""))
        self.reset()

    @property
    def account_id(self) -> str:
        return self.settings.account_id if self._account_id is None else self._account_id

    def reset(self) -> None:
        """Forget every job, the queue, the usage and the modes; restart the seeded random stream."""
        self._rng = random.Random(
            self.settings.seed if not self.index else f"{self.settings.seed}-{self.index}"
        )
        self.jobs: dict[str, Job] = {}
        self._by_button_id: dict[str, Job] = {}
        self._by_uuid: dict[str, Job] = {}
        self.queue = AccountQueue(self.settings)
        self._webhooks: list[tuple[float, str]] = []
        self.modes = dict(_DEFAULT_MODES)

    # -- submissions ---------------------------------------------------------------------------------------
    # Each takes the request's fields, the base URL the client reached the emulator on, and for a pool of
    # accounts the pool's id of the submission; each returns the new job or raises ApiError (a 400).

    def imagine(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        prompt = payload.get("msg")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "msg is required")
        banned = find_banned_word(prompt, self.settings.banned_words)
        if banned and self.settings.prefilter and not _truthy(payload.get("ignorePrefilter")):
            raise ApiError(400, f"Invalid phrase: '{banned}'")
        flags = parse_flags(prompt)
        error = "BANNED_PROMPT" if banned else "INVALID_PARAMETER" if flags.invalid else None
        return self._grid(
            self._origin(payload, base_url, route),
            "imagine",
            prompt,
            "imagine",
            seed=flags.seed,
            error=error,
            mode=_MODE_FLAGS.get(flags.mode or ""),
        )

    def button(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        button, handle = payload.get("button"), payload.get("buttonMessageId")
        if not isinstance(button, str) or not isinstance(handle, str) or not button or not handle:
            raise ApiError(400, "button and buttonMessageId are required")
        if button == VARY_REGION_BUTTON:
            _require_region_fields(payload)
        origin = self._origin(payload, base_url, route)
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

    def describe(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        url = payload.get("url")
        if not url:
            raise ApiError(400, "url is required")
        origin = self._origin(payload, base_url, route)
        if not is_link(url):
            return self._fail(origin, "describe", "", "INVALID_LINK")
        return self._create(
            origin, "describe", "", self._new_seed(), content=describe_prompts(url), buttons=DESCRIBE_BUTTONS
        )

    def blend(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        urls = payload.get("urls")
        if not isinstance(urls, list) or not 2 <= len(urls) <= 5:
            raise ApiError(400, "urls must hold 2 to 5 image URLs")
        origin = self._origin(payload, base_url, route)
        prompt = " ".join(str(url) for url in urls)
        if not all(is_link(url) for url in urls):
            return self._fail(origin, "blend", prompt, "INVALID_LINK")
        return self._grid(origin, "blend", prompt, "blend")

    def info(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        return self._create(
            self._origin(payload, base_url, route), "info", "", self._new_seed(), content=self._info_content()
        )

    def settings_message(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        """``GET /v2/settings`` (no toggle: show them) or ``POST /v2/settings {settingsToggle}``."""
        origin = self._origin(payload, base_url, route)
        if "settingsToggle" not in payload:
            return self._settings_result(origin)
        return self._toggle(origin, str(payload["settingsToggle"]))

    def slash_command(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        toggle = SLASH_COMMANDS.get(str(payload.get("cmd", "")))
        if toggle is None:
            raise ApiError(400, f"Unknown command, use one of: {', '.join(SLASH_COMMANDS)}")
        self._apply_toggle(toggle)
        origin = self._origin(payload, base_url, route)
        return self._create(origin, "slash-command", "", self._new_seed(), content=_SLASH_REPLIES[toggle])

    def v1(self, payload: dict[str, Any], base_url: str, route: Route | None = None) -> Job:
        """``POST /api``, the v1 API: one endpoint, what to do in ``cmd`` [doc: the v1 pages].

        ``cmd`` is ``imagine`` (with ``msg``), ``describe`` (``url``), ``info``, or one of the slash
        commands (``relax``, ``fast``, ``private``, ``stealth``); a button press has no ``cmd``, only
        ``button`` and ``buttonMessageId``. A press sent as ``reaction`` (seen in a client asking for the
        seed with ``✉️``) is taken as its ``button``: our judgement. The answer is v2's; the result can be
        polled on ``/v2/message`` (the v1 pages say so) and goes to the webhook.
        """
        cmd = payload.get("cmd")
        if cmd in (None, ""):
            if "button" not in payload and "reaction" in payload:
                payload = {**payload, "button": payload["reaction"]}
            if "button" in payload:
                return self.button(payload, base_url, route)
            raise ApiError(400, "cmd is required (imagine, describe, info, relax, fast, private, stealth)")
        commands = {"imagine": self.imagine, "describe": self.describe, "info": self.info}
        if cmd in commands:
            return commands[cmd](payload, base_url, route)
        if cmd in SLASH_COMMANDS:
            return self.slash_command(payload, base_url, route)
        raise ApiError(
            400,
            f"Unknown cmd {str(cmd)[:40]!r}, use one of: imagine, describe, info, "
            + ", ".join(SLASH_COMMANDS),
        )

    # -- reads -----------------------------------------------------------------------------------------------

    def job(self, message_id: str) -> Job:
        """The job of a message id; an id the account never issued answers 404."""
        job = self.jobs.get(message_id)
        if job is None:
            raise ApiError(404, f"Message not found: {message_id}")
        return job

    def upscale_url(self, payload: dict[str, Any], base_url: str) -> str:
        """``GET /upscale-img-url?buttonMessageId=&button=U1``: the URL of one image of a finished grid.

        The SDK's ``upscaleImgUrl`` (``{url}``) [sdk]: the grid's image on Midjourney's CDN, there at once,
        no job, nothing paid. An id the account never issued, or a grid not finished, answers 404, and a
        button other than U1 to U4 of a grid 400 (both our judgement: the errors are not documented).
        """
        button, handle = payload.get("button"), payload.get("buttonMessageId")
        if not isinstance(button, str) or not isinstance(handle, str) or not button or not handle:
            raise ApiError(400, "button and buttonMessageId are required")
        parent = self._by_button_id.get(handle)
        if parent is None or parent.image is None or not parent.succeeded(self.clock.now()):
            raise ApiError(404, f"No finished image for buttonMessageId {handle[:40]}")
        if parent.image.kind != "grid" or button not in _QUADRANTS:
            raise ApiError(
                400, f"button must be one of {', '.join(_QUADRANTS)} of a grid, got {button[:40]!r}"
            )
        return CdnFile(parent.uuid, "tile", _QUADRANTS[button]).url(base_url)

    def seed_of(self, message_id: str) -> str:
        job = self.job(message_id)
        if job.image is None or not job.succeeded(self.clock.now()):
            raise ApiError(400, "This message has no finished image, so no seed yet")
        return job.seed

    def image(self, file: CdnFile) -> ImageSpec | None:
        """The picture behind a CDN file, or None if no job has such a picture (yet)."""
        job = self._by_uuid.get(file.uuid)
        return None if job is None else job.picture(file, self.clock.now())

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
            return self._grid(origin, "button", prompt, button)
        assert parent.image is not None
        if button == VARY_REGION_BUTTON:
            return self._vary_region(origin, parent.image, payload)
        if button == FAVORITE_BUTTON:
            image, buttons = parent.image, parent.buttons
        elif button in _QUADRANTS:
            image = ImageSpec(
                "tile", parent.prompt, parent.seed, button, UPSCALE_SIZE, index=_QUADRANTS[button]
            )
            buttons = UPSCALE_BUTTONS
        elif button in _BIGGER:
            image = replace(parent.image, size=_BIGGER[button], label=f"{parent.image.label} {button}")
            buttons = BIG_UPSCALE_BUTTONS
        else:
            prompt, error = parent.prompt, None
            if button == "Custom Zoom":
                prompt = str(payload.get("prompt") or parent.prompt)
                error = _custom_zoom_error(payload, prompt, self.settings.banned_words)
            return self._grid(origin, "button", prompt, button, error=error)
        return self._create(
            origin,
            "button",
            parent.prompt,
            parent.seed,
            image=image,
            buttons=buttons,
            generates=button != FAVORITE_BUTTON,
        )

    def _vary_region(self, origin: Origin, base: ImageSpec, payload: dict[str, Any]) -> Job:
        """A new grid: the upscale with the mask's region drawn anew from the press's prompt.

        The prompt follows the rules of any prompt (banned words, flags); a mask that is no PNG or WebP in
        base64, or marks nothing, ends the job ``INVALID_PARAMETER`` (our reading: Midjourney's editor
        refuses it; the service's answer to a bad mask is not documented).
        """
        prompt = str(payload["prompt"])
        mask = _decode_mask(payload["mask"])
        error = None
        if mask is None:
            error = "INVALID_PARAMETER"
        elif find_banned_word(prompt, self.settings.banned_words):
            error = "BANNED_PROMPT"
        elif parse_flags(prompt).invalid:
            error = "INVALID_PARAMETER"
        seed = self._new_seed()
        image = None
        if mask is not None:
            inpaint = Inpaint(replace(base, label="", progress=100), mask)
            image = ImageSpec("grid", prompt, seed, VARY_REGION_BUTTON, GRID_SIZE, inpaint=inpaint)
        return self._create(origin, "button", prompt, seed, image=image, buttons=GRID_BUTTONS, error=error)

    def _grid(
        self,
        origin: Origin,
        kind: str,
        prompt: str,
        label: str,
        *,
        seed: str | None = None,
        error: str | None = None,
        mode: str | None = None,
    ) -> Job:
        """A job that draws a new grid (imagine, blend, variations, rerolls, zooms, pans), with a new seed
        unless the prompt's ``--seed`` gave one."""
        seed = seed or self._new_seed()
        image = ImageSpec("grid", prompt, seed, label, GRID_SIZE)
        return self._create(
            origin, kind, prompt, seed, image=image, buttons=GRID_BUTTONS, error=error, mode=mode
        )

    def _toggle(self, origin: Origin, toggle: str) -> Job:
        if toggle not in SETTINGS_TOGGLES:
            return self._fail(origin, "settings", "", "BUTTON_NOT_FOUND")
        self._apply_toggle(toggle)
        return self._settings_result(origin)

    def _settings_result(self, origin: Origin) -> Job:
        return self._create(
            origin, "settings", "", self._new_seed(), content=SETTINGS_CONTENT, buttons=SETTINGS_TOGGLES
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
        result's ``content`` is the prompt unless given. A forced code (see ``FaultSettings.forced_codes``)
        applies where the request itself is fine.
        """
        now = self.clock.now()
        mode = mode or self.modes["Job Mode"]
        forced = None if error else self.settings.faults.forced_code(prompt)
        stalled = forced == STALL
        error = error or (None if stalled else forced)
        runs = error is None and image is not None and generates
        error = error or (self.queue.refusal(now, mode) if runs else None)
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
            uuid=str(uuid.UUID(int=self._ids.getrandbits(128), version=4)),
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
        self._by_uuid[job.uuid] = job
        if job.button_message_id:
            self._by_button_id[job.button_message_id] = job
        if origin.webhook and not stalled:
            heapq.heappush(self._webhooks, (job.finish, job.id))
        return job

    def _schedule(self, now: float, mode: str) -> tuple[float, float, int]:
        """Draw an admitted image job's duration and progress steps, and queue it: (start, finish, steps)."""
        factor = self.settings.relax_factor if mode == "Relax" else _MODE_FACTORS[mode]
        duration = self._rng.uniform(self.settings.min_duration, self.settings.max_duration) * factor
        start = self.queue.take_slot(now, mode, duration)
        return start, start + duration, self._rng.choice((3, 5))

    def _info_content(self) -> dict[str, str]:
        return {
            "Subscription": "Standard (Active monthly)",
            "Job Mode": self.modes["Job Mode"],
            "Visibility Mode": self.modes["Visibility Mode"],
            **self.queue.report(self.clock.now()),
        }

    def _origin(self, payload: dict[str, Any], base_url: str, route: Route | None) -> Origin:
        webhook = payload.get("webhookOverride") or self.settings.default_webhook
        return Origin(
            ref=payload.get("ref", ""),
            webhook=str(webhook) if webhook else None,
            base_url=base_url,
            account_id=self.account_id,
            route=route,
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


def _require_region_fields(payload: dict[str, Any]) -> None:
    """``🖌️ Vary (Region)`` takes ``mask`` and ``prompt`` (the documentation lists neither as optional)."""
    for name, what in (("mask", "the region as a base64 PNG"), ("prompt", "the new prompt, or the original")):
        value = payload.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, f"{name} is required with {VARY_REGION_BUTTON}: give {what}")


def _decode_mask(text: str) -> bytes | None:
    """The mask a press sent, decoded and checked (:func:`~.images.read_mask`), or None if unusable.

    A ``data:image/png;base64,`` prefix is accepted, and so are spaces for ``+`` (a GET form whose query
    was not encoded): both our judgement, leniencies that cost nothing.
    """
    _, comma, data = text.partition(",")
    encoded = (data if comma and text.startswith("data:") else text).strip().replace(" ", "+")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return read_mask(raw)
