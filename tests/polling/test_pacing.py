"""The limiter's check right before sending, which every request (and so every poll) passes, and the
state it shares with the other processes of the host."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
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


class TestPacing:
    """Sends are spaced by when they go out: each booking lands one spacing after the previous one."""

    def test_the_first_request_goes_at_once_and_the_next_one_a_spacing_later(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        first, second = limiter.book(), limiter.book()
        assert first.delay == 0.0
        assert second.delay == pytest.approx(limiter.spacing)
        assert limiter.spacing == pytest.approx(10.0 * (1 + ratelimit.MARGIN_SHARE) + ratelimit.MARGIN_MIN)

    def test_a_slow_answer_does_not_delay_the_next_request(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        assert limiter.confirm(limiter.book()) == 0.0
        clock.now += 8  # the answer takes its time; the service counted the request when it arrived
        later = limiter.book()
        assert later.delay == pytest.approx(limiter.spacing - 8)
        clock.now = later.due
        assert limiter.confirm(later) == 0.0

    def test_a_429_moves_slots_booked_before_it_past_its_hold(self, clock: Clock):
        limiter = HostRateLimiter(interval=1.0)
        slot = limiter.book()  # booked, about to send
        limiter.penalize(30.0)  # another caller's request was refused with Retry-After: 30
        assert limiter.confirm(slot) == 30.0
        assert slot.due == clock.now + 30.0
        assert limiter.book().delay == pytest.approx(30.0 + limiter.spacing + ratelimit.MARGIN_STEP)

    def test_a_429_widens_the_spacing_until_clean_bookings_shrink_it_again(self, clock: Clock):
        limiter = HostRateLimiter(interval=1.0)
        limiter.penalize(0.0)
        limiter.penalize(0.0)
        assert limiter.margin == pytest.approx(2 * ratelimit.MARGIN_STEP)
        for _ in range(ratelimit.DECAY_AFTER):
            clock.now += 10
            limiter.book()
        assert limiter.margin == pytest.approx(ratelimit.MARGIN_STEP)

    def test_the_learned_margin_is_capped(self, clock: Clock):
        limiter = HostRateLimiter(interval=1.0)
        for _ in range(100):
            limiter.penalize(0.0)
        assert limiter.margin == ratelimit.MARGIN_CAP

    def test_a_lowered_interval_applies_from_the_next_booking(self, clock: Clock):
        limiter = HostRateLimiter(interval=10.0)
        limiter.book()
        limiter.interval = 1.0  # the connection changed
        booked = limiter.book()  # after the slot the old interval booked ...
        assert limiter.book().due - booked.due == pytest.approx(limiter.spacing)  # ... then the new one

    def test_no_interval_never_waits(self, clock: Clock):
        limiter = HostRateLimiter(interval=0.0)
        for _ in range(3):
            slot = limiter.book()
            assert (slot.delay, limiter.confirm(slot)) == (0.0, 0.0)


def test_a_caller_that_wakes_too_late_for_its_turn_goes_to_the_back():
    """A turn missed by more than half the margin would crowd the next caller's: it is booked anew."""
    limiter = HostRateLimiter(interval=0.2)
    missed, next_one = limiter.book(), limiter.book()
    time.sleep(0.5)  # a starved process: both turns have passed
    assert missed.late
    missed.wait()
    assert missed.due > next_one.due  # behind the turn another caller holds, not on top of it


class TestSharedByTheHost:
    def test_another_process_waits_for_the_slot_this_one_booked(self):
        base_url = f"http://{uuid.uuid4().hex}.example"  # an account of this test alone
        limiter = rate_limiter_for(base_url, "a-token", 10.0)
        assert limiter.shared is not None
        assert "a-token" not in str(limiter.shared)
        assert limiter.book().delay == 0.0

        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from airflow_provider_nextleg.ratelimit import rate_limiter_for; "
                "print(rate_limiter_for(sys.argv[1], 'a-token', 10.0).book().delay)",
                base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        # The next slot, one spacing after this process's (the last line: Airflow may log before it).
        assert 5.0 < float(other.stdout.split()[-1]) <= limiter.spacing

    def test_without_a_usable_file_a_process_paces_alone(self, tmp_path, caplog: pytest.LogCaptureFixture):
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        limiter = HostRateLimiter(interval=10.0, shared=blocked / "account.limiter")
        assert limiter.book().delay == 0.0
        assert limiter.book().delay == pytest.approx(10.0, abs=0.5)
        assert limiter.shared is None
        assert "pacing this process alone" in caplog.text

    @pytest.mark.parametrize("poison", [2e300, float("inf"), float("nan")])
    def test_impossible_saved_times_are_repaired_not_obeyed(self, tmp_path, poison: float, caplog):
        """A file left by an absurd interval (or damaged) must not hold every process of the host."""
        shared = tmp_path / "account.limiter"
        shared.write_bytes(struct.pack("4d", poison, poison, poison, poison))
        limiter = HostRateLimiter(interval=10.0, shared=shared)
        assert limiter.book().delay == 0.0
        assert limiter.book().delay == pytest.approx(10.0, abs=0.5)
        assert "impossible values" in caplog.text
