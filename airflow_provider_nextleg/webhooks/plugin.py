"""The Airflow plugin that serves the webhook receiver in Airflow 3's API server, at ``/nextleg``.

Registered through the ``airflow.plugins`` entry point, so every API server that has the provider
installed serves ``POST /nextleg/webhook/<conn_id>/<job_key>?token=...``: a connection's ``webhook_url``
is then ``https://<the API server's public address>/nextleg``. Airflow applies no authentication to plugin
apps; the receiver checks each job's token itself (see :mod:`.receiver`). Airflow 3.3's access log records
the path, not the ``token`` query value, which it redacts; Airflow 3.1's API server logs through
uvicorn's access log, whose lines the receiver's app redacts itself (:class:`RedactTokens`) when it is built.

Other Airflow processes load plugins too; the app is built only when the API server asks for it.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/nextleg"


_TOKEN = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Replaces every ``token=<value>`` in a log record's message and arguments by ``token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TOKEN.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


@functools.cache
def _fastapi_apps() -> list[dict[str, Any]]:
    from airflow_provider_nextleg.webhooks.receiver import create_receiver_app

    logging.getLogger("uvicorn.access").addFilter(RedactTokens())  # the API server's own access log
    return [{"app": create_receiver_app(), "url_prefix": URL_PREFIX, "name": "NextLeg webhook receiver"}]


class _BuiltOnFirstUse:
    """A class attribute computed on first read (the plugin's ``fastapi_apps``)."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        return _fastapi_apps()


class NextLegWebhookPlugin(AirflowPlugin):
    """Serves the NextLeg webhook receiver at ``/nextleg`` in the API server."""

    name = "nextleg_webhooks"
    fastapi_apps = _BuiltOnFirstUse()  # type: ignore[assignment]
