"""A nextleg connection's webhook settings: where the receiver is, the secret that signs job tokens, and
the inbox that carries results from the receiver to the triggers.

Extras: ``webhook_url`` (the receiver's public base URL, e.g. ``https://airflow.example.com/nextleg``) and
``webhook_secret``. The inbox follows ``redis_conn_id``: with it, Redis (receiver and triggerers on
several hosts); without it, a directory of this host (see :mod:`.inbox`).

Three readers, one per kind of process, because Airflow reaches connections differently in each: workers
(through :class:`~airflow_provider_nextleg.hooks.connection.AccountSettings`, which reads it with the rest of
the connection), the triggerer (the same), and the receiver in the API
server or on its own (:func:`server_webhook_config`, Airflow's server-side lookup, metadata database
included). None of them puts the secret in a message or a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.webhooks import tokens

if TYPE_CHECKING:
    from airflow_provider_nextleg.redis_connection import RedisSettings
    from airflow_provider_nextleg.webhooks.inbox import Inbox

CONN_TYPE = "nextleg"


@dataclass(frozen=True)
class WebhookConfig:
    """
    The webhook side of one nextleg connection.

    :param conn_id: the connection's id, which the receiver's URL names.
    :param url: the receiver's base URL (``webhook_url``), normalised; ``None`` when not set.
    :param secret: the ``webhook_secret``; never shown by ``repr``.
    :param redis: the connection ``redis_conn_id`` names, which then holds the inbox.
    """

    conn_id: str
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    redis: RedisSettings | None = None

    @classmethod
    def from_connection(
        cls, conn_id: str, extra: Mapping[str, Any], redis: RedisSettings | None = None
    ) -> WebhookConfig:
        """
        Read and check the webhook extras.

        :param conn_id: the connection's id.
        :param extra: its extra, decoded.
        :param redis: the redis connection its ``redis_conn_id`` names, already read.
        :raises NextLegInputError: a bad ``webhook_url``, a ``webhook_secret`` shorter than 16 characters,
            or a ``webhook_url`` without a secret.
        """
        url = extra.get("webhook_url") or None
        secret = extra.get("webhook_secret") or None
        if url is not None:
            try:
                url = tokens.check_webhook_url(url)
            except ValueError as exc:
                raise NextLegInputError(
                    f"connection {conn_id!r}: {exc}",
                    advice="Set webhook_url to the receiver's public base URL, e.g. "
                    "https://airflow.example.com/nextleg, or remove it to poll.",
                ) from None
        if secret is not None and (not isinstance(secret, str) or len(secret) < tokens.MIN_SECRET_LENGTH):
            raise NextLegInputError(
                f"connection {conn_id!r} has a webhook_secret shorter than {tokens.MIN_SECRET_LENGTH} "
                "characters",
                advice="Use a long random secret, e.g. the output of "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
            )
        if url is not None and secret is None:
            raise NextLegInputError(
                f"connection {conn_id!r} has a webhook_url but no webhook_secret",
                advice="Set webhook_secret (the receiver refuses results without a token it can check), "
                "or remove webhook_url to poll.",
            )
        if (url or secret) and not tokens.is_webhook_conn_id(conn_id):
            raise NextLegInputError(
                f"connection id {conn_id[:60]!r} cannot be named in a webhook URL",
                advice="Use a connection id of letters, digits, '_', '.' and '-' for webhooks.",
            )
        return cls(conn_id=conn_id, url=url, secret=secret, redis=redis)

    @property
    def enabled(self) -> bool:
        """Whether jobs of this connection can complete by webhook (a URL and a secret)."""
        return self.url is not None and self.secret is not None

    @property
    def receives(self) -> bool:
        """Whether the receiver accepts results for this connection (it has a secret)."""
        return self.secret is not None

    def override_url(self, job_key: str) -> str:
        """The ``webhookOverride`` of a job (it holds the token: send it to NextLeg only)."""
        if self.url is None or self.secret is None:
            raise NextLegInputError(f"connection {self.conn_id!r} has no webhook_url and webhook_secret")
        return tokens.webhook_override_url(self.url, self.conn_id, job_key, self.secret)

    def verify(self, job_key: str, token: object) -> bool:
        """Whether ``token`` is the token of ``job_key`` on this connection."""
        return self.secret is not None and tokens.verify_token(self.secret, self.conn_id, job_key, token)

    def inbox(self) -> Inbox:
        """The inbox results of this connection go through (the process's one per place)."""
        from airflow_provider_nextleg.webhooks.inbox import inbox_for

        return inbox_for(self.redis)


def server_webhook_config(conn_id: str) -> WebhookConfig:
    """
    A nextleg connection's webhook settings as the receiver reads them: through Airflow's server-side
    lookup (environment, secrets backends, then the metadata database where one is configured), the
    redis connection too. Blocking: the receiver calls it in a worker thread.

    The task SDK's lookup leaves out the metadata database outside tasks and the scheduler, so it would
    miss connections made in the UI when the receiver runs in the API server.

    :param conn_id: the connection's id.
    :raises NextLegInputError: no such connection, not a nextleg connection, or bad extras.
    """
    from airflow.models.connection import Connection

    from airflow_provider_nextleg.redis_connection import _check_type, _redis_hook, _settings_of

    conn = _server_connection(Connection, conn_id)
    if conn.conn_type != CONN_TYPE:
        raise NextLegInputError(f"connection {conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}")
    extra = conn.extra_dejson
    redis = None
    redis_id = extra.get("redis_conn_id") or None
    if redis_id is not None:
        if not isinstance(redis_id, str):
            raise NextLegInputError(f"connection {conn_id!r} has a redis_conn_id that is no connection id")
        _redis_hook(redis_id)  # the redis extra is installed, or a clear error
        redis_conn = _server_connection(Connection, redis_id.strip())
        _check_type(redis_id, redis_conn)
        redis = _settings_of(redis_id.strip(), redis_conn, redis_conn.extra_dejson, 0.5)
    return WebhookConfig.from_connection(conn_id, extra, redis)


def _server_connection(model: Any, conn_id: str) -> Any:
    try:
        return model.get_connection_from_secrets(conn_id)
    except Exception as exc:
        if type(exc).__name__ == "AirflowNotFoundException":
            raise NextLegInputError(f"there is no Airflow connection {conn_id!r}") from None
        raise
