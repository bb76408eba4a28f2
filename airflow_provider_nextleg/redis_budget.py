"""One NextLeg account's request budget held in Redis, shared by every process on every host.

The host limiter (:mod:`airflow_provider_nextleg.ratelimit`) shares an account's budget through a file
of the host's temporary directory, which other hosts (other Celery workers, other pods, a second
triggerer) cannot see. When a NextLeg connection names a ``redis_conn_id``, the primitives here hold the
same state in Redis instead:

* :meth:`RedisBudget.book` books the account's next send slot, one atomic Lua script (one round trip)
  timed by the Redis server's clock (``TIME``), so every host reads one clock;
  :meth:`RedisBudget.confirm`, just before sending, voids a slot that a 429 has covered since and books
  a new one (a second round trip, so at most two per API request);
* :meth:`RedisBudget.hold` makes every caller of the account wait out a 429's ``Retry-After`` and widens
  the learned ``margin`` added to every interval;
* :meth:`RedisBudget.remember` / :meth:`RedisBudget.recall` share the latest answer for a message id for
  a moment, and :meth:`RedisBudget.claim_poll` is a short lease so two processes never poll one message
  at the same time; :meth:`RedisBudget.book_poll` does all three before a poll in one round trip (the
  shared answer, or the lease and a slot), so a poll costs two round trips with :meth:`~RedisBudget.remember`.

Every method has an ``a``-prefixed async twin for the triggerer. Nothing kept in Redis is a source of
truth for a job, and every key expires by itself. Any Redis failure (refused, timed out, restarted,
a wrong password) raises :class:`BudgetUnavailable`, within about a second: the caller then paces on its
host limiter, and :class:`Reconnect` says when to try Redis again, with one warning per outage.

**The margin**: each :meth:`~RedisBudget.hold` adds :attr:`RedisBudget.margin_step` (50 ms) to the margin,
up to :attr:`RedisBudget.margin_cap` (0.5 s); after :attr:`RedisBudget.decay_after` (50) bookings in a row
without a hold, the margin halves (below 1 ms it is 0). Counting bookings rather than seconds ties the
decay to traffic: an idle account keeps what it learned until the state expires
(:attr:`RedisBudget.idle_ttl` after its last booked slot, 10 minutes), and a busy one sheds a margin it no
longer needs within a few minutes (50 bookings at 3 s).

The connection is an Airflow connection of type ``redis`` (``apache-airflow-providers-redis``, the
``redis`` extra of this package), read as its ``RedisHook`` reads it: host, port, login, password, and
``db`` and the ``ssl*`` options in the extra (write ``redis://:PASSWORD@HOST:6379/?db=N``: the ``/N``
path of a URI is ignored). ``RedisHook`` builds a synchronous client only, without timeouts, so both
clients are built here from the same fields, with short timeouts and no retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_nextleg.exceptions import NextLegError, NextLegInputError

try:
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.credentials import UsernamePasswordCredentialProvider
except ImportError:  # the redis extra is not installed; redis_settings() says so
    redis = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

log = logging.getLogger(__name__)

CONN_TYPE = "redis"
"""The connection type a ``redis_conn_id`` must name (that of ``apache-airflow-providers-redis``)."""
DEFAULT_TIMEOUT = 0.5
"""Seconds to connect to Redis and to wait for an answer: a dead Redis is noticed within about that."""
KEY_PREFIX = "nextleg"
SSL_EXTRAS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")
"""The extras that ``RedisHook`` passes on to the client, besides ``db``."""
_US = 1_000_000

# Every time is in microseconds of the Redis server's clock, whole numbers held in Lua's doubles (exact
# up to 2**53, centuries away), and written with %.0f so that no digit is lost to Lua's %.14g.
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: TIME before writes
"""
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('HMGET', KEYS[1], 'next_free', 'hold_until', 'margin', 'clean')
local next_free = tonumber(s[1]) or 0
local hold_until = tonumber(s[2]) or 0
local margin = tonumber(s[3]) or 0
local clean = tonumber(s[4]) or 0
"""
_SAVE = """
local function save(idle_ttl_ms)
  redis.call('HSET', KEYS[1], 'next_free', string.format('%.0f', next_free),
    'hold_until', string.format('%.0f', hold_until), 'margin', string.format('%.0f', margin),
    'clean', string.format('%.0f', clean))
  local last = math.max(next_free, hold_until)
  redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(last - now, 0) / 1000) + idle_ttl_ms)
