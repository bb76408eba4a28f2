"""The per-account rate limiter, on its own (its use by the hook is tested against the emulator)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from airflow_provider_nextleg.ratelimit import HostRateLimiter, account_key, rate_limiter_for


class TestRateLimiter:
    def test_first_slot_is_free_and_later_ones_are_spaced(self):
        limiter = HostRateLimiter(interval=10.0)
        waits = [limiter.book().delay for _ in range(3)]
        assert waits[0] == 0.0
        # Each reservation lands one interval after the previous one (minus the microseconds between calls).
        assert waits[1] == pytest.approx(10.0, abs=0.5)
        assert waits[2] == pytest.approx(20.0, abs=0.5)

    def test_idle_time_is_not_banked(self):
        limiter = HostRateLimiter(interval=0.05)
        limiter.book()
        time.sleep(0.2)
        assert limiter.book().delay == 0.0
        assert limiter.book().delay > 0.0  # the idle period does not allow a burst

    def test_zero_interval_never_waits(self):
        limiter = HostRateLimiter(interval=0.0)
        assert [limiter.book().delay for _ in range(5)] == [0.0] * 5

    def test_penalize_pushes_every_caller(self):
        limiter = HostRateLimiter(interval=1.0)
        limiter.penalize(30.0)
        assert limiter.book().delay == pytest.approx(30.0, abs=0.5)
        # A shorter penalty never pulls the next slot earlier.
        limiter.penalize(1.0)
        assert limiter.book().delay == pytest.approx(31.0, abs=0.5)

    def test_threads_get_distinct_slots(self):
        limiter = HostRateLimiter(interval=1.0)
        waits: list[float] = []
        lock = threading.Lock()

        def reserve() -> None:
            wait = limiter.book().delay
            with lock:
                waits.append(wait)

        threads = [threading.Thread(target=reserve) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ordered = sorted(waits)
        # Twenty different slots, one interval apart: no two threads were handed the same one.
        assert all(
            later - earlier == pytest.approx(limiter.spacing, abs=0.2)
            for earlier, later in itertools.pairwise(ordered)
        )


class TestRegistry:
    def test_one_limiter_per_account(self):
        first = rate_limiter_for("http://a.example", "token-registry-1", 3.0)
        assert rate_limiter_for("http://a.example", "token-registry-1", 3.0) is first
        assert rate_limiter_for("http://a.example", "token-registry-2", 3.0) is not first
        assert rate_limiter_for("http://b.example", "token-registry-1", 3.0) is not first

    def test_latest_interval_applies(self):
        limiter = rate_limiter_for("http://c.example", "token-registry-3", 3.0)
        assert rate_limiter_for("http://c.example", "token-registry-3", 0.5).interval == 0.5
        assert limiter.interval == 0.5

    def test_key_keeps_no_token(self):
        key = account_key("http://a.example", "super-secret-token")
        assert "super-secret-token" not in repr(key)
        assert key == account_key("http://a.example", "super-secret-token")
