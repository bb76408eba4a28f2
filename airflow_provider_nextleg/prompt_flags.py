"""Midjourney's documented prompt flags, judged by one table that the provider and the emulator share.

The provider refuses a documented flag with a bad value before paying for a job that would fail with
``INVALID_PARAMETER`` (:func:`~airflow_provider_nextleg.validation.check_prompt`); the emulator judges
prompts by the same table, and refuses unknown flags as the service does. Pure Python, importing nothing
of Airflow, so the emulator can use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ASPECT_RATIO = re.compile(r"[1-9][0-9]*:[1-9][0-9]*")
FLAG_PATTERN = re.compile(r"(?:^|\s)--(\S*)((?:\s+(?!--)\S+)*)")
"""A ``--flag value`` part of a prompt: the flag's name, then its value (the words up to the next flag)."""


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
"""The documented flags and the values each takes (names lower case, values as written); a flag missing
here is left to the service by the provider, since Midjourney adds flags over time."""


def prompt_flags(prompt: str) -> list[tuple[str, str]]:
    """
    The ``--flag value`` parts of a prompt, in order: ``(name, value)``, the name lower case.

    :param prompt: the prompt.
    """
    return [(name.lower(), value.strip()) for name, value in FLAG_PATTERN.findall(prompt)]


def bad_flag(prompt: str, *, unknown_ok: bool) -> str | None:
    """
    The first flag of ``prompt`` with a value Midjourney refuses (``--ar 0:0``), as written; ``None`` if none.

    :param prompt: the prompt.
    :param unknown_ok: whether a flag missing from :data:`PROMPT_FLAGS` passes.
    """
    for name, value in prompt_flags(prompt):
        check = PROMPT_FLAGS.get(name)
        if (check is None and not unknown_ok) or (check is not None and not check(value)):
            return f"--{name} {value}".strip()
    return None
