"""Content rules: banned words, prompt flags, and the text a describe job answers with.

Pure functions of their arguments, so the rules can be read in one place and the server only decides when
to apply them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from airflow_provider_nextleg.prompt_flags import bad_flag, prompt_flags


def find_banned_word(text: str, banned_words: Iterable[str]) -> str | None:
    """The first banned word that appears in ``text`` as a whole word (case-insensitive), if any."""
    for word in banned_words:
        if word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE):
            return word
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
