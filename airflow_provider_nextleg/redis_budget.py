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
a wrong password) raises :class:`~airflow_provider_nextleg.redis_connection.BudgetUnavailable`, within
about a second: the caller then paces on its host limiter, and
:class:`~airflow_provider_nextleg.ratelimit.Reconnect` says when to try Redis again, with one warning per
outage.

**The margin**: each :meth:`~RedisBudget.hold` adds :attr:`RedisBudget.margin_step` (50 ms) to the margin,
up to :attr:`RedisBudget.margin_cap` (0.5 s); after :attr:`RedisBudget.decay_after` (50) bookings in a row
without a hold, the margin halves (below 1 ms it is 0). Counting bookings rather than seconds ties the
decay to traffic: an idle account keeps what it learned until the state expires
(:attr:`RedisBudget.idle_ttl` after its last booked slot, 10 minutes), and a busy one sheds a margin it no
longer needs within a few minutes (50 bookings at 3 s).

The redis connection and its clients: :mod:`airflow_provider_nextleg.redis_connection`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, NamedTuple, TypeVar

from airflow_provider_nextleg.redis_connection import BudgetUnavailable, RedisSettings

try:
    import redis
    import redis.asyncio
except ImportError:  # the redis extra is not installed; redis_connection.redis_settings() says so
    redis = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KEY_PREFIX = "nextleg"
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
local function book(interval, decay_after, floor)
  clean = clean + 1
  if clean >= decay_after then
    margin = math.floor(margin / 2)
    if margin < 1000 then margin = 0 end
    clean = 0
  end
  local slot = math.max(now + floor, next_free, hold_until)
  next_free = slot + interval + margin
  return slot - now
end
"""
# What _BOOK and _BOOK_POLL share: read the state, book a slot (ARGV as _BOOK's) into ``wait``, save.
_BOOK_AND_SAVE = (
    _NOW
    + _SAVE
    + _BOOKING
    + """
local wait = book(tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]))
save(tonumber(ARGV[2]))
"""
)
# KEYS[1] the pacing hash; ARGV: interval (us), idle TTL (ms), bookings before the margin halves, and
# the earliest slot the caller may take (us from now: a host rejoining after an outage, its own next turn).
_BOOK = _PRELUDE + _BOOK_AND_SAVE + "return wait\n"
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
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return {-2} end
"""
    + _BOOK_AND_SAVE
    + "return {wait}\n"
)
# KEYS[1] the shared answer, KEYS[2] the poll lease (released); ARGV: the answer, its TTL (ms).
_REMEMBER = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""


_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _Call(Generic[_T]):
    """One call of a Lua script, whichever face sends it: its keys and arguments, and how to read the answer.

    :param script: the script's name in ``_SCRIPTS``.
    :param read: turns the script's answer into the method's result.
    """

    script: str
    keys: list[str]
    args: list[Any]
    read: Callable[[Any], _T]


