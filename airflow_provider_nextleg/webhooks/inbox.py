"""The inbox: where the receiver leaves each accepted result and the waiting trigger finds it.

A result is stored under its **delivery**: the message id it is for together with the job key its URL
named, so a URL (however leaked) can only ever speak for its own job, and a trigger finds only the result
of the job it submitted. The first result stored for a delivery stays (a duplicate changes nothing) until
it expires, a day later by default; reading does not consume it, so a trigger that runs twice (HA
triggerers, a restart) finds it again, and one that starts after the webhook came finds it at once.

Two places, one interface (:class:`Inbox`):

- :class:`LocalInbox`, a directory of this host, ``<tmp>/airflow-provider-nextleg-<uid>/inbox/`` by
  default (beside the host's rate limiter): for a receiver and triggerers on one host. One file per
  delivery, written to a temporary name and linked into place, so a reader never sees half a result.
  Waiters look for their files every 0.2 s: a local directory listing, no request to anyone.
- :class:`RedisInbox`, a redis connection: for receivers and triggerers on several hosts. A key per
  delivery with the inbox's TTL, and a notice on one pub/sub channel, so waiters wake at once.

However many triggers wait, each event loop runs one watcher per inbox (one directory listing, or one
subscription), and each waiter is a future. A watcher stops a few seconds after its last waiter leaves.
Waiting never fails for an unavailable Redis: the watcher reconnects, checks every waiting delivery again,
and meanwhile a wait simply runs to its timeout (the trigger's reconciliation poll covers a lost result).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_nextleg.exceptions import NextLegError

if TYPE_CHECKING:
    from airflow_provider_nextleg.redis_connection import RedisSettings

logger = logging.getLogger(__name__)

DEFAULT_TTL = 24 * 3600.0
"""Seconds a stored result is kept for a trigger to read it: a day."""
LOCAL_POLL_INTERVAL = 0.2
"""Seconds between two looks of a local inbox's watcher at its directory."""
LINGER = 5.0
"""Seconds a watcher stays after its last waiter leaves, for the next one to come."""
REDIS_CHANNEL = "nextleg:webhook:inbox"
"""The pub/sub channel of every Redis inbox: each message is a delivery's id."""
REDIS_KEY_PREFIX = "nextleg:webhook:result:"
_MAX_MESSAGE_ID = 200
_MGET_BATCH = 500


class InboxUnavailable(NextLegError):
    """
    The inbox could not store a result: Redis refused, timed out or is down, or the directory is not
    writable. The receiver answers 503; the trigger's reconciliation poll finds the job.

    :param where: the inbox (a directory, or a redis connection's id).
    :param cause: what failed.
    """

    advice = "The job is still found by the trigger's reconciliation poll; check the inbox."

    def __init__(self, where: str, cause: str) -> None:
        self.where = where
        self.cause = cause
        super().__init__(f"webhook inbox {where} unavailable ({cause})")


def delivery_id(message_id: str, job_key: str) -> str:
    """The id a result is stored under: a digest of its message id and job key (safe as a file name)."""
    return hashlib.sha256(f"{message_id}\n{job_key}".encode()).hexdigest()[:40]


def message_id_of(result: Mapping[str, Any]) -> str | None:
    """The message id a result body is for: ``originatingMessageId`` (what NextLeg sends), else
    ``messageId``; ``None`` when neither is a non-empty string of at most 200 characters."""
    for name in ("originatingMessageId", "messageId"):
        value = result.get(name)
        if isinstance(value, str) and 0 < len(value) <= _MAX_MESSAGE_ID and value.isprintable():
            return value
    return None


