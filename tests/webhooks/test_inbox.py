"""The inbox, both ways (a directory of this host, and Redis on a real redis-server): a result stored
before the wait is returned at once, one stored during it wakes the waiter, duplicates change nothing,
thousands of waiters share one watcher, and a restarted Redis is reconnected to."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from servers import RedisServer

from airflow_provider_nextleg.redis_connection import RedisSettings
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.inbox import (
    REDIS_KEY_PREFIX,
    Inbox,
    InboxUnavailable,
    LocalInbox,
    RedisInbox,
    delivery_id,
    inbox_for,
)

from .support import result_body


def redis_settings(server: RedisServer, db: int = 3) -> RedisSettings:
    return RedisSettings(
        conn_id="inbox_redis", host="127.0.0.1", port=server.port, password=server.password, db=db
    )


def make_inbox(kind: str, tmp_path: Path, server: RedisServer, **options: float) -> Inbox:
    if kind == "local":
        return LocalInbox(tmp_path / "inbox", **options)
    return RedisInbox(redis_settings(server), **options)


@pytest.fixture(params=["local", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def pair(kind: str, tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[Inbox, Inbox]]:
    """The receiver's inbox and the trigger's: two objects on the same place, as two processes have."""
    receiver, trigger = (make_inbox(kind, tmp_path, redis_server) for _ in range(2))
    yield receiver, trigger
    for inbox in (receiver, trigger):
        await inbox.aclose()


def job() -> tuple[str, str]:
    """A message id and a job key of their own."""
    return f"msg-{tokens.new_job_key()[:12]}", tokens.new_job_key()


def watcher_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("nextleg-inbox")]


class TestInbox:
    async def test_a_result_stored_before_the_wait_is_returned_at_once(
        self, pair: tuple[Inbox, Inbox]
    ) -> None:
        receiver, trigger = pair
        message_id, key = job()
        assert await receiver.put(message_id, key, result_body(message_id, key)) is True
        started = time.monotonic()
        result = await trigger.wait(message_id, key, timeout=5)
        assert result == result_body(message_id, key)
        assert time.monotonic() - started < 0.15  # no waiting for the directory's next look

    async def test_a_result_stored_during_the_wait_wakes_the_waiter(self, pair: tuple[Inbox, Inbox]) -> None:
        receiver, trigger = pair
        message_id, key = job()
        async with trigger.watch(message_id, key) as waiter:
            assert await waiter.result(timeout=0.3) is None  # nothing yet, and the watch stays
            await receiver.put(message_id, key, result_body(message_id, key))
            stored = time.monotonic()
            assert (await waiter.result(timeout=5))["originatingMessageId"] == message_id
            assert time.monotonic() - stored < 0.5
            assert waiter.done

    async def test_duplicates_change_nothing_and_reading_does_not_consume(
        self, pair: tuple[Inbox, Inbox]
    ) -> None:
        receiver, trigger = pair
        message_id, key = job()
        first = result_body(message_id, key, content="first")
        assert await receiver.put(message_id, key, first) is True
        assert await receiver.put(message_id, key, result_body(message_id, key, content="second")) is False
        assert await trigger.wait(message_id, key, 5) == first
        assert await trigger.wait(message_id, key, 5) == first  # a trigger that runs again finds it too
        assert await trigger.get(message_id, key) == first

    async def test_a_result_is_for_the_job_key_it_came_with_only(self, pair: tuple[Inbox, Inbox]) -> None:
        receiver, trigger = pair
        message_id, key = job()
        await receiver.put(message_id, tokens.new_job_key(), result_body(message_id, None))
        assert await trigger.wait(message_id, key, timeout=0.4) is None
        assert await trigger.get(message_id, key) is None

    async def test_thousands_of_waiters_share_one_watcher(
        self, kind: str, pair: tuple[Inbox, Inbox], redis_server: RedisServer
    ) -> None:
        receiver, trigger = pair
        count = 3000
        jobs = [job() for _ in range(count)]
        early = jobs[: count // 3]  # stored before their waits begin
        for message_id, key in early:
            await receiver.put(message_id, key, result_body(message_id, key))
        waits = [asyncio.ensure_future(trigger.wait(message_id, key, 30)) for message_id, key in jobs]
        await asyncio.sleep(0.3)
        assert len(watcher_tasks()) <= 2
        if kind == "redis":
            clients = redis_server.command("INFO", "clients").decode()
            connected = int(clients.split("connected_clients:")[1].split()[0])
            assert connected < 20, clients
        for message_id, key in jobs[count // 3 :]:
            await receiver.put(message_id, key, result_body(message_id, key))
        results = await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert [result["originatingMessageId"] for result in results] == [m for m, _ in jobs]

    async def test_a_wait_times_out_with_none(self, pair: tuple[Inbox, Inbox]) -> None:
        _, trigger = pair
        started = time.monotonic()
        assert await trigger.wait(*job(), timeout=0.3) is None
        assert 0.25 < time.monotonic() - started < 1.5

    async def test_the_watcher_stops_after_its_last_waiter(
        self, pair: tuple[Inbox, Inbox], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("airflow_provider_nextleg.webhooks.inbox.LINGER", 0.1)
        _, trigger = pair
        await trigger.wait(*job(), timeout=0.2)
        assert watcher_tasks()
        deadline = time.monotonic() + 5
        while watcher_tasks() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not watcher_tasks()
        message_id, key = job()  # and a new waiter starts it again
        await pair[0].put(message_id, key, result_body(message_id, key))
        assert await trigger.wait(message_id, key, 5) is not None

    async def test_results_expire(self, kind: str, tmp_path: Path, redis_server: RedisServer) -> None:
        inbox = make_inbox(kind, tmp_path, redis_server, ttl=1)
        message_id, key = job()
        await inbox.put(message_id, key, result_body(message_id, key))
        assert await inbox.get(message_id, key) is not None
        await asyncio.sleep(1.2)
        assert await inbox.get(message_id, key) is None
        await inbox.aclose()


class TestLocalInbox:
    async def test_files_are_private_and_written_whole(self, local_inbox: LocalInbox) -> None:
        message_id, key = job()
        await local_inbox.put(message_id, key, result_body(message_id, key))
        [path] = list(local_inbox.directory.iterdir())  # no temporary file left behind
        assert path.name == f"{delivery_id(message_id, key)}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(local_inbox.directory.stat().st_mode) == 0o700

    def test_the_default_is_under_the_users_folder_beside_the_limiter(self) -> None:
        inbox = inbox_for(None)
        assert isinstance(inbox, LocalInbox)
        assert inbox.directory.parent.name == f"airflow-provider-nextleg-{os.getuid()}"
        assert inbox.directory.name == "inbox"
        assert inbox_for(None) is inbox

    async def test_an_unwritable_directory_is_unavailable(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        inbox = LocalInbox(blocker / "inbox")
        with pytest.raises(InboxUnavailable):
            await inbox.put(*job(), result_body("m", None))


class TestRedisInbox:
    async def test_results_carry_the_inbox_ttl(self, redis_server: RedisServer) -> None:
        inbox = RedisInbox(redis_settings(redis_server), ttl=3600)
        message_id, key = job()
        await inbox.put(message_id, key, result_body(message_id, key))
        redis = redis_settings(redis_server).async_client()
        ttl = await redis.ttl(REDIS_KEY_PREFIX + delivery_id(message_id, key))
        assert 3500 < ttl <= 3600
        await redis.aclose()
        await inbox.aclose()

    async def test_a_restarted_redis_is_reconnected_to(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="airflow_provider_nextleg.webhooks.inbox")
        with RedisServer(tmp_path / "own-redis", password="own-pw-2b7e") as server:
            receiver, trigger = RedisInbox(redis_settings(server)), RedisInbox(redis_settings(server))
            message_id, key = job()
            async with trigger.watch(message_id, key) as waiter:
                assert await waiter.result(0.3) is None
                server.stop()
                with pytest.raises(InboxUnavailable) as raised:
                    await receiver.put(message_id, key, result_body(message_id, key))
                assert "own-pw" not in str(raised.value)
                assert await waiter.result(0.5) is None  # waiting goes on, no error
                server.start()
                deadline = time.monotonic() + 10
                while "is back" not in caplog.text and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert await receiver.put(message_id, key, result_body(message_id, key)) is True
                assert (await waiter.result(5))["originatingMessageId"] == message_id
            await receiver.aclose()
            await trigger.aclose()
        assert "unavailable" in caplog.text
        assert "is back" in caplog.text
        assert "own-pw" not in caplog.text

    async def test_a_dead_redis_makes_waits_time_out_not_fail(self, tmp_path: Path) -> None:
        server = RedisServer(tmp_path / "never-started")
        inbox = RedisInbox(redis_settings(server))
        assert await inbox.wait(*job(), timeout=0.5) is None
        assert await inbox.get(*job()) is None
        await inbox.aclose()
