"""Checks of the arguments of NextLeg calls, made before anything is sent.

The hook runs them on every call; operators run the same ones in their own validation, so a bad
argument fails the task before a paid job is started. Each check returns the value to send and raises
:class:`~airflow_provider_nextleg.exceptions.NextLegInputError` (a ``ValueError`` and an
``AirflowFailException``) naming the problem and the fix.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from urllib.parse import urlsplit

from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.prompt_flags import FLAG_PATTERN, bad_flag, is_aspect_ratio

MAX_PROMPT_LENGTH = 4000
"""Longest prompt accepted. NextLeg forwards prompts to Midjourney as Discord messages, and 4000
characters is the most any Discord message can carry; a longer prompt cannot reach Midjourney whole."""

MAX_MESSAGE_ID_LENGTH = 128
"""Longest message id accepted; NextLeg's ids are 20 characters (Firestore document ids)."""

CUSTOM_ZOOM_BUTTON = "Custom Zoom"
VARY_REGION_BUTTON = "🖌️ Vary (Region)"
MAX_MASK_BYTES = 8 * 1024 * 1024
"""Largest mask accepted: an upscale's size, as a PNG, is far smaller."""
MAX_MASK_SIDE = 4096
SLASH_COMMANDS = ("relax", "fast", "private", "stealth")
MIN_BLEND_URLS, MAX_BLEND_URLS = 2, 5
MIN_ZOOM, MAX_ZOOM = 1.0, 2.0

# RFC 3986 unreserved characters, starting with a letter or digit: a message id goes into the URL path as
# it is, so nothing that needs escaping (and nothing that changes the path: '/', '?', '#', '.', '..') is
# accepted.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")


def _fail(problem: str, fix: str) -> NextLegInputError:
    return NextLegInputError(problem, advice=f"{fix} Nothing was sent to NextLeg.")