class Waiter:
    """One trigger's wait for one delivery (see :meth:`Inbox.watch`)."""

    def __init__(self, future: asyncio.Future[dict[str, Any]], watch: _LoopWatch) -> None:
        self._future = future
        self._watch = watch

    @property
    def latest_delivery(self) -> float | None:
        """When (``time.monotonic()``) the inbox last handed a result to any waiter of this event loop:
        while results of the account's other jobs keep coming, the account is working through its queue,
        and a job not yet delivered is most likely still in it."""
        return self._watch.delivered_at

    @property
    def done(self) -> bool:
        """Whether the result is there."""
        return self._future.done()

    async def result(self, timeout: float | None = None) -> dict[str, Any] | None:
        """
        The result body as soon as it is stored (at once if it already was), or ``None`` after
        ``timeout`` seconds. May be called again after a timeout; the watch stays in place meanwhile.

        :param timeout: seconds to wait at most; ``None`` waits for as long as it takes.
        """
        if timeout is not None and timeout <= 0 and not self._future.done():
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except asyncio.TimeoutError:
            return None


@dataclass
class _Slot:
    future: asyncio.Future[dict[str, Any]]
    count: int = 0


@dataclass
class _LoopWatch:
    """An inbox's waiters in one event loop, and the watcher tasks that serve them."""

    loop: asyncio.AbstractEventLoop
    slots: dict[str, _Slot] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    running: bool = False
    generation: int = 0
    idle_since: float = 0.0
    delivered_at: float | None = None
    client: Any = None

    def idle(self) -> bool:
        """Whether the watcher should stop: no waiter for :data:`LINGER` seconds."""
        return not self.slots and self.loop.time() - self.idle_since >= LINGER

    def resolve(self, delivery: str, result: dict[str, Any]) -> None:
        slot = self.slots.get(delivery)
        if slot is not None and not slot.future.done():
            slot.future.set_result(result)
            self.delivered_at = self.loop.time()


class Inbox(abc.ABC):
    """
    Where results wait for their triggers; see the module's docstring.

    :param ttl: seconds a stored result is kept.
    """

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        if not ttl > 0:
            raise ValueError(f"an inbox's ttl must be positive, got {ttl!r}")
        self.ttl = ttl
        self._watches: dict[asyncio.AbstractEventLoop, _LoopWatch] = {}

    @abc.abstractmethod
    async def put(self, message_id: str, job_key: str, result: Mapping[str, Any]) -> bool:
        """
        Store a result for the trigger of ``job_key`` waiting on ``message_id``.

        :returns: ``True`` when stored, ``False`` when that delivery already had a result (kept as it
            was: duplicates change nothing).
        :raises InboxUnavailable: the result could not be stored.
        """

    @abc.abstractmethod
    async def get(self, message_id: str, job_key: str) -> dict[str, Any] | None:
        """The stored result of a delivery, or ``None``; never raises for an unavailable inbox."""

    @abc.abstractmethod
    def _start(self, watch: _LoopWatch, generation: int) -> list[asyncio.Task[None]]:
        """Start the watcher tasks of one event loop; they end when :meth:`_stopping` says so."""

    @contextlib.asynccontextmanager
    async def watch(self, message_id: str, job_key: str) -> AsyncIterator[Waiter]:
        """
        Wait for a delivery: ``async with inbox.watch(message_id, job_key) as waiter:`` then
        ``await waiter.result(timeout)``, as often as needed (around a reconciliation poll, say).

        :param message_id: the message id of the submitted job.
        :param job_key: the job key its ``webhookOverride`` named.
        """
        delivery = delivery_id(message_id, job_key)
        watch = self._watch()
        slot = watch.slots.get(delivery)
        if slot is None:
            slot = watch.slots[delivery] = _Slot(watch.loop.create_future())
        slot.count += 1
        watch.pending.add(delivery)
        watch.wake.set()
        if not watch.running:
            watch.running = True
            watch.generation += 1
            watch.tasks = self._start(watch, watch.generation)
        try:
            yield Waiter(slot.future, watch)
        finally:
            slot.count -= 1
            if slot.count == 0 and watch.slots.get(delivery) is slot:
                del watch.slots[delivery]
                if not watch.slots:
                    watch.idle_since = watch.loop.time()

    async def wait(self, message_id: str, job_key: str, timeout: float | None) -> dict[str, Any] | None:
        """The result of a delivery once stored (at once if it is), or ``None`` after ``timeout`` s."""
        async with self.watch(message_id, job_key) as waiter:
            return await waiter.result(timeout)

    async def aclose(self) -> None:
        """Stop this event loop's watcher and close its connections (waiters then wait in vain)."""
        watch = self._watches.pop(asyncio.get_running_loop(), None)
        if watch is None:
            return
        watch.running = False
        for task in watch.tasks:
            task.cancel()
        for task in watch.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_client(watch)

    async def _close_client(self, watch: _LoopWatch) -> None:  # noqa: B027 - most inboxes keep none
        """Close the loop's connection, if the inbox keeps one."""

    def _watch(self) -> _LoopWatch:
        loop = asyncio.get_running_loop()
        watch = self._watches.get(loop)
        if watch is None:
            for other in [other for other in self._watches if other.is_closed()]:
                del self._watches[other]
            watch = self._watches[loop] = _LoopWatch(loop)
        return watch

    def _stopping(self, watch: _LoopWatch, generation: int) -> bool:
        """Whether a watcher task of ``generation`` should end now; if so, it no longer counts as running."""
        if watch.generation != generation:
            return True
        if watch.running and watch.idle():
            watch.running = False
            return True
        return not watch.running


