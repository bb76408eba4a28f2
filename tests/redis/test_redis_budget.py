"""The Redis side of an account's budget, against a real redis-server started by these tests.

No fakes: every behaviour is checked on a ``redis-server`` of its own on a free port (see
``tests/servers.py``). This directory has no ``__init__.py`` and no ``conftest.py`` on purpose: a package
named ``redis`` would shadow redis-py, and a second top-level ``conftest`` clashes with the root one, so
the fixtures live here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import RedisServer, free_port

from airflow_provider_nextleg import ratelimit
from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.ratelimit import Reconnect
from airflow_provider_nextleg.redis_budget import _SCRIPTS, PollBooking, RedisBudget
from airflow_provider_nextleg.redis_connection import (
    BudgetUnavailable,
    RedisSettings,
    aredis_settings,
    redis_settings,
)

INTERVAL = 0.05
CONN_ID = "nextleg_test_redis"
TOLERANCE = 0.002  # seconds: what Redis's clock moves between the two readings of one booking


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module, up for all its tests."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of one test's own, which the test may stop, restart or freeze."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with ``--requirepass``, a password that a leak would show verbatim."""
    with RedisServer(tmp_path_factory.mktemp("redis-auth"), password="pw-" + secrets.token_hex(12)) as server:
        yield server


def use_connection(monkeypatch: pytest.MonkeyPatch, server: RedisServer, conn_id: str = CONN_ID) -> str:
    """Point the Airflow connection ``conn_id`` at ``server`` (a URI in the environment); return its id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", server.uri(db=1))
    return conn_id


@pytest.fixture
def redis_conn_id(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> str:
    """The id of an Airflow redis connection to the module's server."""
    return use_connection(monkeypatch, redis_server)


def new_account() -> str:
    """An account of its own (a fresh name), so that no two tests share keys."""
    return f"https://api.example\n{uuid.uuid4()}"


def new_budget(conn_id: str = CONN_ID, account: str | None = None, **options: Any) -> RedisBudget:
    """A budget with a client of its own, of ``account`` or of a fresh one."""
    return RedisBudget(redis_settings(conn_id), account or new_account(), **options)


@pytest.fixture
def account() -> str:
    return new_account()


@pytest.fixture
def budget(redis_conn_id: str, account: str) -> Iterator[RedisBudget]:
    budget = new_budget(redis_conn_id, account)
    yield budget
    budget.close()


@pytest.fixture
def twin(redis_conn_id: str, account: str) -> Iterator[RedisBudget]:
    """The same account's budget with a client of its own, as another process would have it."""
    budget = new_budget(redis_conn_id, account)
    yield budget
    budget.close()


def booked_slot(budget: RedisBudget, interval: float) -> float:
    """
    Book one slot and return it as a time of Redis's clock, exactly: the server's ``TIME`` and the booking
    script run in one ``MULTI`` (nothing runs between them), so ``TIME + wait`` is the slot the script
    booked, give or take the microseconds between the two readings.
    """
    pipe = budget._client().pipeline(transaction=True)
    pipe.time()
    pipe.eval(_SCRIPTS["book"], 1, budget._pace_key, *budget._book_args(interval))
    (seconds, microseconds), wait = pipe.execute()
    return seconds + microseconds / 1e6 + int(wait) / 1e6


def assert_spaced(slots: list[float], interval: float) -> None:
    ordered = sorted(slots)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    assert min(gaps) >= interval - TOLERANCE, gaps


def redis_stats(server: RedisServer) -> dict[str, int]:
    """``INFO commandstats``: calls per command."""
    text = server.command("INFO", "commandstats").decode()
    calls = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_") :].split(":", 1)
            calls[name] = int(dict(field.split("=") for field in fields.split(","))["calls"])
    return calls


def commands_since_reset(server: RedisServer) -> dict[str, int]:
    """The commands run since ``CONFIG RESETSTAT``, less the test's own (``INFO``, ``CONFIG``)."""
    calls = redis_stats(server)
    return {name: count for name, count in calls.items() if name not in ("info", "config|resetstat")}


def connections_received(server: RedisServer) -> int:
    text = server.command("INFO", "stats").decode()
    field = "total_connections_received:"
    return int(next(line for line in text.splitlines() if line.startswith(field))[len(field) :])


