"""What a user meets before running anything: the built wheel and sdist, their metadata, the README as a
package index shows it, the provider metadata Airflow reads, and the emulator without its extra."""

from __future__ import annotations

import email
import email.message
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import airflow
import jsonschema
import pytest
from conftest import REPO_ROOT
from packaging.specifiers import SpecifierSet

from airflow_provider_nextleg.emulator import cli, extra
from airflow_provider_nextleg.get_provider_info import get_provider_info

from .conftest import Built

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
README = (REPO_ROOT / "README.md").read_text()
INSTALL = 'pip install "airflow-provider-nextleg"'
INSTALL_EMULATOR = 'pip install "airflow-provider-nextleg[emulator]"'
DEV_TOOLS = ("pytest", "ruff", "mypy", "types-", "midjourney-api", "playwright")


def wheel_metadata(built: Built) -> email.message.Message:
    with zipfile.ZipFile(built.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(name))


class TestDistributions:
    def test_the_wheel_carries_license_and_notice(self, built: Built):
        with zipfile.ZipFile(built.wheel) as wheel:
            names = wheel.namelist()
            licenses = {Path(n).name: wheel.read(n) for n in names if ".dist-info/licenses/" in n}
        assert set(licenses) == {"LICENSE", "NOTICE"}
        assert licenses["LICENSE"] == (REPO_ROOT / "LICENSE").read_bytes()

    def test_the_sdist_carries_license_and_notice(self, built: Built):
        with tarfile.open(built.sdist) as sdist:
            top = {Path(name).relative_to(Path(name).parts[0]).as_posix() for name in sdist.getnames()}
        assert {"LICENSE", "NOTICE", "README.md", "pyproject.toml"} <= top

    def test_license_is_the_full_apache_2_text(self):
        text = (REPO_ROOT / "LICENSE").read_text()
        assert text.lstrip().startswith(
            "Apache License\n                           Version 2.0, January 2004"
        )
        assert "END OF TERMS AND CONDITIONS" in text
        assert "APPENDIX: How to apply the Apache License to your work." in text

    def test_metadata_names_license_authors_urls_and_pythons(self, built: Built):
        metadata = wheel_metadata(built)
        assert metadata["License-Expression"] == "Apache-2.0"
        assert metadata["Author"]
        classifiers = metadata.get_all("Classifier")
        # PEP 639: the license expression replaces the "License ::" classifiers, which indexes reject
        # beside it.
        assert not [c for c in classifiers if c.startswith("License ::")]
        assert "Framework :: Apache Airflow :: Provider" in classifiers
        pythons = sorted(
            (
                c.rsplit(" ", 1)[-1]
                for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
            ),
            key=lambda v: tuple(map(int, v.split("."))),
        )
        upper = f"3.{int(pythons[-1].split('.')[1]) + 1}"
        assert SpecifierSet(metadata["Requires-Python"]) == SpecifierSet(f">={pythons[0]},<{upper}")
        urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
        assert {"Homepage", "Documentation"} <= set(urls)
        assert all(url.startswith("https://") for url in urls.values())
        assert not [url for url in urls.values() if "PLACEHOLDER" in url.upper()]

    def test_every_python_of_the_classifiers_and_ci_ends(self, built: Built):
        """The Python versions CI runs on are the two ends of those the classifiers name."""
        classifiers = wheel_metadata(built).get_all("Classifier")
        pythons = [c.rsplit(" ", 1)[-1] for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)]
        ci = (REPO_ROOT / ".ci" / "run").read_text()
        tested = set(re.findall(r"PYTHON_VERSION=(3\.\d+)", ci))
        ends = {min(pythons, key=lambda v: int(v[2:])), max(pythons, key=lambda v: int(v[2:]))}
        assert tested == ends

    def test_extras_carry_no_development_tools(self, built: Built):
        requirements = wheel_metadata(built).get_all("Requires-Dist")
        for requirement in requirements:
            name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
            assert not name.startswith(DEV_TOOLS), requirement
            assert "==" not in requirement.split(";")[0], f"an exact pin for users: {requirement}"
        assert "test" not in wheel_metadata(built).get_all("Provides-Extra")

    def test_development_tools_are_a_dependency_group(self):
        dev = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in PYPROJECT["dependency-groups"]["dev"]]
        for tool in ("pytest", "ruff", "mypy", "types-requests", "midjourney-api"):
            assert tool in dev


