"""The built distributions, once per session: ``uv build`` of the repository into a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# user_project/ is a user's project that the wheel test copies elsewhere and runs there, not a test here.
collect_ignore_glob = ["user_project/*"]


@dataclass
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is missing: `make setup` installs it")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv, "build", "--quiet", "--out-dir", str(out), str(REPO_ROOT)], check=True)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Built(wheel=wheel, sdist=sdist)
