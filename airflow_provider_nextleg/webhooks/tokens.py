"""A job's webhook identity: its key, its token, and the receiver's URL that carries both.

The operator makes a random **job key** when it submits a job and sends ``webhookOverride`` =
:func:`webhook_override_url`: the receiver's path names the connection and the job key, and the query
carries the **token**, an HMAC-SHA256 of the connection id and the job key with the connection's
``webhook_secret``. The receiver recomputes it (:func:`verify_token`), so it needs no state to know that a
POST is for a job the provider submitted, and a token is good for its own job only.

The token travels in the query (``?token=``), not the path, because Airflow's API server logs every
request's path and redacts the values of query parameters named like secrets (``token`` is one). The job
key is no secret: it may be logged and kept in trigger kwargs and XComs; the token and the secret never.

Standard library only, so any layer can import it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from urllib.parse import quote, urlsplit

WEBHOOK_PATH = "/webhook/{conn_id}/{job_key}"
"""The receiver's route, under the base URL it is served at (the connection's ``webhook_url``)."""
TOKEN_PARAM = "token"
"""The query parameter that carries the token."""
REF_JOB_FIELD = "job"
"""The field of the request's JSON ``ref`` that names the job key; the receiver refuses a ref without it."""
MIN_SECRET_LENGTH = 16
"""The shortest ``webhook_secret`` accepted: anything shorter can be guessed offline from one token."""

_JOB_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_DOMAIN = b"airflow-provider-nextleg webhook v1"


def new_job_key() -> str:
    """A fresh job key: 144 random bits, URL-safe (24 characters)."""
    return secrets.token_urlsafe(18)


def is_job_key(value: object) -> bool:
    """Whether ``value`` has the shape of a job key (16 to 64 URL-safe characters)."""
    return isinstance(value, str) and _JOB_KEY.fullmatch(value) is not None


def is_webhook_conn_id(value: object) -> bool:
    """Whether a connection id can be named in a webhook URL (letters, digits, ``_``, ``.``, ``-``)."""
    return isinstance(value, str) and _CONN_ID.fullmatch(value) is not None


def job_token(secret: str, conn_id: str, job_key: str) -> str:
    """
    The token of one job: HMAC-SHA256 of the connection id and the job key, base64url (43 characters).

    :param secret: the connection's ``webhook_secret``.
    :param conn_id: the nextleg connection the job was submitted with.
    :param job_key: the job's key (:func:`new_job_key`).
    """
    message = b"\n".join((_DOMAIN, conn_id.encode(), job_key.encode()))
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return _b64url(digest)


def verify_token(secret: str, conn_id: str, job_key: str, token: object) -> bool:
    """Whether ``token`` is the token of ``job_key`` at ``conn_id`` (compared in constant time)."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        return False
    return hmac.compare_digest(token.encode(), job_token(secret, conn_id, job_key).encode())


def check_webhook_url(url: str) -> str:
    """
    The receiver's base URL, normalised (no trailing ``/``); ``ValueError`` naming what is wrong.

    :param url: an ``http://`` or ``https://`` URL with a host and no query or fragment, e.g.
        ``https://airflow.example.com/nextleg`` (the API server's plugin) or ``https://hooks.example.com``
        (the standalone receiver at its root).
    """
    if not isinstance(url, str):
        raise ValueError(f"webhook_url should be a string, got {type(url).__name__}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"webhook_url should be an http:// or https:// URL with a host, got {text[:80]!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("webhook_url should have no query, fragment or credentials: the token goes there")
    return text.rstrip("/")


def webhook_override_url(base_url: str, conn_id: str, job_key: str, secret: str) -> str:
    """
    The ``webhookOverride`` of one job: ``<base_url>/webhook/<conn_id>/<job_key>?token=<token>``.

    The returned URL holds the token: send it to NextLeg and nowhere else (no log, XCom or trigger kwarg).

    :param base_url: the connection's ``webhook_url``, the receiver's public base URL.
    :param conn_id: the nextleg connection whose ``webhook_secret`` signs the token.
    :param job_key: the job's key.
    :param secret: the connection's ``webhook_secret``.
    :raises ValueError: a bad base URL, connection id, job key or a secret shorter than 16 characters
        (the message holds none of the secret).
    """
    base = check_webhook_url(base_url)
    if not is_webhook_conn_id(conn_id):
        raise ValueError(
            f"connection id {conn_id[:60]!r} cannot be named in a webhook URL: use letters, digits, _ . -"
        )
    if not is_job_key(job_key):
        raise ValueError("a job key has 16 to 64 URL-safe characters (new_job_key() makes one)")
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"webhook_secret should have at least {MIN_SECRET_LENGTH} characters")
    path = WEBHOOK_PATH.format(conn_id=quote(conn_id, safe=""), job_key=job_key)
    return f"{base}{path}?{TOKEN_PARAM}={job_token(secret, conn_id, job_key)}"


def ref_job_key(ref: object) -> str | None:
    """
    The job key a result's ``ref`` names: the ``"job"`` field of the JSON object the operator sent.

    :param ref: the result's ``ref``: a JSON string (as NextLeg echoes it) or an already decoded object.
    :returns: the job key, or ``None`` when the ref is not a JSON object with a job key in it.
    """
    if isinstance(ref, str):
        try:
            ref = json.loads(ref)
        except ValueError:
            return None
    if not isinstance(ref, dict):
        return None
    value = ref.get(REF_JOB_FIELD)
    return value if is_job_key(value) else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
