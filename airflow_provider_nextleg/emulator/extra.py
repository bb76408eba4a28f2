"""The ``[emulator]`` extra: what the emulator's server needs beyond the provider's own dependencies.

The command line and the pytest fixture check it first, so a provider installed without the extra
answers with one line naming the extra to install instead of a ``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib.util

#: The modules the server imports, and the distributions of the extra that bring them.
EXTRA_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "PIL": "pillow"}
INSTALL_COMMAND = 'pip install "airflow-provider-nextleg[emulator]"'


def missing_distributions() -> list[str]:
    """The extra's distributions that are not installed (empty when the extra is)."""
    return [dist for module, dist in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]


def missing_extra_message(what: str = "the NextLeg emulator") -> str | None:
    """One line saying which extra to install, or None when it is installed."""
    missing = missing_distributions()
    if not missing:
        return None
    return (
        f"{what} needs the provider's [emulator] extra, which is not installed "
        f"(missing: {', '.join(missing)}): {INSTALL_COMMAND}"
    )