def _envelope(message_id: str, job_key: str, result: Mapping[str, Any]) -> str:
    received = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return json.dumps({"message_id": message_id, "job": job_key, "received_at": received, "result": result})


def _result_of(text: str) -> dict[str, Any] | None:
    try:
        envelope = json.loads(text)
    except ValueError:
        return None
    result = envelope.get("result") if isinstance(envelope, dict) else None
    return result if isinstance(result, dict) else None


def default_inbox_dir() -> Path:
    """This user's inbox directory: ``<tmp>/airflow-provider-nextleg-<uid>/inbox`` (the receiver and the
    triggerers must share ``TMPDIR`` and the user)."""
    return Path(tempfile.gettempdir()) / f"airflow-provider-nextleg-{os.getuid()}" / "inbox"


class LocalInbox(Inbox):
    """
    An inbox in a directory of this host (see the module's docstring).

    :param directory: the directory; :func:`default_inbox_dir` by default. Made (mode 0700) on first use.
    :param ttl: seconds a stored result is kept.
    :param poll_interval: seconds between two looks of a watcher at the directory.
    """

    _SWEEP_EVERY = 60.0
    _FULL_SCAN_EVERY = 1.0

    def __init__(
        self,
        directory: Path | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        poll_interval: float = LOCAL_POLL_INTERVAL,
    ) -> None:
        super().__init__(ttl)
        self.directory = Path(directory) if directory is not None else default_inbox_dir()
        self.poll_interval = poll_interval
        self._last_sweep = 0.0
        self._sweep_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalInbox({str(self.directory)!r})"

    async def put(self, message_id: str, job_key: str, result: Mapping[str, Any]) -> bool:
        data = _envelope(message_id, job_key, result).encode()
        return await asyncio.to_thread(self.put_sync, delivery_id(message_id, job_key), data)

    def put_sync(self, delivery: str, data: bytes) -> bool:
        """Write one delivery's file (temporary name, then a link into place); ``False`` if it exists."""
        final = self.directory / f"{delivery}.json"
        temp = self.directory / f".{delivery}.{secrets.token_hex(4)}.tmp"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if final.exists():
                return False
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            try:
                os.link(temp, final)  # atomic, and never replaces a result already there
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: rename, which is atomic too
                if final.exists():
                    return False
                os.replace(temp, final)
            return True
        except OSError as exc:
            raise InboxUnavailable(str(self.directory), exc.strerror or type(exc).__name__) from None
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
            self._sweep()

    async def get(self, message_id: str, job_key: str) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._read, [delivery_id(message_id, job_key)])
        return next(iter(found.values()), None)

    def _read(self, deliveries: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The unexpired results among ``deliveries``, by delivery."""
        found: dict[str, dict[str, Any]] = {}
        oldest = time.time() - self.ttl
        for delivery in deliveries:
            path = self.directory / f"{delivery}.json"
            try:
                if path.stat().st_mtime < oldest:
                    continue
                result = _result_of(path.read_text())
            except OSError:
                continue
            if result is not None:
                found[delivery] = result
        return found

    def _listing(self) -> tuple[int, set[str]]:
        """The directory's modification time and the deliveries in it."""
        try:
            mtime = self.directory.stat().st_mtime_ns
            names = os.listdir(self.directory)
        except OSError:
            return 0, set()
        return mtime, {name[:-5] for name in names if name.endswith(".json")}

    def _start(self, watch: _LoopWatch, generation: int) -> list[asyncio.Task[None]]:
        return [watch.loop.create_task(self._watch_directory(watch, generation), name="nextleg-inbox-watch")]

    async def _watch_directory(self, watch: _LoopWatch, generation: int) -> None:
        """Look for the waited deliveries: new waiters' at once, everyone's when the directory changes
        (and every second, for file systems with a coarse clock)."""
        last_mtime, last_scan = -1, 0.0
        while not self._stopping(watch, generation):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), self.poll_interval)
            watch.wake.clear()
            try:
                candidates = watch.pending & watch.slots.keys()
                watch.pending.clear()
                mtime = await asyncio.to_thread(lambda: _mtime(self.directory))
                now = time.monotonic()
                if watch.slots and (mtime != last_mtime or now - last_scan >= self._FULL_SCAN_EVERY):
                    last_mtime, names = await asyncio.to_thread(self._listing)
                    last_scan = now
                    candidates |= names & watch.slots.keys()
                if candidates:
                    for delivery, result in (await asyncio.to_thread(self._read, candidates)).items():
                        watch.resolve(delivery, result)
                if now - self._last_sweep >= self._SWEEP_EVERY:
                    await asyncio.to_thread(self._sweep)
            except Exception:  # never let one bad look end the watch
                logger.exception("Looking into the webhook inbox %s failed; trying again", self.directory)

    def _sweep(self) -> None:
        """Remove expired results and stale temporary files, at most once a minute per process."""
        with self._sweep_lock:
            now = time.time()
            if now - self._last_sweep < self._SWEEP_EVERY:
                return
            self._last_sweep = now
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                limit = self.ttl if entry.name.endswith(".json") else 3600.0
                if entry.stat().st_mtime < now - limit:
                    os.unlink(entry.path)


