"""The limiter's check right before sending, which every request (and so every poll) passes, and the
state it shares with the other processes of the host."""

from __future__ import annotations

import struct
import subprocess
import sys
import types
import uuid

import pytest

from airflow_provider_nextleg import ratelimit
from airflow_provider_nextleg.ratelimit import HostRateLimiter, rate_limiter_for


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=fake.time))
    return fake


class TestClearToSend:
    def test_the_first_request_goes_at_once_and_the_next_one_an_interval_later(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        assert limiter.clear_to_send() == 0.0
        clock.now += 4
        assert limiter.clear_to_send() == 6.0

    def test_a_late_request_delays_the_one_booked_after_it(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        assert (limiter.reserve(), limiter.reserve()) == (0.0, 10.0)
        clock.now += 3  # the first caller wakes late (a busy event loop) ...
        assert limiter.clear_to_send() == 0.0  # ... and sends now
        clock.now += 7  # the second caller's slot has come ...
        assert limiter.clear_to_send() == 3.0  # ... but it waits one interval after the first request

    def test_an_answer_starts_the_interval_again(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        limiter.clear_to_send()
        clock.now += 2  # a slow answer
        limiter.answered()
        assert limiter.clear_to_send() == 10.0

    def test_a_429_holds_callers_whose_slots_were_booked_before_it(self, clock: Clock):
        limiter = HostRateLimiter(interval=1.0)
        assert limiter.reserve() == 0.0  # booked, about to send
        limiter.penalize(30.0)  # another caller's request was refused with Retry-After: 30
        assert limiter.clear_to_send() == 30.0
        assert limiter.reserve() == 30.0

    def test_a_lowered_interval_applies_at_once(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        limiter.clear_to_send()
        limiter.interval = 1.0  # the connection changed
        clock.now += 1
        assert limiter.clear_to_send() == 0.0

    def test_no_interval_never_waits(self, clock: Clock):
        limiter = HostRateLimiter(interval=0.0)
        for _ in range(3):
            assert limiter.clear_to_send() == 0.0
            limiter.answered()


class TestSharedByTheHost:
    def test_another_process_waits_for_the_slot_this_one_booked(self):
        base_url = f"http://{uuid.uuid4().hex}.example"  # an account of this test alone
        limiter = rate_limiter_for(base_url, "a-token", 10.0)
        assert limiter.shared is not None
        assert "a-token" not in str(limiter.shared)
        assert limiter.reserve() == 0.0

        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from airflow_provider_nextleg.ratelimit import rate_limiter_for; "
                "print(rate_limiter_for(sys.argv[1], 'a-token', 10.0).reserve())",
                base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert 5.0 < float(other.stdout) <= 10.0  # the next slot, one interval after this process's

    def test_without_a_usable_file_a_process_paces_alone(self, tmp_path, caplog: pytest.LogCaptureFixture):
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        limiter = HostRateLimiter(interval=10.0, shared=blocked / "account.limiter")
        assert limiter.reserve() == 0.0
        assert limiter.reserve() == pytest.approx(10.0, abs=0.5)
        assert limiter.shared is None
        assert "pacing this process alone" in caplog.text

    @pytest.mark.parametrize("poison", [2e300, float("inf"), float("nan")])
    def test_impossible_saved_times_are_repaired_not_obeyed(self, tmp_path, poison: float, caplog):
        """A file left by an absurd interval (or damaged) must not hold every process of the host."""
        shared = tmp_path / "account.limiter"
        shared.write_bytes(struct.pack("3d", poison, poison, poison))
        limiter = HostRateLimiter(interval=10.0, shared=shared)
        assert limiter.reserve() == 0.0
        assert limiter.reserve() == pytest.approx(10.0, abs=0.5)
        assert "impossible times" in caplog.text
