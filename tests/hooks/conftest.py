"""Fixtures of the hook tests: the hook on the emulator, called through its sync or its async face.

The emulator comes from the provider's pytest plugin: ``nextleg_emulator`` resets the session's emulator
(time scale 0.01, rate limit off) and points ``AIRFLOW_CONN_NEXTLEG_DEFAULT`` at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_nextleg.hooks.nextleg import NextLegHook

from .helpers import Call, call_through


@pytest.fixture
def hook(nextleg_emulator: Any) -> Iterator[NextLegHook]:
    """A hook on the emulator with quick retries (the emulator answers in milliseconds)."""
    hook = NextLegHook(retry_wait=0.01)
    yield hook
    hook.close()


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def call(face: str, hook: NextLegHook) -> Call:
    """``call("imagine", prompt, ref=...)``: the endpoint through the face under test."""
    return lambda name, *args, **kwargs: call_through(face, hook, name, *args, **kwargs)