def check_prompt(prompt: object, *, name: str = "prompt") -> str:
    """
    A prompt: a non-blank string of at most :data:`MAX_PROMPT_LENGTH` characters, sent as given.

    :param prompt: the prompt.
    :param name: the argument's name, for the message.
    """
    if prompt is None:
        raise _fail(
            f"{name} is None",
            f"Give a {name}; if it is a template, check that what it reads exists (a missing "
            "dag_run.conf or params key renders as None).",
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail(f"{name} is empty or not a string ({type(prompt).__name__})", f"Give a non-blank {name}.")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise _fail(
            f"{name} has {len(prompt)} characters, over the {MAX_PROMPT_LENGTH} a Discord message carries",
            f"Shorten the {name}.",
        )
    if not re.search(r"\w", FLAG_PATTERN.sub(" ", prompt)):
        raise _fail(f"{name} {prompt!r:.80} has flags but no words", f"Say what to draw in the {name}.")
    flag = bad_flag(prompt, unknown_ok=True)
    if flag is not None:
        raise _fail(
            f"{name} has the flag {flag!r:.60}, whose value Midjourney refuses",
            "Fix the flag (e.g. --ar 16:9, --v 6.1, --chaos 0 to 100) or remove it.",
        )
    return prompt


def check_text(value: object, *, name: str) -> str:
    """
    A required free-form string (a button label, a settings toggle): non-blank, sent verbatim.

    :param value: the string.
    :param name: the argument's name, for the message.
    """
    if not isinstance(value, str) or not value.strip():
        raise _fail(
            f"{name} is empty or not a string ({type(value).__name__})",
            f"Give the {name} exactly as NextLeg listed it.",
        )
    return value


def check_message_id(message_id: object, *, name: str = "message_id") -> str:
    """
    A message id as NextLeg returns them; only URL-safe characters, since it becomes part of a URL path.

    :param message_id: the id.
    :param name: the argument's name, for the message.
    """
    if (
        not isinstance(message_id, str)
        or not _MESSAGE_ID.fullmatch(message_id)
        or ".." in message_id
        or len(message_id) > MAX_MESSAGE_ID_LENGTH
    ):
        raise _fail(
            f"{name} {message_id!r:.80} is not a NextLeg message id",
            f"Pass the messageId (or buttonMessageId) NextLeg returned: letters, digits and '._~-' only, "
            f"at most {MAX_MESSAGE_ID_LENGTH} characters, no '/', '?', '#', '..' or spaces.",
        )
    return message_id


def check_url(url: object, *, name: str) -> str:
    """
    An http(s) URL with a host (an image to describe or blend, a webhook).

    :param url: the URL.
    :param name: the argument's name, for the message.
    """
    if isinstance(url, str) and not any(character.isspace() for character in url):
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        if parts and parts.scheme in ("http", "https") and parts.hostname:
            return url
    raise _fail(
        f"{name} {url!r:.120} is not an http(s) URL", f"Give {name} as a full http:// or https:// URL."
    )


def check_blend_urls(urls: object) -> list[str]:
    """
    The images of a blend: a list of :data:`MIN_BLEND_URLS` to :data:`MAX_BLEND_URLS` http(s) URLs.

    :param urls: the URLs.
    """
    if isinstance(urls, str) or not isinstance(urls, list | tuple):
        raise _fail(
            f"urls must be a list of URLs, got {type(urls).__name__}", "Pass the image URLs as a list."
        )
    if not MIN_BLEND_URLS <= len(urls) <= MAX_BLEND_URLS:
        raise _fail(
            f"a blend takes {MIN_BLEND_URLS} to {MAX_BLEND_URLS} images, got {len(urls)}",
            f"Pass between {MIN_BLEND_URLS} and {MAX_BLEND_URLS} image URLs.",
        )
    return [check_url(url, name=f"urls[{index}]") for index, url in enumerate(urls)]


def check_zoom(zoom: object) -> float:
    """
    The Custom Zoom factor: a number from :data:`MIN_ZOOM` to :data:`MAX_ZOOM` (a bool is not a number).

    :param zoom: the factor.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, int | float) or not MIN_ZOOM <= zoom <= MAX_ZOOM:
        raise _fail(
            f"zoom {zoom!r:.40} is not a number from {MIN_ZOOM:g} to {MAX_ZOOM:g}",
            f"Pass zoom as a number between {MIN_ZOOM:g} and {MAX_ZOOM:g}, e.g. 1.5.",
        )
    return float(zoom)


def check_aspect_ratio(ar: object) -> str:
    """
    An aspect ratio ``W:H`` of two positive integers, e.g. ``16:9``.

    :param ar: the ratio.
    """
    if not isinstance(ar, str) or not is_aspect_ratio(ar):
        raise _fail(
            f"ar {ar!r:.40} is not an aspect ratio W:H",
            "Pass ar as two positive integers without leading zeros, e.g. '16:9'.",
        )
    return ar


def check_button_options(button: str, zoom: object, ar: object, prompt: object, mask: object) -> bytes | None:
    """
    The options some buttons take: ``Custom Zoom`` needs ``zoom`` (and may take ``ar`` and ``prompt``);
    ``🖌️ Vary (Region)`` needs ``mask`` and may take ``prompt``; no other button takes any of them.

    :param button: the button pressed.
    :param zoom: the zoom factor, or ``None``.
    :param ar: the aspect ratio, or ``None``.
    :param prompt: the replacement prompt, or ``None``.
    :param mask: the region to redraw, a PNG's bytes, or ``None``.
    :return: the mask's bytes, checked.
    """
    takes = {CUSTOM_ZOOM_BUTTON: ("zoom", "ar", "prompt"), VARY_REGION_BUTTON: ("mask", "prompt")}
    given = {"zoom": zoom, "ar": ar, "prompt": prompt, "mask": mask}
    stray = [name for name, value in given.items() if value is not None and name not in takes.get(button, ())]
    if stray:
        owners = sorted({owner for owner, names in takes.items() for name in stray if name in names})
        raise _fail(
            f"{', '.join(stray)} only go with the {' or '.join(map(repr, owners))} button, not {button!r}",
            f"Drop {', '.join(stray)}, or press {' or '.join(map(repr, owners))}.",
        )
    if button == CUSTOM_ZOOM_BUTTON:
        if zoom is None:
            raise _fail(f"the {CUSTOM_ZOOM_BUTTON!r} button needs zoom", "Pass zoom, a number from 1 to 2.")
        check_zoom(zoom)
        if ar is not None:
            check_aspect_ratio(ar)
    if button == VARY_REGION_BUTTON and mask is None:
        raise _fail(
            f"the {VARY_REGION_BUTTON!r} button needs mask", "Pass mask, a PNG marking the region to redraw."
        )
    if prompt is not None:
        check_prompt(prompt)
    return None if mask is None else check_mask(mask)


def check_mask(mask: object) -> bytes:
    """
    The region a ``🖌️ Vary (Region)`` press redraws: a PNG (by its bytes) of at most
    :data:`MAX_MASK_BYTES`, :data:`MAX_MASK_SIDE` pixels a side.

    :param mask: the PNG's bytes.
    """
    if not isinstance(mask, bytes | bytearray):
        raise _fail(
            f"mask must be a PNG's bytes, got {type(mask).__name__}",
            "Pass mask as bytes, a local path or an ObjectStoragePath of a PNG.",
        )
    if len(mask) > MAX_MASK_BYTES:
        raise _fail(
            f"mask has {len(mask)} bytes, over {MAX_MASK_BYTES}",
            "Pass a smaller PNG (a mask compresses well).",
        )
    width, height = _png_size(bytes(mask))
    if not (1 <= width <= MAX_MASK_SIDE and 1 <= height <= MAX_MASK_SIDE):
        raise _fail(
            f"mask is {width}x{height} pixels, not a PNG of 1 to {MAX_MASK_SIDE} pixels a side",
            "Pass a PNG the size of the upscale it marks (e.g. 1024x1024).",
        )
    return bytes(mask)


def _png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height from its header (0, 0 for bytes that are no PNG)."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_slash_command(cmd: object) -> str:
    """
    A slash command NextLeg runs: one of :data:`SLASH_COMMANDS`.

    :param cmd: the command, without the slash.
    """
    if isinstance(cmd, str) and cmd in SLASH_COMMANDS:
        return cmd
    raise _fail(
        f"{cmd!r:.40} is not a slash command NextLeg runs", f"Use one of {', '.join(SLASH_COMMANDS)}."
    )


def check_expire_mins(expire_mins: object) -> int:
    """
    The minutes after which an unfinished job is reported incomplete: a positive integer.

    :param expire_mins: the minutes.
    """
    if isinstance(expire_mins, bool) or not isinstance(expire_mins, int) or expire_mins < 1:
        raise _fail(
            f"expire_mins {expire_mins!r:.40} is not a positive integer", "Pass whole minutes, e.g. 12."
        )
    return expire_mins


MAX_SECONDS = 7 * 24 * 3600.0
"""Longest duration an operator argument may give: a week (a job runs minutes; relaxed ones, hours)."""


def check_seconds(value: object, *, name: str, positive: bool = False) -> float | None:
    """
    A duration given as seconds or a ``timedelta``, in seconds: finite, from 0 (above 0 with
    ``positive``) to :data:`MAX_SECONDS`; ``None`` stays ``None``.

    :param value: the duration.
    :param name: the argument's name, for the message.
    :param positive: whether 0 is refused too.
    """
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not (seconds > 0 if positive else seconds >= 0)
        or seconds > MAX_SECONDS
    ):
        raise _fail(
            f"{name} {value!r:.40} is not a duration from {'above ' if positive else ''}0 to a week",
            f"Pass {name} as seconds (a number) or a timedelta.",
        )
    return float(seconds)


def check_ref(ref: object) -> str:
    """
    A ``ref`` (any string; NextLeg echoes it in the result and the webhook).

    :param ref: the reference.
    """
    if not isinstance(ref, str):
        raise _fail(
            f"ref must be a string, got {type(ref).__name__}", "Pass ref as a string, e.g. json.dumps(...)."
        )
    return ref


def check_flag(value: object, *, name: str) -> bool:
    """
    A yes/no option: a bool, not a string such as ``"false"`` (which would read as true).

    :param value: the option.
    :param name: the argument's name, for the message.
    """
    if not isinstance(value, bool):
        raise _fail(f"{name} must be True or False, got {value!r:.40}", f"Pass {name} as a bool.")
    return value
