"""An offline emulator of the NextLeg v2 API, for the demo, the tests and users' own DAG tests.

Three ways to run it:

- ``nextleg-emulator --port 8765 --time-scale 0.01`` (``--help`` lists every setting and fault flag);
- ``with EmulatorServer(EmulatorSettings(time_scale=0.01, rate_limit=False)) as emu:`` in-process, on a
  free port of 127.0.0.1 (``emu.base_url``);
- the ``nextleg_emulator`` pytest fixture (a clean emulator per test, set as ``nextleg_default``).

Tests inspect and steer it through ``/_emulator/`` with the admin token (:class:`EmulatorAdmin`, whose
methods :class:`EmulatorServer` has too): ``GET ledger``, ``GET counters``, ``GET jobs``, ``GET accounts``,
``GET webhooks``, ``GET|PUT|POST faults``, ``GET|PATCH settings``, ``POST reset``.

Importing this package is cheap (settings only): the pytest plugin imports it in every pytest run. The
server side (FastAPI, uvicorn, Pillow, the ``[emulator]`` extra) loads when :class:`EmulatorServer` or
:class:`EmulatorAdmin` is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_nextleg.emulator.settings import EmulatorSettings, Fault, FaultSettings

if TYPE_CHECKING:
    from airflow_provider_nextleg.emulator.admin import EmulatorAdmin, duplicate_submissions
    from airflow_provider_nextleg.emulator.server import EmulatorServer

__all__ = [
    "EmulatorAdmin",
    "EmulatorServer",
    "EmulatorSettings",
    "Fault",
    "FaultSettings",
    "duplicate_submissions",
]

_LAZY = {"EmulatorAdmin": "admin", "duplicate_submissions": "admin", "EmulatorServer": "server"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