def _ignore(answer: object) -> None:
    return None


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
        self._sync: tuple[redis.Redis, set[str]] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, set[str]]
        ] = weakref.WeakKeyDictionary()

    # --- pacing ----------------------------------------------------------------------------------------

    def book(self, interval: float, *, not_before: float = 0.0) -> float:
        """
        Book the account's next send slot: seconds from now until it (0: send now). One round trip.

        The slot is the latest of now plus ``not_before``, the previous booking's slot plus ``interval``
        plus the margin, and the end of any hold.

        :param interval: seconds between two requests of the account (``rate_limit_interval``).
        :param not_before: seconds from now before which the slot may not be: a host rejoining after an
            outage passes its own next turn, so that Redis, perhaps restarted empty, does not book a
            request right after the last one the host sent alone.
        :raises BudgetUnavailable: Redis did not answer.
        """
        return self._run(self._booking("book", interval, not_before))

    async def abook(self, interval: float, *, not_before: float = 0.0) -> float:
        """The async twin of :meth:`book`."""
        return await self._arun(self._booking("book", interval, not_before))

    def confirm(self, interval: float) -> float:
        """
        Just before sending on a booked slot: 0 to send now, or, when a hold began after the booking and
        covers now, the seconds to a new slot booked after it (sleep, then confirm again).

        :param interval: as for :meth:`book`.
        :raises BudgetUnavailable: Redis did not answer.
        """
        return self._run(self._booking("confirm", interval))

    async def aconfirm(self, interval: float) -> float:
        """The async twin of :meth:`confirm`."""
        return await self._arun(self._booking("confirm", interval))

    def hold(self, seconds: float) -> float:
        """
        A 429's ``Retry-After``: nobody sends for ``seconds`` from now, booked or not; the margin grows.

        :param seconds: how long the account stays quiet.
        :returns: the margin now, in seconds.
        :raises BudgetUnavailable: Redis did not answer.
        """
        return self._run(self._hold(seconds))

    async def ahold(self, seconds: float) -> float:
        """The async twin of :meth:`hold`."""
        return await self._arun(self._hold(seconds))

    def state(self) -> BudgetState:
        """The account's pacing state now (read only)."""
        return self._run(_Call("state", [self._pace_key], [], self._state))

    async def astate(self) -> BudgetState:
        """The async twin of :meth:`state`."""
        return await self._arun(_Call("state", [self._pace_key], [], self._state))

    # --- answers shared for a moment, and poll leases ---------------------------------------------------

    def book_poll(
        self, message_id: str, interval: float, lease_ttl: float, *, not_before: float = 0.0
    ) -> PollBooking:
        """
        Before polling ``message_id``, in one round trip: the answer another process shared, or else the
        poll lease and a send slot (as :meth:`book`), or else nothing (another process is polling it).

        With :meth:`remember` after the answer, a poll costs two round trips, a shared answer one; a poll
        needs no :meth:`confirm` (a 429 on a poll loses nothing but the poll).

        :param message_id: the NextLeg message id.
        :param interval: as for :meth:`book`.
        :param lease_ttl: seconds the lease lasts at most (the poll's timeout; :meth:`remember` ends it).
        :param not_before: as for :meth:`book`.
        """
        return self._run(self._book_poll(message_id, interval, lease_ttl, not_before))

    async def abook_poll(
        self, message_id: str, interval: float, lease_ttl: float, *, not_before: float = 0.0
    ) -> PollBooking:
        """The async twin of :meth:`book_poll`."""
        return await self._arun(self._book_poll(message_id, interval, lease_ttl, not_before))

    def remember(self, message_id: str, payload: str, ttl_seconds: float) -> None:
        """
        Share the latest answer for ``message_id`` with every process for ``ttl_seconds``, and release
        the poll lease (one round trip).

        :param message_id: the NextLeg message id.
        :param payload: the answer, serialized (JSON).
        :param ttl_seconds: how long others may reuse it instead of polling.
        """
        self._run(self._remember(message_id, payload, ttl_seconds))

    async def aremember(self, message_id: str, payload: str, ttl_seconds: float) -> None:
        """The async twin of :meth:`remember`."""
        await self._arun(self._remember(message_id, payload, ttl_seconds))

    def recall(self, message_id: str) -> str | None:
        """The answer for ``message_id`` that a process shared within its TTL, or ``None``."""
        with self._guard():
            return _text(self._client().get(self._answer_key(message_id)))

    async def arecall(self, message_id: str) -> str | None:
        """The async twin of :meth:`recall`."""
        with self._guard():
            client = (await self._aclient())[0]
            return _text(await client.get(self._answer_key(message_id)))

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

    def _sync_entry(self) -> tuple[redis.Redis, set[str]]:
        """The sync client, and the scripts it has sent whole (see :meth:`_run`)."""
        with self._lock:
            if self._sync is None:
                self._sync = (self.settings.client(), set())
            return self._sync

    async def _aclient(self) -> tuple[redis.asyncio.Redis, set[str]]:
        """This event loop's client, and the scripts it has sent whole."""
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            entry = self._async[loop] = (self.settings.async_client(), set())
        return entry

    # --- the scripts' calls: built and read here, sent by either face ----------------------------------

    def _run(self, call: _Call[_T]) -> _T:
        """
        One round trip per call: a client's first call of a script sends it whole (``EVAL``, which also
        caches it in the server), later ones its digest (``EVALSHA``); only a server restarted since,
        which answers ``NOSCRIPT``, costs a second trip (the script whole again). redis-py's ``Script``
        would try the digest first and then ``SCRIPT LOAD`` it: three trips per script and new server.
        """
        with self._guard():
            client, sent = self._sync_entry()
            whole = call.script not in sent
            try:
                answer = client.eval(*_eval_args(call, whole)) if whole else client.evalsha(*_eval_args(call))
            except redis.exceptions.NoScriptError:
                answer = client.eval(*_eval_args(call, whole=True))
            sent.add(call.script)
            return call.read(answer)

    async def _arun(self, call: _Call[_T]) -> _T:
        """The async face of :meth:`_run`."""
        with self._guard():
            client, sent = await self._aclient()
            whole = call.script not in sent
            try:
                if whole:
                    answer = await _reply(client.eval(*_eval_args(call, whole)))
                else:
                    answer = await _reply(client.evalsha(*_eval_args(call)))
            except redis.exceptions.NoScriptError:
                answer = await _reply(client.eval(*_eval_args(call, whole=True)))
            sent.add(call.script)
            return call.read(answer)

    def _booking(self, script: str, interval: float, not_before: float = 0.0) -> _Call[float]:
        """``book`` or ``confirm``: the pacing hash; the interval, the idle TTL, the decay, the floor."""
        return _Call(script, [self._pace_key], self._book_args(interval, not_before), self._seconds)

    def _hold(self, seconds: float) -> _Call[float]:
        step, cap = round(self.margin_step * _US), round(self.margin_cap * _US)
        args = [round(max(seconds, 0.0) * _US), _ms(self.idle_ttl), step, cap]
        return _Call("hold", [self._pace_key], args, self._seconds)

    def _book_poll(
        self, message_id: str, interval: float, lease_ttl: float, not_before: float
    ) -> _Call[PollBooking]:
        keys = [self._pace_key, self._answer_key(message_id), self._poll_key(message_id)]
        args = [*self._book_args(interval, not_before), _ms(lease_ttl)]
        return _Call("book_poll", keys, args, self._poll_booking)

    def _remember(self, message_id: str, payload: str, ttl_seconds: float) -> _Call[None]:
        keys = [self._answer_key(message_id), self._poll_key(message_id)]
        return _Call("remember", keys, [payload, _ms(ttl_seconds)], _ignore)

    def _book_args(self, interval: float, not_before: float = 0.0) -> list[int]:
        floor = round(max(not_before, 0.0) * _US)
        return [round(max(interval, 0.0) * _US), _ms(self.idle_ttl), self.decay_after, floor]

    @classmethod
    def _poll_booking(cls, result: list[Any]) -> PollBooking:
        code = int(result[0])
        if code == -1:
            return PollBooking(wait=None, answer=result[1])
        if code == -2:
            return PollBooking(wait=None, answer=None)
        return PollBooking(wait=cls._seconds(code), answer=None)

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


_DIGESTS = {name: hashlib.sha1(lua.encode()).hexdigest() for name, lua in _SCRIPTS.items()}
"""Each script's SHA-1, by which ``EVALSHA`` names it."""


def _eval_args(call: _Call[Any], whole: bool = False) -> tuple[Any, ...]:
    """``EVAL``'s arguments (the script itself) or ``EVALSHA``'s (its digest), then the keys and args."""
    script = _SCRIPTS[call.script] if whole else _DIGESTS[call.script]
    return (script, len(call.keys), *call.keys, *call.args)


async def _reply(pending: Any) -> Any:
    """The asyncio client's reply (redis-py's types give its commands the sync client's result too)."""
    return await pending


def _text(value: Any) -> str | None:
    """A value read back from Redis as text (the clients decode answers; redis-py's types say either)."""
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
