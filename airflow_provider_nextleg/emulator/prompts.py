"""Content rules: banned words, prompt flags, and the text a describe job answers with.

Pure functions of their arguments, so the rules can be read in one place and the server only decides when
to apply them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


def find_banned_word(text: str, banned_words: Iterable[str]) -> str | None:
    """The first banned word that appears in ``text`` as a whole word (case-insensitive), if any."""
    for word in banned_words:
        if word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE):
            return word
    return None


def _number(low: float, high: float, *, integer: bool = False) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            return False
        return low <= number <= high

    return check


def _one_of(*choices: str) -> Callable[[str], bool]:
    return lambda value: value.lower() in choices


def is_aspect_ratio(value: str) -> bool:
    """Whether ``value`` is an aspect ratio like ``16:9``, as ``--ar`` and Custom Zoom's ``ar`` take."""
    return re.fullmatch(r"[1-9]\d*:[1-9]\d*", value) is not None


def _no_value(value: str) -> bool:
    return value == ""


def _any_text(value: str) -> bool:
    return value != ""


_VERSIONS = ("1", "2", "3", "4", "5", "5.0", "5.1", "5.2", "6", "6.0", "6.1")
_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "ar": is_aspect_ratio,
    "aspect": is_aspect_ratio,
    "v": _one_of(*_VERSIONS),
    "version": _one_of(*_VERSIONS),
    "niji": _one_of("", "4", "5", "6"),
    "seed": _number(0, 4294967295, integer=True),
    "sameseed": _number(0, 4294967295, integer=True),
    "no": _any_text,
    "c": _number(0, 100, integer=True),
    "chaos": _number(0, 100, integer=True),
    "q": _one_of(".25", "0.25", ".5", "0.5", "1", "2"),
    "quality": _one_of(".25", "0.25", ".5", "0.5", "1", "2"),
    "s": _number(0, 1000, integer=True),
    "stylize": _number(0, 1000, integer=True),
    "style": _one_of("raw", "cute", "expressive", "original", "scenic", "4a", "4b", "4c"),
    "w": _number(0, 3000, integer=True),
    "weird": _number(0, 3000, integer=True),
    "iw": _number(0, 3),
    "stop": _number(10, 100, integer=True),
    "r": _number(1, 40, integer=True),
    "repeat": _number(1, 40, integer=True),
    "tile": _no_value,
    "relax": _no_value,
    "fast": _no_value,
    "turbo": _no_value,
}


@dataclass(frozen=True)
class PromptFlags:
    """The flags of a prompt that change what the emulator does with it.

    :param invalid: the first flag that is unknown or has a bad value (the job ends ``INVALID_PARAMETER``).
    :param seed: the value of ``--seed``, which then becomes the job's seed.
    :param mode: ``relax``, ``fast`` or ``turbo`` when the prompt overrides the account's job mode.
    """

    invalid: str | None = None
    seed: str | None = None
    mode: str | None = None


def parse_flags(prompt: str) -> PromptFlags:
    """Check the ``--flag value`` parts of a prompt the way Midjourney's parser does, in a smaller table."""
    flags: dict[str, str] = {}
    for part in re.split(r"(?:^|\s)--", prompt)[1:]:
        name, _, value = part.strip().partition(" ")
        name, value = name.lower(), value.strip()
        validator = _VALIDATORS.get(name)
        if validator is None or not validator(value):
            return PromptFlags(invalid=f"--{part.strip()}")
        flags[name] = value
    mode = next((name for name in ("relax", "fast", "turbo") if name in flags), None)
    return PromptFlags(seed=flags.get("seed") or flags.get("sameseed"), mode=mode)


def is_link(url: object) -> bool:
    """Whether ``url`` looks like an image link the bot could fetch (``INVALID_LINK`` otherwise)."""
    return isinstance(url, str) and re.fullmatch(r"https?://[^\s/]+\S*", url) is not None


_SUBJECTS = ("a lighthouse", "an old fox", "a glass teapot", "a paper boat", "a desert city", "a koi pond")
_STYLES = ("watercolor", "art nouveau", "ukiyo-e", "low-poly 3d", "film noir", "studio ghibli")
_MOODS = ("soft morning light", "neon reflections", "muted earth tones", "dramatic clouds", "pastel haze")
_RATIOS = ("1:1", "3:2", "2:3", "16:9", "4:5")


def describe_prompts(url: str) -> list[str]:
    """Four prompts for an image, numbered like the bot's answer; deterministic from the URL alone."""
    digest = hashlib.sha256(url.encode()).digest()
    prompts = []
    for number in range(4):
        a, b, c, d = digest[number * 4 : number * 4 + 4]
        prompts.append(
            f"{number + 1}\N{VARIATION SELECTOR-16}\N{COMBINING ENCLOSING KEYCAP} "
            f"{_SUBJECTS[a % len(_SUBJECTS)]} in the style of {_STYLES[b % len(_STYLES)]}, "
            f"{_MOODS[c % len(_MOODS)]} --ar {_RATIOS[d % len(_RATIOS)]}"
        )
    return prompts
