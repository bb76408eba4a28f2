"""The three ways to start the emulator: the CLI, the in-process server, and the pytest plugin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings

CLI = Path(sys.executable).parent / "nextleg-emulator"


class TestCli:
    def start(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [str(CLI), "--port", "0", "--log-level", "warning", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("NextLeg emulator listening on http://127.0.0.1:"), line
        return process, line

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
    def test_prints_its_url_serves_and_exits_cleanly_on_a_signal(self, signum: int) -> None:
        process, line = self.start("--time-scale", "0.01", "--no-rate-limit")
        base_url = line.split()[4]
        assert "default demo token" in line
        response = httpx.post(
            f"{base_url}/v2/imagine",
            json={"msg": "from the CLI"},
            headers={"Authorization": "Bearer emulator-token"},
            trust_env=False,
        )
        assert response.status_code == 200
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()

    def test_flags_reach_the_settings_and_a_given_token_is_never_printed(self) -> None:
        process, line = self.start(
            "--token",
            "s3cret-token",
            "--admin-token",
            "adm",
            "--concurrency",
            "12",
            "--force",
            "sunflower=FAILED_TO_PROCESS_YOUR_COMMAND",
            "--error-rate",
            "0.25",
            "--banned-words",
            "broccoli,kale",
        )
        try:
            assert "s3cret-token" not in line
            assert "(token: from --token)" in line
            base_url = line.split()[4]
            settings = httpx.get(
                f"{base_url}/_emulator/settings", headers={"Authorization": "Bearer adm"}, trust_env=False
            ).json()
            assert settings["concurrency"] == 12
            assert settings["banned_words"] == ["broccoli", "kale"]
            assert settings["faults"]["forced_codes"] == {"sunflower": "FAILED_TO_PROCESS_YOUR_COMMAND"}
            assert settings["faults"]["error_rate"] == 0.25
        finally:
            process.terminate()
            process.wait(timeout=10)

    def test_invalid_settings_exit_with_a_message(self) -> None:
        run = subprocess.run(
            [str(CLI), "--time-scale", "0"], capture_output=True, text=True, timeout=30, check=False
        )
        assert run.returncode == 2
        assert "time_scale must be positive" in run.stderr


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