def _mtime(directory: Path) -> int:
    try:
        return directory.stat().st_mtime_ns
    except OSError:
        return 0


class RedisInbox(Inbox):
    """
    An inbox in Redis (see the module's docstring): ``SET NX EX`` and ``PUBLISH`` in one round trip to
    store, one subscription per event loop to wait.

    :param settings: the redis connection (:func:`~airflow_provider_nextleg.redis_connection.redis_settings`).
    :param ttl: seconds a stored result is kept.
    """

    _CONFIRM_TIMEOUT = 2.0
    _MAX_BACKOFF = 2.0

    def __init__(self, settings: RedisSettings, *, ttl: float = DEFAULT_TTL) -> None:
        super().__init__(ttl)
        self.settings = settings

    def __repr__(self) -> str:
        return f"RedisInbox({self.settings.conn_id!r})"

    def _client(self) -> Any:
        watch = self._watch()
        if watch.client is None:
            watch.client = self.settings.async_client()
        return watch.client

    def _unavailable(self, exc: BaseException) -> InboxUnavailable:
        return InboxUnavailable(f"on redis connection {self.settings.conn_id!r}", type(exc).__name__)

    async def put(self, message_id: str, job_key: str, result: Mapping[str, Any]) -> bool:
        import redis

        delivery = delivery_id(message_id, job_key)
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.set(REDIS_KEY_PREFIX + delivery, _envelope(message_id, job_key, result), nx=True,
                         ex=max(1, round(self.ttl)))  # fmt: skip
                pipe.publish(REDIS_CHANNEL, delivery)
                stored, _ = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return bool(stored)

    async def get(self, message_id: str, job_key: str) -> dict[str, Any] | None:
        import redis

        try:
            text = await self._client().get(REDIS_KEY_PREFIX + delivery_id(message_id, job_key))
        except (redis.RedisError, OSError):
            return None
        return None if text is None else _result_of(text)

    def _start(self, watch: _LoopWatch, generation: int) -> list[asyncio.Task[None]]:
        if watch.client is None:
            watch.client = self.settings.async_client()
        return [
            watch.loop.create_task(self._listen(watch, generation), name="nextleg-inbox-listen"),
            watch.loop.create_task(self._check(watch, generation), name="nextleg-inbox-check"),
        ]

    async def _listen(self, watch: _LoopWatch, generation: int) -> None:
        """Hold the subscription; after each (re)subscription check every waited delivery again."""
        import redis

        backoff, down = 0.1, False
        while not self._stopping(watch, generation):
            pubsub = watch.client.pubsub()
            try:
                await pubsub.subscribe(REDIS_CHANNEL)
                await self._confirmed(pubsub)
                if down:
                    logger.info("Webhook inbox on redis connection %r is back", self.settings.conn_id)
                backoff, down = 0.1, False
                watch.pending.update(watch.slots)
                watch.wake.set()
                while not self._stopping(watch, generation):
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message" and message["data"] in watch.slots:
                        watch.pending.add(message["data"])
                        watch.wake.set()
            except (redis.RedisError, OSError, asyncio.TimeoutError) as exc:
                if not down:
                    logger.warning(
                        "Webhook inbox on redis connection %r unavailable (%s); results wait for it "
                        "(or for the reconciliation poll)",
                        self.settings.conn_id,
                        type(exc).__name__,
                    )
                down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._MAX_BACKOFF)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _confirmed(self, pubsub: Any) -> None:
        """Wait for the server's confirmation of the subscription: from then on no notice is missed."""
        deadline = time.monotonic() + self._CONFIRM_TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=0.2)
            if message and message.get("type") == "subscribe":
                return
        raise asyncio.TimeoutError

    async def _check(self, watch: _LoopWatch, generation: int) -> None:
        """Read the deliveries that may have arrived (new waiters', and those a notice names)."""
        import redis

        retry_in = 1.0
        while watch.running and watch.generation == generation:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), retry_in)
            watch.wake.clear()
            batch = list(watch.pending & watch.slots.keys())
            watch.pending.clear()
            retry_in = 1.0  # or sooner, when woken: the wait only lets the task notice its end
            for start in range(0, len(batch), _MGET_BATCH):
                chunk = batch[start : start + _MGET_BATCH]
                try:
                    texts = await watch.client.mget([REDIS_KEY_PREFIX + delivery for delivery in chunk])
                except (redis.RedisError, OSError):
                    watch.pending.update(batch[start:])
                    retry_in = 0.5
                    break
                for delivery, text in zip(chunk, texts, strict=True):
                    result = None if text is None else _result_of(text)
                    if result is not None:
                        watch.resolve(delivery, result)

    async def _close_client(self, watch: _LoopWatch) -> None:
        if watch.client is not None:
            with contextlib.suppress(Exception):
                await watch.client.aclose()
            watch.client = None


_inboxes: dict[Any, Inbox] = {}
_inboxes_lock = threading.Lock()


def inbox_for(redis: RedisSettings | None) -> Inbox:
    """
    The process's one inbox for a place: Redis given a redis connection, else this host's directory.

    :param redis: the redis connection a nextleg connection's ``redis_conn_id`` names, if any.
    """
    key: Any = None
    if redis is not None:
        key = (redis.conn_id, redis.host, redis.port, redis.username, redis.password, redis.db,
               tuple(sorted(redis.ssl.items())), redis.timeout)  # fmt: skip
    with _inboxes_lock:
        inbox = _inboxes.get(key)
        if inbox is None:
            inbox = _inboxes[key] = LocalInbox() if redis is None else RedisInbox(redis)
        return inbox