# --- connections ------------------------------------------------------------------------------------------

READ_SETTINGS: dict[str, Callable[[str], RedisSettings]] = {
    "sync": redis_settings,
    "async": lambda conn_id: asyncio.run(aredis_settings(conn_id)),
}


class TestConnection:
    @pytest.mark.parametrize("form", ["uri", "json"])
    def test_the_fields_of_a_redis_connection(
        self, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, form: str
    ):
        value = (
            f"redis://127.0.0.1:{redis_server.port}/?db=3"
            if form == "uri"
            else json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port,
                             "extra": {"db": 3}})
        )  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_R", value)
        settings = redis_settings("r")
        assert (settings.host, settings.port, settings.db, settings.password) == (
            "127.0.0.1",
            redis_server.port,
            3,
            None,
        )
        key = f"probe-{uuid.uuid4()}"
        settings.client().set(key, "x", px=5000)
        assert RedisSettings("other", "127.0.0.1", redis_server.port, db=3).client().get(key) == "x"
        assert RedisSettings("other", "127.0.0.1", redis_server.port, db=0).client().get(key) is None

    def test_a_path_in_the_uri_is_no_database_number_as_for_redishook(
        self, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
    ):
        monkeypatch.setenv("AIRFLOW_CONN_R", f"redis://127.0.0.1:{redis_server.port}/5")
        assert redis_settings("r").db == 0

    async def test_the_async_lookup_reads_the_same_fields(
        self, monkeypatch: pytest.MonkeyPatch, secured_redis: RedisServer
    ):
        monkeypatch.setenv("AIRFLOW_CONN_R", secured_redis.uri(db=2))
        settings = await aredis_settings("r")
        assert settings == redis_settings("r")
        assert settings.password == secured_redis.password
        client = settings.async_client()
        assert await client.ping()
        await client.aclose()

    @pytest.mark.parametrize("face", ["sync", "async"])
    def test_a_missing_connection_is_an_input_error(self, face: str):
        look_up = READ_SETTINGS[face]
        with pytest.raises(NextLegInputError, match="no Airflow connection 'nowhere_redis'") as caught:
            look_up("nowhere_redis")
        assert "AIRFLOW_CONN_NOWHERE_REDIS" in str(caught.value)

    @pytest.mark.parametrize("face", ["sync", "async"])
    def test_a_connection_of_another_type_is_an_input_error_before_any_network_call(
        self, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, face: str
    ):
        monkeypatch.setenv("AIRFLOW_CONN_NOT_REDIS", f"http://127.0.0.1:{redis_server.port}/")
        before = connections_received(redis_server)
        look_up = READ_SETTINGS[face]
        with pytest.raises(NextLegInputError, match=r"'not_redis'.*type 'http', not 'redis'"):
            look_up("not_redis")
        assert connections_received(redis_server) == before + 1  # the INFO of this count, nothing else

    def test_a_cluster_is_refused(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("AIRFLOW_CONN_R", "redis://127.0.0.1:6379/?cluster=true")
        with pytest.raises(NextLegInputError, match="cluster"):
            redis_settings("r")

    def test_ssl_flags_given_as_strings_are_booleans(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("AIRFLOW_CONN_R", "redis://h:6379/?ssl=false&ssl_cert_reqs=none")
        assert redis_settings("r").ssl == {"ssl": False, "ssl_cert_reqs": "none"}


# --- pacing -----------------------------------------------------------------------------------------------


def _book_in_a_process(
    settings: RedisSettings, account: str, barrier: Any, bookings: int, results: Any
) -> None:
    """A process of its own with a client of its own: wait for the others, then book."""
    budget = RedisBudget(settings, account)
    budget.book(INTERVAL)  # connect and load the scripts before the race
    barrier.wait()
    results.put([booked_slot(budget, INTERVAL) for _ in range(bookings)])


class TestBooking:
    def test_consecutive_bookings_wait_one_interval_more_each(self, budget: RedisBudget):
        waits = [budget.book(0.2) for _ in range(4)]
        for index, wait in enumerate(waits):
            assert wait == pytest.approx(0.2 * index, abs=0.02)

    def test_bookings_from_threads_are_never_closer_than_the_interval(self, redis_conn_id: str):
        account = new_account()
        budgets = [new_budget(redis_conn_id, account) for _ in range(8)]
        barrier = threading.Barrier(len(budgets))
        slots: list[float] = []
        lock = threading.Lock()

        def run(budget: RedisBudget) -> None:
            budget.book(INTERVAL)  # connect first
            barrier.wait()
            mine = [booked_slot(budget, INTERVAL) for _ in range(6)]
            with lock:
                slots.extend(mine)

        threads = [threading.Thread(target=run, args=(budget,)) for budget in budgets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(slots) == 48
        assert_spaced(slots, INTERVAL)

    def test_bookings_from_processes_are_never_closer_than_the_interval(self, redis_conn_id: str):
        context = multiprocessing.get_context("spawn")
        settings, account = redis_settings(redis_conn_id), new_account()
        barrier, results = context.Barrier(4), context.Queue()
        processes = [
            context.Process(target=_book_in_a_process, args=(settings, account, barrier, 6, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        slots = [slot for _ in processes for slot in results.get(timeout=60)]
        for process in processes:
            process.join(10)
            assert process.exitcode == 0
        assert len(slots) == 24
        assert_spaced(slots, INTERVAL)

    async def test_async_bookings_are_spaced_too(self, budget: RedisBudget):
        waits = sorted(await asyncio.gather(*(budget.abook(INTERVAL) for _ in range(20))))
        gaps = [later - earlier for earlier, later in itertools.pairwise(waits)]
        assert min(gaps) >= INTERVAL - 0.01
        assert waits[-1] >= 19 * INTERVAL - 0.05
        await budget.aclose()

    def test_sync_and_async_faces_share_one_budget(self, budget: RedisBudget):
        first = budget.book(0.3)
        second = asyncio.run(budget.abook(0.3))
        assert first == pytest.approx(0, abs=0.02)
        assert second == pytest.approx(0.3, abs=0.02)

    def test_accounts_do_not_share_slots(self, redis_conn_id: str):
        one, other = new_budget(redis_conn_id), new_budget(redis_conn_id)
        one.book(5.0)
        assert one.book(5.0) > 4.9
        assert other.book(5.0) == pytest.approx(0, abs=0.02)


class TestHold:
    def test_a_hold_pushes_every_later_booking_past_it(self, budget: RedisBudget, twin: RedisBudget):
        budget.book(INTERVAL)
        assert twin.hold(1.0) == pytest.approx(0.05)
        assert budget.book(INTERVAL) == pytest.approx(1.0, abs=0.02)
        assert budget.book(INTERVAL) == pytest.approx(1.0 + INTERVAL + 0.05, abs=0.02)  # and the margin

    def test_a_hold_voids_slots_booked_before_it(self, budget: RedisBudget, twin: RedisBudget):
        assert budget.book(INTERVAL) == pytest.approx(0, abs=0.01)
        assert budget.confirm(INTERVAL) == 0.0  # no hold: send
        twin.hold(0.5)
        wait = budget.confirm(INTERVAL)  # the slot booked before the hold is void: a new one after it
        assert wait == pytest.approx(0.5, abs=0.02)
        time.sleep(wait)
        assert budget.confirm(INTERVAL) == 0.0

    def test_the_margin_grows_with_each_hold_up_to_its_cap(self, budget: RedisBudget):
        margins = [budget.hold(0.01) for _ in range(12)]
        assert margins[:3] == pytest.approx([0.05, 0.10, 0.15])
        assert margins[-1] == pytest.approx(0.5)
        assert budget.state().margin == pytest.approx(0.5)

    def test_the_margin_widens_the_spacing(self, budget: RedisBudget):
        budget.hold(0.0)
        waits = [budget.book(0.1) for _ in range(3)]
        assert waits[1] - waits[0] == pytest.approx(0.15, abs=0.01)
        assert waits[2] - waits[1] == pytest.approx(0.15, abs=0.01)

    def test_the_margin_halves_after_clean_bookings(self, redis_conn_id: str):
        budget = new_budget(redis_conn_id, decay_after=3)
        budget.hold(0.0)
        budget.hold(0.0)  # 0.1 s
        margins = []
        for _ in range(3 * 7):
            budget.book(0.0)
            margins.append(budget.state().margin)
        assert margins[2] == pytest.approx(0.05)
        assert margins[5] == pytest.approx(0.025)
        assert margins[-1] == 0.0  # halved below 1 ms it is gone

    async def test_the_async_hold(self, budget: RedisBudget):
        assert await budget.ahold(0.4) == pytest.approx(0.05)
        wait = await budget.abook(INTERVAL)
        assert wait == pytest.approx(0.4, abs=0.02)
        await asyncio.sleep(wait)
        assert await budget.aconfirm(INTERVAL) == 0.0  # booked after the hold: its slot stands
        await budget.aclose()


class TestKeys:
    def test_every_key_expires_by_itself(self, budget: RedisBudget, redis_server: RedisServer):
        assert budget.state().ttl == -2  # nothing yet
        budget.book(1.0)
        budget.book(1.0)
        budget.hold(2.0)
        budget.remember("m-1", "{}", 30)
        budget.claim_poll("m-1", 10)
        client = budget._client()
        keys = list(client.scan_iter(match=budget.prefix.replace("{", "\\{").replace("}", "\\}") + "*"))
        assert len(keys) == 3
        ttls = {key.rsplit(":", 1)[0].rsplit(":", 1)[-1]: client.pttl(key) / 1000 for key in keys}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        # the pacing state outlives the last slot or hold (2 s away) by idle_ttl
        assert budget.state().ttl == pytest.approx(budget.idle_ttl + 2.0, abs=0.1)

    def test_keys_are_namespaced_by_a_digest_of_the_account(self, redis_conn_id: str):
        budget = new_budget(redis_conn_id, "https://api.example\ntoken-digest")
        assert budget.prefix.startswith("nextleg:{")
        assert budget.prefix.endswith("}:")
        assert "token-digest" not in budget.prefix


class TestAnswers:
    def test_an_answer_is_shared_for_its_ttl(self, budget: RedisBudget, twin: RedisBudget):
        assert budget.recall("m-1") is None
        budget.remember("m-1", '{"progress": 40}', 0.3)
        assert twin.recall("m-1") == '{"progress": 40}'
        time.sleep(0.4)
        assert twin.recall("m-1") is None

    def test_one_poll_lease_at_a_time(self, budget: RedisBudget, twin: RedisBudget):
        assert budget.claim_poll("m-1", 0.3)
        assert not twin.claim_poll("m-1", 0.3)
        assert not budget.claim_poll("m-1", 0.3)
        assert twin.claim_poll("m-2", 0.3)  # another message
        time.sleep(0.4)
        assert twin.claim_poll("m-1", 0.3)  # the lease expired by itself

    def test_remembering_an_answer_ends_the_lease(self, budget: RedisBudget, twin: RedisBudget):
        assert budget.claim_poll("m-1", 30)
        budget.remember("m-1", "answer", 0.2)
        assert twin.recall("m-1") == "answer"
        time.sleep(0.3)
        assert twin.claim_poll("m-1", 30)  # not held for the lease's 30 s

    def test_book_poll_shares_an_answer_or_a_lease_and_a_slot(self, budget: RedisBudget, twin: RedisBudget):
        first = budget.book_poll("m-1", INTERVAL, lease_ttl=30)
        assert first.wait == pytest.approx(0, abs=0.01)
        assert first.answer is None
        assert not first.polling_elsewhere
        elsewhere = twin.book_poll("m-1", INTERVAL, lease_ttl=30)
        assert elsewhere.polling_elsewhere  # no slot was booked for it
        assert twin.book(INTERVAL) == pytest.approx(INTERVAL, abs=0.01)
        budget.remember("m-1", '{"progress": 100}', 0.3)
        shared = PollBooking(wait=None, answer='{"progress": 100}')
        assert twin.book_poll("m-1", INTERVAL, lease_ttl=30) == shared  # no slot: no request
        time.sleep(0.4)
        again = twin.book_poll("m-1", INTERVAL, lease_ttl=30)
        # the answer expired and remember released the lease: this one polls, now (the slots went by)
        assert again.wait == pytest.approx(0, abs=0.01)

    async def test_the_async_book_poll(self, budget: RedisBudget, twin: RedisBudget):
        assert (await budget.abook_poll("m-1", INTERVAL, lease_ttl=30)).wait is not None
        assert (await twin.abook_poll("m-1", INTERVAL, lease_ttl=30)).polling_elsewhere
        await budget.aremember("m-1", "done", 5)
        assert (await twin.abook_poll("m-1", INTERVAL, lease_ttl=30)).answer == "done"
        await budget.aclose()
        await twin.aclose()

    def test_accounts_do_not_share_answers(self, budget: RedisBudget, redis_conn_id: str):
        budget.remember("m-1", "mine", 5)
        assert budget.claim_poll("m-1", 5)
        other = new_budget(redis_conn_id)
        assert other.recall("m-1") is None
        assert other.claim_poll("m-1", 5)

    async def test_the_async_twins(self, budget: RedisBudget):
        assert await budget.arecall("m-1") is None
        await budget.aremember("m-1", "payload", 5)
        assert await budget.arecall("m-1") == "payload"
        assert budget.recall("m-1") == "payload"
        assert await budget.aclaim_poll("m-1", 5)
        assert not await budget.aclaim_poll("m-1", 5)
        assert not budget.claim_poll("m-1", 5)
        await budget.aclose()


class TestRoundTrips:
    """Each booking is one command (one round trip): the issue allows at most two per API request."""

    def test_one_round_trip_per_booking_and_per_confirmation(self, budget: RedisBudget, redis_server):
        budget.book(0.0)  # connected, and each script sent whole once (EVAL)
        budget.confirm(0.0)
        redis_server.command("CONFIG", "RESETSTAT")
        for _ in range(25):
            budget.book(0.0)
            budget.confirm(0.0)
        # Redis counts the commands run inside a script too: a booking's script reads the clock and the
        # state and writes it back, a confirmation without a hold only reads. Only EVALSHA came from a
        # client: one round trip for each call.
        assert commands_since_reset(redis_server) == {
            "evalsha": 50,
            "time": 50,
            "hmget": 50,
            "hset": 25,
            "pexpire": 25,
        }

    def test_a_poll_costs_two_round_trips_a_shared_answer_one(self, budget: RedisBudget, redis_server):
        budget.book_poll("warm-up", 0.0, lease_ttl=5)
        budget.remember("warm-up", "x", 5)
        redis_server.command("CONFIG", "RESETSTAT")
        for index in range(10):
            assert budget.book_poll(f"m-{index}", 0.0, lease_ttl=5).wait is not None
            budget.remember(f"m-{index}", "answer", 5)  # the answer, shared; the lease released
        for index in range(10):
            assert budget.book_poll(f"m-{index}", 0.0, lease_ttl=5).answer == "answer"
        calls = commands_since_reset(redis_server)
        assert calls["evalsha"] == 10 * 2 + 10
        assert set(calls) == {"evalsha", "get", "set", "del", "time", "hmget", "hset", "pexpire"}

    @pytest.mark.parametrize("face", ["sync", "async"])
    def test_a_new_connection_costs_no_handshake(self, redis_conn_id: str, redis_server, face: str):
        """Every Airflow task is a new process with a new connection: its first booking is its only
        round trip besides the ``SELECT`` of its database (no ``CLIENT SETINFO``; the script sent whole,
        not its digest first and then a ``SCRIPT LOAD``)."""
        redis_server.command("CONFIG", "RESETSTAT")
        fresh = new_budget(redis_conn_id)
        if face == "sync":
            fresh.book(0.0)
        else:

            async def book_and_close() -> None:
                await fresh.abook(0.0)
                await fresh.aclose()

            asyncio.run(book_and_close())
        assert commands_since_reset(redis_server) == {
            "select": 1,
            "eval": 1,
            "time": 1,
            "hmget": 1,
            "hset": 1,
            "pexpire": 1,
        }

    async def test_the_async_face_too(self, budget: RedisBudget, redis_server: RedisServer):
        await budget.abook(0.0)
        redis_server.command("CONFIG", "RESETSTAT")
        for _ in range(20):
            await budget.abook(0.0)
        assert commands_since_reset(redis_server) == {
            "evalsha": 20,
            "time": 20,
            "hmget": 20,
            "hset": 20,
            "pexpire": 20,
        }
        await budget.aclose()


# --- failures ---------------------------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except BudgetUnavailable as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


BUDGET_CALLS: dict[str, Callable[[RedisBudget], Any]] = {
    "book": lambda budget: budget.book(INTERVAL),
    "confirm": lambda budget: budget.confirm(INTERVAL),
    "hold": lambda budget: budget.hold(1.0),
    "state": lambda budget: budget.state(),
    "remember": lambda budget: budget.remember("m", "x", 1),
    "recall": lambda budget: budget.recall("m"),
    "claim_poll": lambda budget: budget.claim_poll("m", 1),
    "book_poll": lambda budget: budget.book_poll("m", INTERVAL, 1),
    "abook": lambda budget: asyncio.run(budget.abook(INTERVAL)),
    "aconfirm": lambda budget: asyncio.run(budget.aconfirm(INTERVAL)),
    "ahold": lambda budget: asyncio.run(budget.ahold(1.0)),
    "aremember": lambda budget: asyncio.run(budget.aremember("m", "x", 1)),
    "arecall": lambda budget: asyncio.run(budget.arecall("m")),
    "aclaim_poll": lambda budget: asyncio.run(budget.aclaim_poll("m", 1)),
    "abook_poll": lambda budget: asyncio.run(budget.abook_poll("m", INTERVAL, 1)),
}


class TestFailures:
    @pytest.mark.parametrize("method", list(BUDGET_CALLS))
    def test_a_stopped_redis_is_one_quick_error_and_a_restarted_one_serves_again(
        self, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer, method: str
    ):
        budget = new_budget(use_connection(monkeypatch, own_redis))
        call = BUDGET_CALLS[method]
        call(budget)  # connected
        own_redis.stop()
        error, seconds = timed(lambda: call(budget))
        assert isinstance(error, BudgetUnavailable)
        assert seconds < 1.0
        assert f"Redis connection {CONN_ID!r} unavailable" in str(error)
        own_redis.start()
        assert timed(lambda: call(budget))[0] is None  # the same object, reconnected

    @pytest.mark.parametrize("face", ["book", "abook"])
    def test_a_hung_redis_times_out_within_a_second(
        self, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer, face: str
    ):
        budget = new_budget(use_connection(monkeypatch, own_redis))
        BUDGET_CALLS[face](budget)
        own_redis.pause()
        try:
            error, seconds = timed(lambda: BUDGET_CALLS[face](budget))
        finally:
            own_redis.resume()
        assert isinstance(error, BudgetUnavailable)
        assert "Timeout" in str(error)
        assert seconds < 1.0
        assert timed(lambda: BUDGET_CALLS[face](budget))[0] is None

    def test_nothing_listening_at_all(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", f"redis://127.0.0.1:{free_port()}/")
        error, seconds = timed(lambda: new_budget().book(INTERVAL))
        assert isinstance(error, BudgetUnavailable)
        assert seconds < 1.0

    def test_a_restart_mid_run_loses_the_state_but_not_the_pacing(
        self, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer
    ):
        budget = new_budget(use_connection(monkeypatch, own_redis))
        budget.book(0.2)
        own_redis.restart()  # no persistence: the state and the scripts are gone
        waits = [budget.book(0.2) for _ in range(3)]  # NOSCRIPT, then reloaded on the fly
        assert waits == pytest.approx([0.0, 0.2, 0.4], abs=0.02)


class TestRejoining:
    """A host back from an outage books its first shared turn no sooner than its own next one."""

    def test_a_floor_delays_the_slot_it_books(self, budget: RedisBudget):
        assert budget.book(0.2, not_before=0.5) == pytest.approx(0.5, abs=0.02)
        assert budget.book(0.2) == pytest.approx(0.7, abs=0.02)  # the next one follows it
        assert budget.book(0.2, not_before=0.1) == pytest.approx(0.9, abs=0.02)  # a floor never hastens

    @pytest.mark.parametrize("face", ["sync", "async"])
    def test_a_restarted_redis_does_not_book_over_the_hosts_own_sends(
        self, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer, face: str
    ):
        interval = 0.4
        budget = new_budget(use_connection(monkeypatch, own_redis))
        limiter = ratelimit.SharedRateLimiter(interval, budget, ratelimit.HostRateLimiter(interval))
        limiter.reconnect = Reconnect(CONN_ID, retry_every=0.0)
        book = limiter.book if face == "sync" else lambda: asyncio.run(limiter.abook())
        book()
        own_redis.stop()
        alone = book()  # on the host, after the turn booked in Redis
        assert limiter.reconnect.down
        own_redis.start()  # empty: Redis knows nothing of the host's latest turn
        rejoined = book()
        assert not limiter.reconnect.down
        assert rejoined.due - alone.due >= limiter.host.spacing - TOLERANCE
        assert book().due - rejoined.due >= limiter.spacing - TOLERANCE  # and Redis paces from there
        if face == "async":
            asyncio.run(budget.aclose())


class TestSecrecy:
    """The Redis password appears in no message, no log line, no repr."""

    def test_the_password_is_used(self, monkeypatch: pytest.MonkeyPatch, secured_redis: RedisServer):
        assert new_budget(use_connection(monkeypatch, secured_redis)).book(0.0) == 0.0

    def test_a_wrong_password(self, monkeypatch: pytest.MonkeyPatch, secured_redis: RedisServer, caplog):
        wrong = "wrong-" + secrets.token_hex(8)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", f"redis://:{wrong}@127.0.0.1:{secured_redis.port}/?db=0"
        )
        caplog.set_level(logging.DEBUG)
        error, _ = timed(lambda: new_budget().book(0.0))
        assert isinstance(error, BudgetUnavailable)
        self.assert_secret(wrong, error, caplog.text)
        self.assert_secret(secured_redis.password, error, caplog.text)

    def test_an_outage_with_a_password(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ):
        password = "pw-" + secrets.token_hex(12)
        with RedisServer(tmp_path / "r", password=password) as server:
            caplog.set_level(logging.DEBUG)
            budget = new_budget(use_connection(monkeypatch, server))
            budget.book(0.0)
            policy = Reconnect(CONN_ID)
            server.stop()
            errors = []
            for call in (lambda: budget.book(0.0), lambda: asyncio.run(budget.abook(0.0))):
                error, _ = timed(call)
                assert isinstance(error, BudgetUnavailable)
                policy.failed(error)
                errors.append(error)
            server.start()
            budget.book(0.0)
            policy.succeeded()
        assert "unreachable" in caplog.text
        for error in errors:
            self.assert_secret(password, error, caplog.text)
        assert password not in repr(budget.settings)
        assert password not in repr(budget.settings.client())
        assert password not in repr(budget.settings.async_client())

    @staticmethod
    def assert_secret(password: str | None, error: BaseException, logs: str) -> None:
        import traceback

        assert password
        assert password not in str(error)
        assert password not in "".join(traceback.format_exception(error))  # its causes included
        assert password not in logs


class TestReconnect:
    def test_one_warning_per_outage_one_info_at_rejoining(self, caplog: pytest.LogCaptureFixture):
        now = [100.0]
        policy = Reconnect("shared_redis", retry_every=5.0, clock=lambda: now[0])
        caplog.set_level(logging.INFO, logger=ratelimit.__name__)
        assert policy.should_try()
        policy.succeeded()  # nothing to say while it works
        error = BudgetUnavailable("shared_redis", "ConnectionError: refused")
        policy.failed(error)
        tries = []
        for _ in range(12):  # a minute of requests, one every 0.5 s
            now[0] += 0.5
            if policy.should_try():
                tries.append(now[0])
                policy.failed(error)
        assert tries == [105.0]  # once per 5 s: the caller paces on its host meanwhile
        assert policy.down
        now[0] += 5
        assert policy.should_try()
        policy.succeeded()
        assert not policy.down
        messages = [(record.levelname, record.getMessage()) for record in caplog.records]
        assert messages == [
            (
                "WARNING",
                "Redis connection 'shared_redis' unreachable (ConnectionError: refused): pacing on this "
                "host only until it answers; trying again every 5 s.",
            ),
            (
                "INFO",
                "Redis connection 'shared_redis' answers again after 11 s: pacing with every host of the "
                "account.",
            ),
        ]

    def test_only_one_caller_tries_while_it_is_down(self):
        now = [0.0]
        policy = Reconnect("r", retry_every=2.0, clock=lambda: now[0])
        policy.failed(None)
        now[0] = 2.0
        assert [policy.should_try() for _ in range(3)] == [True, False, False]
