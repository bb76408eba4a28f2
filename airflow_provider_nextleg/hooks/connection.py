"""Reading a ``nextleg`` connection into the settings every request of its account uses.

A connection is read once per hook (sync) or once per event loop and connection id while it is in use
(async, see :mod:`airflow_provider_nextleg.hooks.session`); its values are checked here, where they enter,
and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook, Connection
from asgiref.sync import sync_to_async

from airflow_provider_nextleg import __version__
from airflow_provider_nextleg.exceptions import NextLegAuthenticationError, NextLegInputError
from airflow_provider_nextleg.get_provider_info import (
    DEFAULT_BASE_URL,
    DEFAULT_EXPIRE_MINS,
    DEFAULT_MODE,
    DEFAULT_RATE_LIMIT_INTERVAL,
    DEFAULT_TIMEOUT,
    MODES,
)
from airflow_provider_nextleg.ratelimit import RateLimiter, account_key, rate_limiter_for
from airflow_provider_nextleg.redis_connection import RedisSettings, aredis_settings, redis_settings
from airflow_provider_nextleg.webhooks.config import WebhookConfig

MAX_TIMEOUT = 3600.0
"""Longest ``timeout`` extra accepted: a request that waits an hour for an answer has hung."""
MAX_RATE_LIMIT_INTERVAL = 600.0
"""Longest ``rate_limit_interval`` extra accepted (the documented limit is 3 s)."""
MAX_EXPIRE_MINS = 24 * 60
"""Longest ``expire_mins`` extra accepted: a day."""


@dataclass(frozen=True)
class AccountSettings:
    """
    What the requests of one connection need: where, with which token, how patient, how fast.

    :param conn_id: the connection's id, for messages.
    :param base_url: the API's base URL, without a trailing slash.
    :param token: the API token; kept out of the repr.
    :param timeout: seconds one request may wait for an answer.
    :param rate_limit_interval: seconds between two requests of the account.
    :param expire_mins: the ``expireMins`` of every poll.
    :param redis: the redis connection holding the account's budget for every host, if one is named.
    :param mode: how jobs reach Midjourney (:data:`~airflow_provider_nextleg.get_provider_info.MODES`).
    :param webhooks: the connection's webhook receiver, secret and inbox.
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    timeout: float
    rate_limit_interval: float
    expire_mins: int
    redis: RedisSettings | None = None
    mode: str = DEFAULT_MODE
    webhooks: WebhookConfig | None = None

    @classmethod
    def from_connection(
        cls, conn: Connection, extra: Mapping[str, Any], redis: RedisSettings | None = None
    ) -> AccountSettings:
        """
        Read a nextleg connection: token in the password, base URL in the host, tuning in the extras.

        :param conn: the Airflow connection.
        :param extra: its extra, already decoded (the async face decodes it without blocking).
        :param redis: the connection its ``redis_conn_id`` extra names, read (see :func:`redis_conn_id`).
        """
        if not conn.password:
            raise NextLegAuthenticationError(
                f"connection {conn.conn_id!r} has no API token",
                advice="Put the NextLeg API token in the connection's password field.",
            )
        return cls(
            conn_id=conn.conn_id,
            base_url=_base_url(conn),
            token=conn.password,
            timeout=_extra_number(conn, extra, "timeout", DEFAULT_TIMEOUT, 0.001, MAX_TIMEOUT),
            rate_limit_interval=_extra_number(
                conn, extra, "rate_limit_interval", DEFAULT_RATE_LIMIT_INTERVAL, 0.0, MAX_RATE_LIMIT_INTERVAL
            ),
            expire_mins=_extra_integer(conn, extra, "expire_mins", DEFAULT_EXPIRE_MINS, 1, MAX_EXPIRE_MINS),
            redis=redis,
            mode=_extra_choice(conn, extra, "mode", MODES, DEFAULT_MODE),
            webhooks=WebhookConfig.from_connection(conn.conn_id, extra, redis),
        )

    @property
    def account(self) -> tuple[str, str]:
        """The account these settings reach, without its token (see :func:`account_key`)."""
        return account_key(self.base_url, self.token)

    @cached_property
    def limiter(self) -> RateLimiter:
        """The account's request budget, shared by every caller of the host."""
        return rate_limiter_for(self.base_url, self.token, self.rate_limit_interval, self.redis)

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every request; the token travels here and nowhere else."""
        return {
            "Authorization": f"Bearer {self.token}",
            "User-Agent": f"airflow-provider-nextleg/{__version__}",
        }


def read_connection(conn_id: str) -> AccountSettings:
    """
    The settings of a nextleg connection, read synchronously (workers).

    :param conn_id: the connection's id.
    """
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    redis_id = redis_conn_id(conn, extra)
    return AccountSettings.from_connection(conn, extra, redis_settings(redis_id) if redis_id else None)


async def aread_connection(conn_id: str) -> AccountSettings:
    """
    The settings of a nextleg connection, read without blocking the event loop, on every supported Airflow.

    Airflow 3.3.2 added ``Connection.aextra_dejson``, which masks the extra's secrets asynchronously; from
    then on ``aget_connection`` is safe in the triggerer. Before it, both the async lookup and
    ``extra_dejson`` mask through a synchronous call to the supervisor, which fails when another async
    call is in flight, so there the synchronous calls run in a worker thread. A secrets backend read
    outside a task may hand back Airflow's ORM connection, which has no ``aextra_dejson`` either.

    :param conn_id: the connection's id.
    """
    if hasattr(Connection, "aextra_dejson"):
        conn = await BaseHook.aget_connection(conn_id)
    else:
        conn = await sync_to_async(BaseHook.get_connection)(conn_id)
    if hasattr(conn, "aextra_dejson"):
        extra = await conn.aextra_dejson()
    else:
        extra = await sync_to_async(lambda: conn.extra_dejson)()
    redis_id = redis_conn_id(conn, extra)
    return AccountSettings.from_connection(conn, extra, await aredis_settings(redis_id) if redis_id else None)


def redis_conn_id(conn: Connection, extra: Mapping[str, Any]) -> str | None:
    """
    The ``redis_conn_id`` extra: the redis connection that holds the account's budget for every host.

    :param conn: the nextleg connection.
    :param extra: its extra.
    """
    value = extra.get("redis_conn_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has redis_conn_id={value!r:.40}, not a connection id",
            advice="Set the redis_conn_id extra to the id of an Airflow connection of type redis, or "
            "remove it to keep each host's budget to itself.",
        )
    return value.strip()


def _base_url(conn: Connection) -> str:
    """The API's base URL from the host: a full URL, or a bare host completed by schema and port."""
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    try:
        parts = urlsplit(host)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in host:
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has host {host!r:.120}, which is not an http(s) URL",
            advice=f"Set the host to the API's base URL, e.g. {DEFAULT_BASE_URL}.",
        )
    netloc = parts.netloc if port is not None or not conn.port else f"{parts.netloc}:{conn.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _extra_number(
    conn: Connection, extra: Mapping[str, Any], name: str, default: float, minimum: float, maximum: float
) -> float:
    """A numeric extra, finite and within bounds; the UI and URI forms store numbers as strings."""
    value = extra.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or not minimum <= number <= maximum:
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has {name}={value!r:.40}, not a number from {minimum:g} to "
            f"{maximum:g}",
            advice=f"Fix the {name} extra of the connection, or remove it to use {default:g}.",
        )
    return number


def _extra_choice(
    conn: Connection, extra: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str
) -> str:
    """An extra that takes one of a few words."""
    value = extra.get(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has {name}={value!r:.40}, not one of {', '.join(choices)}",
            advice=f"Fix the {name} extra of the connection, or remove it to use {default}.",
        )
    return str(value)


def _extra_integer(
    conn: Connection, extra: Mapping[str, Any], name: str, default: int, minimum: int, maximum: int
) -> int:
    """A whole-number extra (``20`` or ``"20"``; ``20.5`` is refused rather than cut)."""
    number = _extra_number(conn, extra, name, default, minimum, maximum)
    if number != int(number):
        raise NextLegInputError(
            f"connection {conn.conn_id!r} has {name}={extra.get(name)!r:.40}, not a whole number",
            advice=f"Fix the {name} extra of the connection, or remove it to use {default}.",
        )
    return int(number)