end
"""
_BOOKING = """
local function book(interval, decay_after)
  clean = clean + 1
  if clean >= decay_after then
    margin = math.floor(margin / 2)
    if margin < 1000 then margin = 0 end
    clean = 0
  end
  local slot = math.max(now, next_free, hold_until)
  next_free = slot + interval + margin
  return slot - now
end
"""
# KEYS[1] the pacing hash; ARGV: interval (us), idle TTL (ms), bookings before the margin halves.
_BOOK = (
    _PRELUDE
    + _NOW
    + _SAVE
    + _BOOKING
    + """
local wait = book(tonumber(ARGV[1]), tonumber(ARGV[3]))
save(tonumber(ARGV[2]))
return wait
"""
)
# The same arguments as _BOOK: 0 (send now) unless a hold covers now, then a new slot's wait.
_CONFIRM = _BOOK.replace(
    "local wait = book(", "if now >= hold_until then return 0 end\nlocal wait = book(", 1
)
# ARGV: the hold (us), idle TTL (ms), margin step (us), margin cap (us).
_HOLD = (
    _PRELUDE
    + _NOW
    + _SAVE
    + """
hold_until = math.max(hold_until, now + tonumber(ARGV[1]))
next_free = math.max(next_free, hold_until)
margin = math.min(margin + tonumber(ARGV[3]), tonumber(ARGV[4]))
clean = 0
save(tonumber(ARGV[2]))
return margin
"""
)
# Seconds from now of the three times, and the clean bookings: for the benchmark and the tests.
_STATE = (
    _PRELUDE
    + _NOW
    + """
return {string.format('%.0f', next_free - now), string.format('%.0f', hold_until - now),
  string.format('%.0f', margin), string.format('%.0f', clean), redis.call('PTTL', KEYS[1])}
"""
)


# KEYS[1] the pacing hash, KEYS[2] the message's shared answer, KEYS[3] its poll lease; ARGV: as _BOOK,
# then the lease's TTL (ms). {-1, answer} when an answer is shared; {-2} when another process holds the
# lease; {wait} when this caller took the lease and a slot.
_BOOK_POLL = (
    _PRELUDE
    + """
local answer = redis.call('GET', KEYS[2])
if answer then return {-1, answer} end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then return {-2} end
"""
    + _NOW
    + _SAVE
    + _BOOKING
    + """
