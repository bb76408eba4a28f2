"""The wheel that ``uv build`` makes, as a user meets it: installed in a fresh environment with Airflow and
pytest only, then with its ``[emulator]`` extra, and used from a project of the user's own outside this
repository (``user_project/``: a DAG folder and a test that runs ``dag.test()`` against the emulator
fixture, with nothing set up by hand: no AIRFLOW_HOME, no database reset).

About a minute (a fresh environment of some 150 packages from uv's cache, two pytest sessions):
``make test-wheel``; CI runs it once, on the newest Airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import airflow
import pytest
from conftest import REPO_ROOT

from .conftest import Built

pytestmark = pytest.mark.wheel

USER_PROJECT = Path(__file__).parent / "user_project"
EXTRA_LINE = (
    "the {what} needs the provider's [emulator] extra, which is not installed (missing: pillow): "
    'pip install "airflow-provider-nextleg[emulator]"'
)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]


def uv(*arguments: str) -> None:
    uv_path = shutil.which("uv")
    assert uv_path, "uv is missing: `make setup` installs it"
    result = run([uv_path, *arguments], env={**os.environ, "UV_COMPILE_BYTECODE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr


def a_users_environment(home: Path) -> dict[str, str]:
    """A shell of a user who has set nothing up: no AIRFLOW_* variables (this suite's conftest sets some),
    a home of their own (so nothing lands in ~/airflow), not this repository on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST"))}
    env.pop("PYTHONPATH", None)
    env["HOME"] = str(home)
    return env


def test_a_users_project_runs_dag_test_against_the_emulator_from_the_built_wheel(
    built: Built, tmp_path: Path
):
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    base_python = getattr(sys, "_base_executable", sys.executable)
    uv("venv", "--quiet", "--python", base_python, str(venv))
    constraints = REPO_ROOT / ".ci" / f"constraints-airflow-{airflow.__version__}.txt"
    uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(python),
        f"apache-airflow=={airflow.__version__}",
        str(built.wheel),
        "pytest",
        *(["--constraint", str(constraints)] if constraints.exists() else []),
    )
    project = tmp_path / "my-project"
    shutil.copytree(USER_PROJECT, project)
    (tmp_path / "home").mkdir()
    env = a_users_environment(tmp_path / "home")

    # Without the [emulator] extra: one line naming it, from the command (even --help) and the fixture.
    helped = run([str(venv / "bin" / "nextleg-emulator"), "--help"], env=env)
    assert helped.returncode == 2
    assert helped.stdout == ""
    assert helped.stderr.splitlines() == [
        "nextleg-emulator: error: " + EXTRA_LINE.format(what="NextLeg emulator")
    ]
    without = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert without.returncode == 1, without.stdout + without.stderr
    assert EXTRA_LINE.format(what="nextleg_emulator fixture") in without.stdout.splitlines()

    # With it, as the README's install line says: the user's own DAG test passes.
    uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(python),
        f"airflow-provider-nextleg[emulator] @ {built.wheel.as_uri()}",
    )
    assert run([str(venv / "bin" / "nextleg-emulator"), "--help"], env=env).returncode == 0
    passed = run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"], cwd=project, env=env
    )
    print(passed.stdout[-2000:])
    assert passed.returncode == 0, passed.stdout[-5000:] + passed.stderr[-3000:]
    assert "2 passed" in passed.stdout
    assert not (tmp_path / "home" / "airflow" / "airflow.db").exists()  # the throw-away home was used
