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


# The flag rules are the provider's, ``airflow_provider_nextleg.validation`` (``PROMPT_FLAGS``,
# ``prompt_flags``, ``bad_flag``, ``is_aspect_ratio``), restated here with the same names and meaning because
# that module imports the provider's exceptions, and with them Airflow: the emulator must start without it
# (``tests/emulator/test_starting.py``). ``tests/emulator/test_content_rules.py`` checks that both tables
# hold the same flags and judge the same values alike; the one difference is the caller's: the emulator
# asks with ``unknown_ok=False``, because Midjourney refuses a flag it does not know.
_ASPECT_RATIO = re.compile(r"[1-9][0-9]*:[1-9][0-9]*")
_FLAG = re.compile(r"(?:^|\s)--(\S*)((?:\s+(?!--)\S+)*)")


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
    """Whether ``value`` is an aspect ratio ``W:H`` of positive integers without leading zeros (``16:9``)."""
    return _ASPECT_RATIO.fullmatch(value) is not None


MIDJOURNEY_VERSIONS = ("1", "2", "3", "4", "5", "5.0", "5.1", "5.2", "6", "6.0", "6.1", "7")
PROMPT_FLAGS: dict[str, Callable[[str], bool]] = {
    "ar": is_aspect_ratio,
    "aspect": is_aspect_ratio,
    "v": _one_of(*MIDJOURNEY_VERSIONS),
    "version": _one_of(*MIDJOURNEY_VERSIONS),
    "niji": _one_of("", "4", "5", "6"),
    "seed": _number(0, 4294967295, integer=True),
    "sameseed": _number(0, 4294967295, integer=True),
    "no": lambda value: value != "",
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
    "tile": lambda value: value == "",
    "relax": lambda value: value == "",
    "fast": lambda value: value == "",
    "turbo": lambda value: value == "",
}
"""Midjourney's documented prompt flags and the values each takes: the provider's table, see above."""


def prompt_flags(prompt: str) -> list[tuple[str, str]]:
    """The ``--flag value`` parts of a prompt, in order: ``(name, value)``, the name lower case."""
    return [(name.lower(), value.strip()) for name, value in _FLAG.findall(prompt)]


def bad_flag(prompt: str, *, unknown_ok: bool) -> str | None:
    """The first flag of ``prompt`` Midjourney refuses (``--ar 0:0``), as written; ``None`` if none.

    :param unknown_ok: whether a flag missing from :data:`PROMPT_FLAGS` passes.
    """
    for name, value in prompt_flags(prompt):
        check = PROMPT_FLAGS.get(name)
        if (check is None and not unknown_ok) or (check is not None and not check(value)):
            return f"--{name} {value}".strip()
    return None


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
    """Judge a prompt's flags as Midjourney does: an unknown flag or a bad value makes it invalid."""
    invalid = bad_flag(prompt, unknown_ok=False)
    if invalid is not None:
        return PromptFlags(invalid=invalid)
    flags = dict(prompt_flags(prompt))
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
