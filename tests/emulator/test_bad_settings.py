"""Settings the emulator cannot run with are refused where they enter: the CLI with one line and exit
status 2, the dataclasses with a SettingError, the admin API with a 400; never by a traceback, nor by a
server that answers 500 to every request afterwards."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings, Fault, FaultSettings
from airflow_provider_nextleg.emulator.settings import ERROR_CODES, STALL, SettingError

CLI = Path(sys.executable).parent / "nextleg-emulator"

#: (flags, the flag the error line must name)
BAD_FLAGS = [
    (["--time-scale", "nan"], "--time-scale"),
    (["--time-scale", "inf"], "--time-scale"),
    (["--time-scale", "0"], "--time-scale"),
    (["--time-scale", "-0.5"], "--time-scale"),
    (["--time-scale", "1e9"], "--time-scale"),
    (["--time-scale", "fast"], "--time-scale"),
    (["--rate-limit-window", "nan"], "--rate-limit-window"),
    (["--rate-limit-window", "0"], "--rate-limit-window"),
    (["--rate-limit-requests", "0"], "--rate-limit-requests"),
    (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "1000000000"], "--concurrency"),
    (["--queue-length", "-1"], "--queue-length"),
    (["--min-duration", "-5"], "--min-duration"),
    (["--max-duration", "inf"], "--max-duration"),
    (["--min-duration", "80"], "--min-duration"),  # above the default max_duration of 75
    (["--max-duration", "10"], "--max-duration"),  # below the default min_duration of 30
    (["--fast-hours", "-1"], "--fast-hours"),
    (["--fast-hours", "nan"], "--fast-hours"),
    (["--seed", "1.5"], "--seed"),
    (["--error-rate", "1.5"], "--error-rate"),
    (["--drop-rate", "nan"], "--drop-rate"),
    (["--slow-rate", "-0.1"], "--slow-rate"),
    (["--malformed-rate", "inf"], "--malformed-rate"),
    (["--slow-seconds", "-5"], "--slow-seconds"),
    (["--slow-seconds", "nan"], "--slow-seconds"),
    (["--force", "cat=NOT_A_CODE"], "--force"),
    (["--force", "cat=banned_prompt"], "--force"),
    (["--force", "=BANNED_PROMPT"], "--force"),
    (["--force", "=X"], "--force"),
    (["--force", "cat"], "--force"),
    (["--default-webhook", "not a url"], "--default-webhook"),
    (["--default-webhook", "ftp://example.com/hook"], "--default-webhook"),
    (["--port", "99999"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "http"], "--port"),
    (["--host", "no-such-host.invalid"], "--host"),
    (["--log-level", "loud"], "--log-level"),
    (["--latency", "-1"], "--latency"),
    (["--latency", "nan"], "--latency"),
    (["--latency", "1e9"], "--latency"),
]


def run_cli(*flags: str) -> subprocess.CompletedProcess[str]:
    """Run the console script; a bad flag that is wrongly accepted serves forever, so the timeout fails it."""
    return subprocess.run(
        [str(CLI), "--port", "0", "--log-level", "warning", *flags],
        capture_output=True,
        text=True,
        timeout=20,
    )


def assert_one_line_usage_error(run: subprocess.CompletedProcess[str], flag: str) -> None:
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # never got as far as "listening on"
    [line] = run.stderr.splitlines()
    assert line.startswith("nextleg-emulator: error: argument "), line
    assert flag in line


class TestCli:
    @pytest.mark.parametrize(("flags", "flag"), BAD_FLAGS, ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
    def test_a_bad_flag_is_one_line_naming_it_and_exit_status_2(self, flags: list[str], flag: str) -> None:
        assert_one_line_usage_error(run_cli(*flags), flag)

    def test_a_port_in_use_is_one_line_and_exit_status_2(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            run = run_cli("--port", str(taken.getsockname()[1]))
        assert_one_line_usage_error(run, "--port")
        assert "Address already in use" in run.stderr

    def test_the_line_says_what_is_allowed(self) -> None:
        run = run_cli("--force", "cat=NOT_A_CODE")
        assert "'NOT_A_CODE' is not an error code" in run.stderr
        assert all(code in run.stderr for code in (*ERROR_CODES, STALL))
        assert "0 to 65535" in run_cli("--port", "99999").stderr
        assert "from 1e-06 to 1000" in run_cli("--time-scale", "nan").stderr


#: (keyword arguments of EmulatorSettings, the settings the error names)
BAD_SETTINGS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"time_scale": float("nan")}, ("time_scale",)),
    ({"time_scale": float("inf")}, ("time_scale",)),
    ({"time_scale": 0}, ("time_scale",)),
    ({"rate_limit_requests": 0}, ("rate_limit_requests",)),
    ({"rate_limit_window": float("nan")}, ("rate_limit_window",)),
    ({"concurrency": 0}, ("concurrency",)),
    ({"concurrency": 2.5}, ("concurrency",)),
    ({"concurrency": 10_001}, ("concurrency",)),
    ({"queue_length": -1}, ("queue_length",)),
    ({"min_duration": 0}, ("min_duration",)),
    ({"max_duration": float("inf")}, ("max_duration",)),
    ({"min_duration": 50, "max_duration": 40}, ("min_duration", "max_duration")),
    ({"relax_factor": 0}, ("relax_factor",)),
    ({"relax_factor": float("nan")}, ("relax_factor",)),
    ({"min_bot_delay": -1}, ("min_bot_delay",)),
    ({"min_bot_delay": 5}, ("min_bot_delay", "max_bot_delay")),
    ({"expire_mins": 0}, ("expire_mins",)),
    ({"expire_mins": float("nan")}, ("expire_mins",)),
    ({"fast_hours": -1}, ("fast_hours",)),
    ({"fast_hours": float("inf")}, ("fast_hours",)),
    ({"default_webhook": "not a url"}, ("default_webhook",)),
    ({"default_webhook": "http://"}, ("default_webhook",)),
    ({"token": ""}, ("token",)),
    ({"admin_token": ""}, ("admin_token",)),
    ({"latency": -0.1}, ("latency",)),
    ({"latency": float("inf")}, ("latency",)),
    ({"load_balancer_accounts": 0}, ("load_balancer_accounts",)),
    ({"load_balancer_accounts": 101}, ("load_balancer_accounts",)),
    ({"load_balancer_accounts": 2.5}, ("load_balancer_accounts",)),
    ({"ppu_credits": -1}, ("ppu_credits",)),
    ({"ppu_credits": 1.5}, ("ppu_credits",)),
    ({"cdn_403_rate": 1.5}, ("cdn_403_rate",)),
    ({"cdn_403_rate": float("nan")}, ("cdn_403_rate",)),
]
#: (keyword arguments of FaultSettings, the setting the error names)
BAD_FAULT_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"error_rate": float("nan")}, "error_rate"),
    ({"drop_rate": 1.5}, "drop_rate"),
    ({"slow_seconds": -5}, "slow_seconds"),
    ({"slow_seconds": float("inf")}, "slow_seconds"),
    ({"forced_codes": {"cat": "NOT_A_CODE"}}, "forced_codes"),
    ({"forced_codes": {"": "STALL"}}, "forced_codes"),
    ({"forced_codes": {"  ": "BANNED_PROMPT"}}, "forced_codes"),
]


class TestSettings:
    @pytest.mark.parametrize(("changes", "names"), BAD_SETTINGS, ids=lambda value: str(value))
    def test_bad_settings_raise_a_setting_error_naming_them(
        self, changes: dict[str, Any], names: tuple[str, ...]
    ) -> None:
        with pytest.raises(SettingError, match=f"^{names[0]} must") as error:
            EmulatorSettings(**changes)
        assert error.value.settings == names

    @pytest.mark.parametrize(("changes", "name"), BAD_FAULT_SETTINGS, ids=lambda value: str(value))
    def test_bad_fault_settings_raise_a_setting_error_naming_them(
        self, changes: dict[str, Any], name: str
    ) -> None:
        with pytest.raises(SettingError, match=f"^{name}") as error:
            FaultSettings(**changes)
        assert error.value.settings == (name,)

    @pytest.mark.parametrize(
        "fault",
        [{"count": 0}, {"status": 99}, {"status": 600}, {"seconds": float("nan")}, {"seconds": -1}],
        ids=str,
    )
    def test_bad_scripted_faults_are_refused(self, fault: dict[str, Any]) -> None:
        with pytest.raises(SettingError, match=r"^fault "):
            Fault("/v2/imagine", "slow", **fault)

    def test_the_server_refuses_them_before_binding_a_port(self) -> None:
        with pytest.raises(ValueError, match="time_scale must be positive"):
            EmulatorServer(EmulatorSettings(time_scale=float("nan")))

    def test_the_limits_themselves_are_accepted(self) -> None:
        EmulatorSettings(
            time_scale=1e-6,
            concurrency=10_000,
            queue_length=0,
            fast_hours=0,
            min_bot_delay=0,
            max_bot_delay=0,
        )
        EmulatorSettings(time_scale=1000, default_webhook="https://example.com/hook")
        FaultSettings(
            error_rate=1, slow_seconds=0, forced_codes={code: code for code in (*ERROR_CODES, STALL)}
        )

    def test_the_forcible_codes_are_the_providers_error_codes(self) -> None:
        from airflow_provider_nextleg.models import ErrorCode

        assert sorted(ERROR_CODES) == sorted(code.value for code in ErrorCode)


class TestAdmin:
    @pytest.mark.parametrize(
        ("path", "method", "body"),
        [
            ("/settings", "PATCH", {"fast_hours": -1}),
            ("/settings", "PATCH", {"default_webhook": "not a url"}),
            ("/faults", "PUT", {"forced_codes": {"cat": "NOT_A_CODE"}}),
            ("/faults", "POST", {"path": "/v2/imagine", "status": 600}),
        ],
    )
    def test_bad_changes_are_a_400_naming_the_setting_and_change_nothing(
        self, emu: EmulatorServer, path: str, method: str, body: dict[str, Any]
    ) -> None:
        before = (emu.configure(), emu.faults())
        response = httpx.request(
            method,
            f"{emu.base_url}/_emulator{path}",
            json=body,
            headers={"Authorization": f"Bearer {emu.settings.admin_token}"},
            trust_env=False,
        )
        assert response.status_code == 400
        assert any(
            name in response.json()["msg"] for name in ("fast_hours", "default_webhook", "forced", "fault")
        )
        assert (emu.configure(), emu.faults()) == before