local wait = book(tonumber(ARGV[1]), tonumber(ARGV[3]))
save(tonumber(ARGV[2]))
return {wait}
"""
)
# KEYS[1] the shared answer, KEYS[2] the poll lease (released); ARGV: the answer, its TTL (ms).
_REMEMBER = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""


class PollBooking(NamedTuple):
    """
    What :meth:`RedisBudget.book_poll` found: a shared answer, another poller, or a slot of this caller's.

    :param wait: seconds until this caller's slot to poll (it holds the lease), or ``None``.
    :param answer: the answer another process shared (no need to poll), or ``None``.
    """

    wait: float | None
    answer: str | None

    @property
    def polling_elsewhere(self) -> bool:
        """Another process holds the lease: :meth:`RedisBudget.recall` its answer a little later."""
        return self.wait is None and self.answer is None


class BudgetUnavailable(NextLegError):
    """
    Redis could not serve the account's budget: refused, timed out, restarted, or it refused the login.

    The caller paces on its host limiter meanwhile (see :class:`Reconnect`). The message names the
    redis connection and the cause, never the password.

    :param conn_id: the redis connection.
    :param cause: what failed, as redis-py reported it.
    """

    advice = "Pacing falls back to this host's limiter until Redis answers again."

    def __init__(self, conn_id: str, cause: str) -> None:
        self.conn_id = conn_id
        self.cause = cause
        super().__init__(f"Redis connection {conn_id!r} unavailable ({cause})")


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """
    The fields of an Airflow redis connection that the clients are built from.

    :param conn_id: the connection's id, for messages.
    :param host: Redis's host (``localhost`` when empty).
    :param port: its port (6379 when empty).
    :param username: the ACL user (the connection's login), if any.
    :param password: the password, if any; never shown by ``repr``.
    :param db: the database number (the ``db`` extra).
    :param ssl: the ``ssl*`` extras, as ``RedisHook`` passes them to the client.
    :param timeout: seconds to connect and to wait for each answer.
    """

    conn_id: str
    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    db: int = 0
    ssl: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    def _options(self) -> dict[str, Any]:
        # The credentials go in a provider object: redis-py's pools show their keyword arguments in their
        # repr, a password given as one included.
        credentials = None
        if self.password or self.username:
            credentials = UsernamePasswordCredentialProvider(self.username, self.password)
        return {
            "host": self.host,
            "port": self.port,
            "credential_provider": credentials,
            "db": self.db,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "decode_responses": True,
            **self.ssl,
        }

    def client(self) -> redis.Redis:
        """A synchronous client: short timeouts, no retries (the caller falls back instead)."""
        return redis.Redis(**self._options(), retry=redis.retry.Retry(NoBackoff(), 0))

    def async_client(self) -> redis.asyncio.Redis:
        """An asyncio client with the same settings; it belongs to the event loop that first uses it."""
        return redis.asyncio.Redis(**self._options(), retry=redis.asyncio.retry.Retry(NoBackoff(), 0))


def redis_settings(conn_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> RedisSettings:
    """
    Read the redis connection ``conn_id``, synchronously (in a triggerer, use :func:`aredis_settings`).

    :param conn_id: the id of an Airflow connection of type ``redis``.
    :param timeout: seconds to connect and to wait for each answer.
    :raises NextLegInputError: no such connection, not a redis connection, or the redis extra missing;
        nothing was sent anywhere.
    """
    hook = _redis_hook(conn_id)
    conn = _look_up(conn_id, lambda: hook.get_connection(conn_id))
    return _settings_of(conn_id, conn, conn.extra_dejson, timeout)


async def aredis_settings(conn_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> RedisSettings:
    """
    Read the redis connection ``conn_id`` without blocking the event loop (the triggerer's way).

    The synchronous connection lookup fails inside Airflow 3's triggerer; before Airflow 3.3.2 the async
    one (and ``extra_dejson``) may fail there too when other async calls are in flight, so those run in
    a worker thread, as the NextLeg hook does.

    :param conn_id: the id of an Airflow connection of type ``redis``.
    :param timeout: seconds to connect and to wait for each answer.
    :raises NextLegInputError: as :func:`redis_settings`.
    """
    from airflow.sdk import Connection
    from asgiref.sync import sync_to_async

    hook = _redis_hook(conn_id)
    try:
        if hasattr(Connection, "aextra_dejson"):
            conn = await hook.aget_connection(conn_id)
        else:
            conn = await sync_to_async(hook.get_connection)(conn_id)
    except Exception as exc:
        raise _lookup_error(conn_id, exc) from None
    _check_type(conn_id, conn)
    if hasattr(conn, "aextra_dejson"):
        extra = await conn.aextra_dejson()
    else:
        extra = await sync_to_async(lambda: conn.extra_dejson)()
    return _settings_of(conn_id, conn, extra, timeout)


def _redis_hook(conn_id: str) -> Any:
    if redis is None:
        raise NextLegInputError(
            f"the NextLeg connection names redis connection {conn_id!r}, "
            "but the redis extra is not installed",
            advice="Install airflow-provider-nextleg[redis] on every worker and triggerer, "
            "or remove redis_conn_id from the NextLeg connection to pace on each host alone.",
        )
    try:
        from airflow.providers.redis.hooks.redis import RedisHook
    except ImportError:
        raise NextLegInputError(
            f"the NextLeg connection names redis connection {conn_id!r}, "
            "but apache-airflow-providers-redis is not installed",
            advice="Install airflow-provider-nextleg[redis] on every worker and triggerer.",
        ) from None
    return RedisHook(redis_conn_id=conn_id)


def _look_up(conn_id: str, get: Callable[[], Any]) -> Any:
    try:
        conn = get()
    except Exception as exc:
        raise _lookup_error(conn_id, exc) from None
    _check_type(conn_id, conn)
    return conn


def _lookup_error(conn_id: str, exc: Exception) -> Exception:
    """The error to raise for a failed lookup: a missing connection becomes a :class:`NextLegInputError`.

    Outside a task, Airflow 3.1 falls through from the secrets backends to the task supervisor, which is
    not there, and raises an ``ImportError`` (``SUPERVISOR_COMMS``) instead of ``AirflowNotFoundException``.
    """
    missing = type(exc).__name__ == "AirflowNotFoundException" or (
        isinstance(exc, ImportError) and "SUPERVISOR_COMMS" in str(exc)
    )
    if not missing:
        return exc
    return NextLegInputError(
        f"there is no Airflow connection {conn_id!r}, which the NextLeg connection's redis_conn_id names",
        advice=f"Create a connection {conn_id!r} of type redis (e.g. "
        f"AIRFLOW_CONN_{conn_id.upper()}='redis://:PASSWORD@HOST:6379/?db=0'), or remove redis_conn_id "
        "from the NextLeg connection to pace on each host alone. Nothing was sent to NextLeg.",
    )


def _check_type(conn_id: str, conn: Any) -> None:
    if conn.conn_type != CONN_TYPE:
        raise NextLegInputError(
            f"connection {conn_id!r}, named by the NextLeg connection's redis_conn_id, is of type "
            f"{conn.conn_type!r}, not {CONN_TYPE!r}",
            advice="Point redis_conn_id at a connection of type redis (e.g. "
            "redis://:PASSWORD@HOST:6379/?db=0), or remove it to pace on each host alone. "
            "Nothing was sent to NextLeg.",
        )


def _settings_of(conn_id: str, conn: Any, extra: Mapping[str, Any], timeout: float) -> RedisSettings:
    """``RedisHook.get_conn``'s reading of the fields: a password of ``none``/``false``/empty is none."""
    if extra.get("cluster") in (True, "true", "True"):
        raise NextLegInputError(
            f"redis connection {conn_id!r} is a Redis cluster, which the NextLeg budget does not support",
            advice="Point redis_conn_id at a single Redis server (or a primary behind a proxy).",
        )
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    try:
        db = int(extra.get("db") or 0)
    except (TypeError, ValueError):
        raise NextLegInputError(
            f"redis connection {conn_id!r} has db={extra.get('db')!r:.20}, not a database number",
            advice="Fix the db extra of the redis connection (?db=N in a URI), or remove it to use 0.",
        ) from None
    return RedisSettings(
        conn_id=conn_id,
        host=conn.host or "localhost",
        port=int(conn.port or 6379),
        username=conn.login or None,
        password=password,
        db=db,
        ssl={name: _flag(value) for name, value in extra.items() if name in SSL_EXTRAS},
        timeout=timeout,
    )


def _flag(value: Any) -> Any:
    """A URI or the UI stores ``ssl=true`` as a string, which the client takes as true whatever it says."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


@dataclasses.dataclass(frozen=True)
class BudgetState:
    """
    A look at an account's pacing state, times in seconds from now (negative: in the past).

    :param next_free: when the next booking's slot would be, at the earliest.
    :param hold_until: the end of the latest hold.
    :param margin: the learned margin added to every interval.
    :param clean_bookings: bookings since the latest hold or halving of the margin.
    :param ttl: seconds until the state expires (-2: there is none).
    """

    next_free: float
    hold_until: float
    margin: float
    clean_bookings: int
    ttl: float


class RedisBudget:
    """
    The request budget of one NextLeg account, in Redis, for every process on every host.

    Thread-safe and fork-safe (redis-py's pools reconnect in a forked child). The async methods use one
    client per event loop.

    :param settings: the redis connection (:func:`redis_settings` or :func:`aredis_settings`).
    :param account: what identifies the account, e.g. the base URL and a digest of the token; only its
        SHA-256 digest goes into the keys, ``nextleg:{<digest>}:...``.
    :param margin_step: seconds a hold adds to the margin.
    :param margin_cap: the largest margin, in seconds.
    :param decay_after: bookings without a hold after which the margin halves.
    :param idle_ttl: seconds the pacing state outlives its last booked slot or hold.
    """

    def __init__(
        self,
        settings: RedisSettings,
        account: str,
        *,
        margin_step: float = 0.05,
        margin_cap: float = 0.5,
        decay_after: int = 50,
        idle_ttl: float = 600.0,
    ) -> None:
        if decay_after < 1:
            raise ValueError("decay_after must be at least 1")
        self.settings = settings
        self.margin_step = margin_step
        self.margin_cap = margin_cap
        self.decay_after = decay_after
        self.idle_ttl = idle_ttl
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        self.prefix = f"{KEY_PREFIX}:{{{digest}}}:"  # a hash tag: one slot, should a proxy shard keys
        self._pace_key = self.prefix + "pace"
        self._lock = threading.Lock()
        self._sync: tuple[redis.Redis, dict[str, Script]] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, dict[str, AsyncScript]]
        ] = weakref.WeakKeyDictionary()

    # --- pacing ----------------------------------------------------------------------------------------

    def book(self, interval: float) -> float:
        """
        Book the account's next send slot: seconds from now until it (0: send now). One round trip.

        The slot is the latest of now, the previous booking's slot plus ``interval`` plus the margin, and
        the end of any hold.

        :param interval: seconds between two requests of the account (``rate_limit_interval``).
        :raises BudgetUnavailable: Redis did not answer.
        """
        with self._guard():
            return self._seconds(self._script("book")(keys=[self._pace_key], args=self._book_args(interval)))

    async def abook(self, interval: float) -> float:
        """The async twin of :meth:`book`."""
        with self._guard():
            script = await self._ascript("book")
            return self._seconds(await script(keys=[self._pace_key], args=self._book_args(interval)))

    def confirm(self, interval: float) -> float:
        """
        Just before sending on a booked slot: 0 to send now, or, when a hold began after the booking and
        covers now, the seconds to a new slot booked after it (sleep, then confirm again).

        :param interval: as for :meth:`book`.
        :raises BudgetUnavailable: Redis did not answer.
        """
        with self._guard():
            result = self._script("confirm")(keys=[self._pace_key], args=self._book_args(interval))
            return self._seconds(result)

    async def aconfirm(self, interval: float) -> float:
        """The async twin of :meth:`confirm`."""
        with self._guard():
            script = await self._ascript("confirm")
            return self._seconds(await script(keys=[self._pace_key], args=self._book_args(interval)))

    def hold(self, seconds: float) -> float:
        """
        A 429's ``Retry-After``: nobody sends for ``seconds`` from now, booked or not; the margin grows.

        :param seconds: how long the account stays quiet.
        :returns: the margin now, in seconds.
        :raises BudgetUnavailable: Redis did not answer.
        """
        with self._guard():
            return self._seconds(self._script("hold")(keys=[self._pace_key], args=self._hold_args(seconds)))

    async def ahold(self, seconds: float) -> float:
        """The async twin of :meth:`hold`."""
        with self._guard():
            script = await self._ascript("hold")
            return self._seconds(await script(keys=[self._pace_key], args=self._hold_args(seconds)))

    def state(self) -> BudgetState:
        """The account's pacing state now (read only)."""
        with self._guard():
            return self._state(self._script("state")(keys=[self._pace_key], args=[]))

    async def astate(self) -> BudgetState:
        """The async twin of :meth:`state`."""
        with self._guard():
            script = await self._ascript("state")
            return self._state(await script(keys=[self._pace_key], args=[]))

    # --- answers shared for a moment, and poll leases ---------------------------------------------------

    def book_poll(self, message_id: str, interval: float, lease_ttl: float) -> PollBooking:
        """
        Before polling ``message_id``, in one round trip: the answer another process shared, or else the
        poll lease and a send slot (as :meth:`book`), or else nothing (another process is polling it).

        With :meth:`remember` after the answer, a poll costs two round trips, a shared answer one; a poll
        needs no :meth:`confirm` (a 429 on a poll loses nothing but the poll).

        :param message_id: the NextLeg message id.
        :param interval: as for :meth:`book`.
        :param lease_ttl: seconds the lease lasts at most (the poll's timeout; :meth:`remember` ends it).
        """
        with self._guard():
            result = self._script("book_poll")(
                keys=self._poll_keys(message_id), args=self._poll_args(interval, lease_ttl)
            )
            return self._poll_booking(result)

    async def abook_poll(self, message_id: str, interval: float, lease_ttl: float) -> PollBooking:
        """The async twin of :meth:`book_poll`."""
        with self._guard():
            script = await self._ascript("book_poll")
            result = await script(keys=self._poll_keys(message_id), args=self._poll_args(interval, lease_ttl))
            return self._poll_booking(result)

    def remember(self, message_id: str, payload: str, ttl_seconds: float) -> None:
        """
        Share the latest answer for ``message_id`` with every process for ``ttl_seconds``, and release
        the poll lease (one round trip).

        :param message_id: the NextLeg message id.
        :param payload: the answer, serialized (JSON).
        :param ttl_seconds: how long others may reuse it instead of polling.
        """
        with self._guard():
            keys = [self._answer_key(message_id), self._poll_key(message_id)]
            self._script("remember")(keys=keys, args=[payload, _ms(ttl_seconds)])

    async def aremember(self, message_id: str, payload: str, ttl_seconds: float) -> None:
        """The async twin of :meth:`remember`."""
        with self._guard():
            script = await self._ascript("remember")
            keys = [self._answer_key(message_id), self._poll_key(message_id)]
            await script(keys=keys, args=[payload, _ms(ttl_seconds)])

    def recall(self, message_id: str) -> str | None:
        """The answer for ``message_id`` that a process shared within its TTL, or ``None``."""
        with self._guard():
            return self._client().get(self._answer_key(message_id))  # type: ignore[return-value]

    async def arecall(self, message_id: str) -> str | None:
        """The async twin of :meth:`recall`."""
        with self._guard():
            client = (await self._aclient())[0]
            return await client.get(self._answer_key(message_id))  # type: ignore[no-any-return]

    def claim_poll(self, message_id: str, ttl: float) -> bool:
        """
        Take the lease to poll ``message_id`` for ``ttl`` seconds, or until :meth:`remember`: ``False``
        when another process holds it (then :meth:`recall` its answer a little later instead of polling).

        :param message_id: the NextLeg message id.
        :param ttl: seconds the lease lasts (a poll's timeout, so a crashed poller frees it by itself).
        """
        with self._guard():
            return bool(self._client().set(self._poll_key(message_id), "1", nx=True, px=_ms(ttl)))

    async def aclaim_poll(self, message_id: str, ttl: float) -> bool:
        """The async twin of :meth:`claim_poll`."""
        with self._guard():
            client = (await self._aclient())[0]
            return bool(await client.set(self._poll_key(message_id), "1", nx=True, px=_ms(ttl)))

    # --- clients ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the synchronous client's connections (the async ones close with :meth:`aclose`)."""
        with self._lock:
            if self._sync is not None:
                self._sync[0].close()
                self._sync = None

    async def aclose(self) -> None:
        """Close the current event loop's client."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose()

    def _client(self) -> redis.Redis:
        return self._sync_entry()[0]

    def _script(self, name: str) -> Script:
        return self._sync_entry()[1][name]

    def _sync_entry(self) -> tuple[redis.Redis, dict[str, Script]]:
        with self._lock:
            if self._sync is None:
                client = self.settings.client()
                self._sync = (client, {name: client.register_script(lua) for name, lua in _SCRIPTS.items()})
            return self._sync

    async def _aclient(self) -> tuple[redis.asyncio.Redis, dict[str, AsyncScript]]:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            client = self.settings.async_client()
            entry = (client, {name: client.register_script(lua) for name, lua in _SCRIPTS.items()})
            self._async[loop] = entry
        return entry

    async def _ascript(self, name: str) -> AsyncScript:
        return (await self._aclient())[1][name]

    # --- helpers ----------------------------------------------------------------------------------------

    def _book_args(self, interval: float) -> list[int]:
        return [round(max(interval, 0.0) * _US), _ms(self.idle_ttl), self.decay_after]

    def _poll_keys(self, message_id: str) -> list[str]:
        return [self._pace_key, self._answer_key(message_id), self._poll_key(message_id)]

    def _poll_args(self, interval: float, lease_ttl: float) -> list[int]:
        return [*self._book_args(interval), _ms(lease_ttl)]

    @classmethod
    def _poll_booking(cls, result: list[Any]) -> PollBooking:
        code = int(result[0])
        if code == -1:
            return PollBooking(wait=None, answer=result[1])
        if code == -2:
            return PollBooking(wait=None, answer=None)
        return PollBooking(wait=cls._seconds(code), answer=None)

    def _hold_args(self, seconds: float) -> list[int]:
        step, cap = round(self.margin_step * _US), round(self.margin_cap * _US)
        return [round(max(seconds, 0.0) * _US), _ms(self.idle_ttl), step, cap]

    @staticmethod
    def _seconds(microseconds: Any) -> float:
        return max(int(microseconds), 0) / _US

    @staticmethod
    def _state(values: list[Any]) -> BudgetState:
        next_free, hold_until, margin, clean, pttl = (int(value) for value in values)
        return BudgetState(
            next_free=next_free / _US,
            hold_until=hold_until / _US,
            margin=margin / _US,
            clean_bookings=clean,
            ttl=pttl / 1000 if pttl >= 0 else float(pttl),
        )

    def _answer_key(self, message_id: str) -> str:
        return f"{self.prefix}answer:{message_id}"

    def _poll_key(self, message_id: str) -> str:
        return f"{self.prefix}poll:{message_id}"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn any failure to reach or use Redis into :class:`BudgetUnavailable`, without the password."""
        try:
            yield
        except (redis.RedisError, OSError, asyncio.TimeoutError) as exc:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.settings.password:
                cause = cause.replace(self.settings.password, "***")
            raise BudgetUnavailable(self.settings.conn_id, cause) from None


_SCRIPTS = {
    "book": _BOOK,
    "confirm": _CONFIRM,
    "hold": _HOLD,
    "state": _STATE,
    "book_poll": _BOOK_POLL,
    "remember": _REMEMBER,
}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Reconnect:
    """
    When to try Redis again after it failed, and one warning per outage.

    ``if policy.should_try(): try: wait = budget.book(i); policy.succeeded() except BudgetUnavailable as
    e: policy.failed(e); wait = host.reserve()`` — after a failure, :meth:`should_try` is ``False`` for
    ``retry_every`` seconds, so a dead Redis costs one timeout per period, not one per request. The first
    failure of an outage logs a warning naming the connection; the first success after it, an info.
    Thread-safe.

    :param conn_id: the redis connection, for the messages.
    :param retry_every: seconds between two tries while Redis is down.
    :param clock: monotonic seconds (a test may move it).
    """

    def __init__(
        self, conn_id: str, *, retry_every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.conn_id = conn_id
        self.retry_every = retry_every
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def down(self) -> bool:
        """Whether an outage is going on (the latest try failed)."""
        return self._down_since is not None

    def should_try(self) -> bool:
        """Whether to use Redis now: always while it answers, once per ``retry_every`` while it is down."""
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_every  # one caller tries; the others keep to the host
            return True

    def failed(self, error: BaseException | None = None) -> None:
        """Redis failed: pace on the host until the next try; a warning if this starts an outage."""
        with self._lock:
            now = self._clock()
            self._next_try = now + self.retry_every
            if self._down_since is not None:
                return
            self._down_since = now
        log.warning(
            "Redis connection %r unreachable (%s): pacing on this host only until it answers; "
            "trying again every %g s.",
            self.conn_id,
            getattr(error, "cause", None) or error or "no answer",
            self.retry_every,
        )

    def succeeded(self) -> None:
        """Redis answered: an info if that ends an outage."""
        with self._lock:
            if self._down_since is None:
                return
            outage = self._clock() - self._down_since
            self._down_since = None
        log.info(
            "Redis connection %r answers again after %.0f s: pacing with every host of the account.",
            self.conn_id,
            outage,
        )
