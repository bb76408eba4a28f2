"""The three ways to start the emulator: the CLI, the in-process server, and the pytest plugin."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, FaultSettings, cli

CLI = Path(sys.executable).parent / "nextleg-emulator"
EVERY_FLAG = """
    --token t --admin-token a --time-scale 0.5 --no-rate-limit --rate-limit-requests 2 --rate-limit-window 5
    --concurrency 12 --queue-length 4 --seed 9 --default-webhook http://h/ --banned-words kale,leek
    --no-prefilter --error-rate 0.25 --drop-rate 0.1 --slow-rate 0.2 --slow-seconds 3 --malformed-rate 0.05
    --force sunflower=FAILED_TO_PROCESS_YOUR_COMMAND --force rose=STALL --cdn-forbidden
    --expire-mins 20 --account-id acc --load-balancer-accounts 5 --ppu-credits 7 --cdn-403-rate 0.25
"""
#: Flags whose help names a default that is not the setting's value as written.
WORDED_DEFAULTS = {
    "--no-rate-limit": "enforced",
    "--no-prefilter": "the prefilter refuses them",
    "--default-webhook": "none",
    "--force": "none",
    "--cdn-forbidden": "off",
    "--banned-words": "blood,gore,nude,torture",
    "--token": "the demo token emulator-token",
    "--admin-token": "emulator-admin-token",
    "--host": "127.0.0.1",
    "--port": "8765",
    "--log-level": "info",
}


class TestCli:
    @pytest.mark.parametrize(
        ("signum", "args", "token", "announced"),
        [
            (signal.SIGINT, [], "emulator-token", "(token: the default demo token 'emulator-token')"),
            (signal.SIGTERM, ["--token", "s3cret-token"], "s3cret-token", "(token: from --token)"),
        ],
        ids=["SIGINT-demo-token", "SIGTERM-given-token"],
    )
    def test_prints_its_url_serves_and_exits_cleanly_on_a_signal(
        self, signum: int, args: list[str], token: str, announced: str
    ) -> None:
        process = subprocess.Popen(
            [str(CLI), "--port", "0", "--log-level", "warning", "--time-scale", "0.01", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("NextLeg emulator listening on http://127.0.0.1:"), line
        assert line.rstrip().endswith(announced)
        assert "s3cret" not in line
        base_url = line.split()[4]
        response = httpx.post(
            f"{base_url}/v2/imagine",
            json={"msg": "from the CLI"},
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
        )
        assert response.status_code == 200
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()

    def test_flags_become_settings(self) -> None:
        args = cli.parse_args(shlex.split(EVERY_FLAG))
        assert cli.settings_from_args(args) == EmulatorSettings(
            token="t",
            admin_token="a",
            time_scale=0.5,
            rate_limit=False,
            rate_limit_requests=2,
            rate_limit_window=5.0,
            concurrency=12,
            queue_length=4,
            seed=9,
            expire_mins=20.0,
            account_id="acc",
            load_balancer_accounts=5,
            ppu_credits=7,
            cdn_403_rate=0.25,
            default_webhook="http://h/",
            banned_words=["kale", "leek"],
            prefilter=False,
            faults=FaultSettings(
                error_rate=0.25,
                drop_rate=0.1,
                slow_rate=0.2,
                slow_seconds=3.0,
                malformed_rate=0.05,
                forced_codes={"sunflower": "FAILED_TO_PROCESS_YOUR_COMMAND", "rose": "STALL"},
                cdn_forbidden=True,
            ),
        )

    def test_help_names_every_flags_real_default_once(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli.parse_args(["--help"])
        help_text = capsys.readouterr().out.split("options:", 1)[1]
        entries = {
            entry.split()[0].rstrip(","): " ".join(entry.split())
            for entry in re.split(r"\n  (?=-)", "\n" + help_text)
            if entry.strip().startswith("--")
        }
        settings, faults = EmulatorSettings(), FaultSettings()
        assert len(entries) > 30
        for name, entry in entries.items():
            assert entry.count("(default:") == 1, entry
            setting = name.removeprefix("--").replace("-", "_")
            source = faults if hasattr(faults, setting) else settings
            expected = WORDED_DEFAULTS.get(name) or cli._default(getattr(source, setting))
            assert f"(default: {expected})" in entry, entry
        assert "None" not in help_text

    def test_invalid_settings_exit_with_a_message(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["--time-scale", "0"]) == 2
        assert "time_scale must be positive" in capsys.readouterr().err


class TestInProcess:
    def test_context_manager_serves_on_a_free_port_and_stops(self) -> None:
        with EmulatorServer(EmulatorSettings(token="t", admin_token="a", seed=3)) as emu:
            assert emu.base_url.startswith("http://127.0.0.1:")
            assert not emu.base_url.endswith("/")
            assert emu.configure()["seed"] == 3
            response = httpx.get(
                f"{emu.base_url}/v2/info", headers={"Authorization": "Bearer t"}, trust_env=False
            )
            assert response.status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{emu.base_url}/v2/info", trust_env=False)

    def test_the_settings_passed_in_are_not_changed(self) -> None:
        settings = EmulatorSettings()
        with EmulatorServer(settings) as emu:
            emu.configure(concurrency=7)
            assert emu.settings.concurrency == 7
        assert settings.concurrency == 3


class TestConnection:
    def test_airflow_connection_json(self, nextleg_emulator: EmulatorServer) -> None:
        connection = json.loads(nextleg_emulator.airflow_connection_json())
        assert connection["conn_type"] == "nextleg"
        assert connection["host"] == nextleg_emulator.base_url
        assert connection["password"] == nextleg_emulator.settings.token
        assert connection["extra"]["rate_limit_interval"] == pytest.approx(0.03)  # 3 s, scaled by 0.01
        assert connection["extra"]["timeout"] > 0

    def test_the_plugin_fixture_points_nextleg_default_at_the_emulator(
        self, nextleg_emulator: EmulatorServer
    ) -> None:
        assert os.environ["AIRFLOW_CONN_NEXTLEG_DEFAULT"] == nextleg_emulator.airflow_connection_json()

    def test_airflow_reads_both_forms_of_the_connection(self, nextleg_emulator: EmulatorServer) -> None:
        from airflow.models.connection import Connection

        for connection in (
            Connection.from_json(nextleg_emulator.airflow_connection_json(), conn_id="nextleg_default"),
            Connection(conn_id="nextleg_default", uri=nextleg_emulator.connection_uri()),
        ):
            assert connection.conn_type == "nextleg"
            assert connection.host == nextleg_emulator.base_url
            assert connection.password == nextleg_emulator.settings.token
            assert float(connection.extra_dejson["rate_limit_interval"]) == pytest.approx(0.03)


@pytest.mark.parametrize(
    "module",
    ["airflow_provider_nextleg.emulator.pytest_plugin", "airflow_provider_nextleg.emulator"],
)
def test_the_plugin_and_package_import_nothing_heavy(module: str) -> None:
    heavy = ("fastapi", "uvicorn", "PIL", "airflow", "httpx")
    code = f"import sys, {module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == "[]\n"


def test_the_server_does_not_import_airflow_and_starts_fast() -> None:
    code = (
        "import sys, time; started = time.perf_counter()\n"
        "from airflow_provider_nextleg.emulator import EmulatorServer\n"
        "with EmulatorServer() as emu: pass\n"
        "print('airflow' in sys.modules, time.perf_counter() - started)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    imported_airflow, seconds = run.stdout.split()
    assert imported_airflow == "False"
    assert float(seconds) < 5.0  # about 0.7 s; generous for a loaded machine
