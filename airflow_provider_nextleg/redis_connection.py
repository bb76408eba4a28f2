"""The redis connection that holds a NextLeg account's budget for every host, read the way Airflow's
Redis provider reads it, and the clients built from it.

The connection is an Airflow connection of type ``redis`` (``apache-airflow-providers-redis``, the
``redis`` extra of this package): host, port, login, password, and ``db`` and the ``ssl*`` options in the
extra (write ``redis://:PASSWORD@HOST:6379/?db=N``: the ``/N`` path of a URI is ignored). ``RedisHook``
builds a synchronous client only, without timeouts, so both clients are built here from the same
fields, with short timeouts and no retries. The password never appears in a repr, a log or an error.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_nextleg.exceptions import NextLegError, NextLegInputError

try:
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.credentials import UsernamePasswordCredentialProvider
except ImportError:  # the redis extra is not installed; redis_settings() says so
    redis = None  # type: ignore[assignment]

CONN_TYPE = "redis"
"""The connection type a ``redis_conn_id`` must name (that of ``apache-airflow-providers-redis``)."""
DEFAULT_TIMEOUT = 0.5
"""Seconds to connect to Redis and to wait for an answer: a dead Redis is noticed within about that."""
SSL_EXTRAS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")
"""The extras that ``RedisHook`` passes on to the client, besides ``db``."""


def _no_client_info() -> dict[str, None]:
    """
    The client option that skips ``CLIENT SETINFO`` on connecting: two round trips per new connection
    that the budget has no use for, and every Airflow task is a new process with a new connection.
    redis-py 7 names it ``driver_info`` and deprecates ``lib_name``/``lib_version``, which 5 and 6 take.
    """
    if redis is None:
        return {}
    if "driver_info" in inspect.signature(redis.Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


_NO_CLIENT_INFO = _no_client_info()


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
            # RESP2: redis-py 8 defaults to RESP3, whose HELLO is one more round trip per connection.
            "protocol": 2,
            **_NO_CLIENT_INFO,
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