class TestReadme:
    def test_install_commands_come_first(self):
        head = "\n".join(README.splitlines()[:30])
        assert INSTALL in head
        assert INSTALL_EMULATOR in head

    def test_every_link_works_on_a_package_index_page(self):
        """Rendered as the package index renders it (readme_renderer), every link is absolute or an
        anchor of a heading on the page."""
        from readme_renderer.markdown import render

        html = render(README)
        assert html is not None
        ids = set(re.findall(r'id="([^"]+)"', html))
        hrefs = re.findall(r'href="([^"]*)"', html)
        assert hrefs
        for href in hrefs:
            if href.startswith("#"):
                assert href[1:] in ids, f"an anchor without a heading: {href}"
            else:
                assert href.startswith(("https://", "http://")), f"a relative link: {href}"

    def test_files_are_named_by_their_paths_not_linked(self):
        """The repository's public address is not known: its files are named as paths (they are in
        every clone and in the sdist), and no link points at a made-up address."""
        assert "PLACEHOLDER" not in README.upper()
        assert not re.findall(r"^\[[\w-]+\]: ", README, flags=re.MULTILINE)


class TestProviderMetadata:
    def test_integrations_follow_airflows_provider_yaml_schema(self):
        schema = json.loads((Path(airflow.__file__).parent / "provider.yaml.schema.json").read_text())
        info = get_provider_info()
        jsonschema.validate(info["integrations"], schema["properties"]["integrations"])
        names = {i["integration-name"] for i in info["integrations"]}
        for kind in ("hooks", "operators", "sensors", "triggers"):
            assert {entry["integration-name"] for entry in info[kind]} <= names

    def test_airflow_shows_a_documentation_url(self):
        """Airflow takes ``documentation-url`` from the "Documentation" Project-URL (3.3.2 does; 3.1
        shows no documentation URL at all)."""
        from airflow.providers_manager import ProvidersManager

        data = ProvidersManager().providers["airflow-provider-nextleg"].data
        if "documentation-url" not in data:
            pytest.skip(f"Airflow {airflow.__version__} does not show a provider's documentation URL")
        assert data["documentation-url"] == PYPROJECT["project"]["urls"]["Documentation"]


class TestWithoutTheEmulatorExtra:
    def test_the_cli_names_the_extra_even_for_help(self, monkeypatch, capsys):
        monkeypatch.setattr(extra, "missing_distributions", lambda: ["pillow"])
        assert cli.main(["--help"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        (line,) = err.splitlines()
        assert line.startswith("nextleg-emulator: error: ")
        assert "[emulator] extra" in line
        assert line.endswith(INSTALL_EMULATOR)

    def test_the_cli_process_exits_2_with_one_line(self):
        hide = "import sys; sys.modules['PIL'] = None; "
        run = "from airflow_provider_nextleg.emulator.cli import main; sys.exit(main(['--help']))"
        result = subprocess.run([sys.executable, "-c", hide + run], capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "nextleg-emulator: error: the NextLeg emulator needs the provider's [emulator] extra, which is "
            f"not installed (missing: pillow): {INSTALL_EMULATOR}"
        ]

    def test_the_plugin_loads_and_the_fixture_fails_with_the_line(self, tmp_path: Path):
        (tmp_path / "conftest.py").write_text("import sys\nsys.modules['PIL'] = None\n")
        (tmp_path / "test_user.py").write_text(
            "def test_quiet():\n    pass\n\ndef test_uses(nextleg_emulator):\n    pass\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 passed, 1 error" in result.stdout
        assert (
            "the nextleg_emulator fixture needs the provider's [emulator] extra, which is not installed "
            f"(missing: pillow): {INSTALL_EMULATOR}"
        ) in result.stdout.splitlines()
        assert "Traceback" not in result.stdout
