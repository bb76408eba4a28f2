"""One session per NextLeg account and event loop: the HTTP client, the budget and the poll scheduler.

Everything asynchronous that one account uses in one event loop (the triggers of a triggerer process; a
worker's wait, in a loop of its own) lives in one :class:`AccountSession`: its connection's settings, one
``httpx.AsyncClient``, the account's rate limiter and, once something waits for a job, its
:class:`~airflow_provider_nextleg.polling.PollScheduler`. Sessions are counted: each user enters one
(:func:`account_session`, or ``async with hook.session()``), and the last to leave closes it. The users
of one connection id share one reading of the connection while any of them is in, so thousands of
triggers starting together read it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from tenacity import AsyncRetrying

from airflow_provider_nextleg.hooks.connection import AccountSettings, aread_connection
from airflow_provider_nextleg.hooks.transport import ApiCall, asend
from airflow_provider_nextleg.ratelimit import RateLimiter, Slot

if TYPE_CHECKING:
    from airflow_provider_nextleg.polling import PollScheduler

T = TypeVar("T")


class AccountSession:
    """
    What one account uses in one event loop; get it from :func:`account_session`, never build it.

    :param settings: the settings of the connection that opened it.
    """

    def __init__(self, settings: AccountSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(headers=settings.headers, verify=tls_context())
        self.users = 0
        self._scheduler: PollScheduler | None = None

    @property
    def limiter(self) -> RateLimiter:
        """The account's request budget (shared with every other caller of the host)."""
        return self.settings.limiter

    @property
    def scheduler(self) -> PollScheduler:
        """The account's poll scheduler in this loop, created when first asked for."""
        if self._scheduler is None:
            from airflow_provider_nextleg.polling import PollScheduler  # polling builds on this module

            self._scheduler = PollScheduler(self)
        return self._scheduler

    async def send(self, call: ApiCall[T], slot: Slot | None = None) -> T:
        """
        One attempt of a call, not retried: for a caller that decides itself when to ask again.

        :param call: what to send.
        :param slot: a turn of the budget the caller booked; one is booked without it.
        """
        return await asend(self.client, call, self.settings, slot)

    async def request(self, call: ApiCall[T], retrying: dict[str, Any]) -> T:
        """
        A call with its retries, each attempt taking a turn of the budget.

        :param call: what to send.
        :param retrying: the retry policy (:func:`~airflow_provider_nextleg.hooks.transport.retry_policy`).
        """
        result: T = await AsyncRetrying(**retrying)(asend, self.client, call, self.settings)
        return result

    async def aclose(self) -> None:
        """Stop the scheduler's polls and close the client."""
        if self._scheduler is not None:
            self._scheduler.close()
        await self.client.aclose()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """
    The TLS settings of every session's client, made once per process: httpx would build them for each
    client, reading the whole CA bundle, which holds the event loop for 20 to 70 ms every time the first
    trigger of an account arrives. As httpx does, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` name the bundle
    (read when the first session opens); certifi's otherwise.
    """
    return httpx.create_ssl_context()


class _LoopSessions:
    """The sessions of one event loop, by account, and the connection readings in use, by id."""

    def __init__(self) -> None:
        self.by_account: dict[tuple[str, str], AccountSession] = {}
        self.readings: dict[str, asyncio.Task[AccountSettings]] = {}
        self.readers: Counter[str] = Counter()

    def enter(self, settings: AccountSettings) -> AccountSession:
        """Join the account's session, opening it if none is open."""
        session = self.by_account.get(settings.account)
        if session is None or session.client.is_closed:
            session = self.by_account[settings.account] = AccountSession(settings)
        session.users += 1
        return session

    async def leave(self, session: AccountSession) -> None:
        """Leave a session; the last user closes it."""
        session.users -= 1
        if session.users <= 0:
            if self.by_account.get(session.settings.account) is session:
                del self.by_account[session.settings.account]
            await session.aclose()

    async def join(self, conn_id: str) -> AccountSession:
        """
        Become a user of the session of a connection's account, the connection read once for all its
        users in the loop (see :func:`account_session`); leave with :meth:`part`. For callers that hold
        a session by the thousand (the triggers' :class:`~airflow_provider_nextleg.polling.MessageWatch`),
        where a generator's context manager would add objects for the garbage collector to trace.

        :param conn_id: the nextleg connection.
        """
        self.readers[conn_id] += 1
        try:
            reading = self.readings.get(conn_id)
            if reading is None:
                reading = self.readings[conn_id] = asyncio.create_task(aread_connection(conn_id))
            return self.enter(await asyncio.shield(reading))  # a user cancelled meanwhile leaves it
        except BaseException:
            self._unread(conn_id)
            raise

    async def part(self, conn_id: str, session: AccountSession) -> None:
        """Leave a session joined with :meth:`join`; the connection's last user drops its reading."""
        try:
            await self.leave(session)
        finally:
            self._unread(conn_id)

    def _unread(self, conn_id: str) -> None:
        self.readers[conn_id] -= 1
        if not self.readers[conn_id]:
            del self.readers[conn_id]
            self.readings.pop(conn_id).cancel()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSessions] = weakref.WeakKeyDictionary()


def loop_sessions() -> _LoopSessions:
    """The running event loop's sessions."""
    loop = asyncio.get_running_loop()
    sessions = _loops.get(loop)
    if sessions is None:
        sessions = _loops[loop] = _LoopSessions()
    return sessions


@contextlib.asynccontextmanager
async def account_session(
    conn_id: str, settings: AccountSettings | None = None
) -> AsyncIterator[AccountSession]:
    """
    Be a user of the session of a connection's account for the duration of the block.

    A connection is read when its first user of the loop comes, and read again only once all its users
    have left: a changed connection applies to the users that come after that.

    :param conn_id: the nextleg connection.
    :param settings: the connection's settings, when the caller has read them already.
    """
    sessions = loop_sessions()
    if settings is not None:
        session = sessions.enter(settings)
        try:
            yield session
        finally:
            await sessions.leave(session)
        return
    session = await sessions.join(conn_id)
    try:
        yield session
    finally:
        await sessions.part(conn_id, session)


async def close_loop_sessions() -> None:
    """Close every session of the running event loop, in use or not (the end of a worker's wait, a test)."""
    sessions = loop_sessions()
    for reading in sessions.readings.values():
        reading.cancel()
    open_sessions = list(sessions.by_account.values())
    _loops.pop(asyncio.get_running_loop(), None)
    for session in open_sessions:
        await session.aclose()
