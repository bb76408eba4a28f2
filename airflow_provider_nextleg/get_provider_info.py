"""What Airflow learns about this provider through the ``apache_airflow_provider`` entry point.

Airflow calls :func:`get_provider_info` while it discovers providers, before it imports any hook, so
this module imports nothing from Airflow and nothing heavy. The connection form is described here once
(:data:`CONNECTION_FIELDS`, :data:`UI_FIELD_BEHAVIOUR`): Airflow 3.2+ reads it from the provider info,
and :class:`~airflow_provider_nextleg.hooks.nextleg.NextLegHook` builds the older hook-method form
(``get_connection_form_widgets`` / ``get_ui_field_behaviour``, all Airflow 3.1 reads) from the same dicts.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_nextleg import __version__

DEFAULT_BASE_URL = "https://api.thenextleg.io"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RATE_LIMIT_INTERVAL = 3.0
DEFAULT_EXPIRE_MINS = 12
MODES = ("direct", "load_balancer", "pay_per_use")
"""How jobs reach Midjourney: one account (``/v2``), the load balancer, or pay-per-use credits."""
DEFAULT_MODE = "direct"
#: The service's own documentation (the ``integrations`` block's ``external-doc-url``).
NEXTLEG_DOCS_URL = "https://www.thenextleg.io/docs"

# The connection's extra fields, in the ``conn-fields`` format of Airflow's provider.yaml schema.
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": (
            "How long one HTTP request may wait for an answer (the read timeout); connecting gives up "
            f"after at most 10 seconds. Default {DEFAULT_TIMEOUT:g}."
        ),
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": DEFAULT_TIMEOUT},
    },
    "rate_limit_interval": {
        "label": "Seconds between requests",
        "description": (
            "The account's rate limit: every process keeps its calls for this token at least this far "
            f"apart. NextLeg allows one request every 3 seconds. Default {DEFAULT_RATE_LIMIT_INTERVAL:g}."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "default": DEFAULT_RATE_LIMIT_INTERVAL},
    },
    "expire_mins": {
        "label": "Message expiry (minutes)",
        "description": (
            "expireMins sent when polling a message: after this many minutes an unfinished job is "
            f"reported incomplete. Default {DEFAULT_EXPIRE_MINS}, the service's own default."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 1, "default": DEFAULT_EXPIRE_MINS},
    },
    "mode": {
        "label": "Mode",
        "description": (
            "direct: one Midjourney account (/v2); load_balancer: the service's Multi-Account Setup "
            "(/loadBalancer, jobs spread over the accounts behind the token); pay_per_use: /ppu credits."
        ),
        "schema": {"type": ["string", "null"], "enum": list(MODES), "default": DEFAULT_MODE},
    },
    "redis_conn_id": {
        "label": "Redis connection (several hosts)",
        "description": (
            "The id of a redis connection that holds this account's request budget for every host "
            "(Celery workers, Kubernetes pods, several triggerers): needs the provider's redis extra. "
            "Empty: each host keeps its own budget."
        ),
        "schema": {"type": ["string", "null"], "default": None},
    },
    "webhook_url": {
        "label": "Webhook receiver URL",
        "description": (
            "The public base URL of the provider's webhook receiver, which NextLeg must reach: "
            "https://<API server>/nextleg (served by Airflow's API server), or the address of a "
            "standalone nextleg-webhook-receiver. Set: jobs complete by webhook (one request per job), "
            "with a rare reconciliation poll. Empty: jobs are polled."
        ),
        "schema": {"type": ["string", "null"], "default": None},
    },
    "webhook_secret": {
        "label": "Webhook secret",
        "description": (
            "Signs each job's webhook token (at least 16 characters, e.g. secrets.token_urlsafe(32)); "
            "the receiver accepts a result only with its job's token. Required with a webhook URL."
        ),
        "schema": {"type": ["string", "null"], "format": "password", "default": None},
    },
}

# How the standard connection fields are shown, in the ``ui-field-behaviour`` format.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login"],
    "relabeling": {"host": "Base URL", "password": "API token", "schema": "Scheme"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "the NextLeg API token (sent as Authorization: Bearer)",
        "schema": "https (only when the base URL has no scheme)",
        "port": "only when the base URL has no port",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow: package, connection type and the modules it brings."""
    return {
        "package-name": "airflow-provider-nextleg",
        "name": "NextLeg",
        "description": "Submit and follow Midjourney image jobs through the NextLeg v2 API.",
        "versions": [__version__],
        # Airflow sets the provider's documentation-url itself, from the package's "Documentation"
        # Project-URL in pyproject.toml (3.3.2 does; 3.1 shows none), whatever this dict says.
        "integrations": [
            {
                "integration-name": "NextLeg",
                "external-doc-url": NEXTLEG_DOCS_URL,
                "tags": ["service"],  # one tag, of the list Airflow 3.1's provider schema knows
            }
        ],
        "connection-types": [
            {
                "connection-type": "nextleg",
                "hook-class-name": "airflow_provider_nextleg.hooks.nextleg.NextLegHook",
                "hook-name": "NextLeg",
                "conn-fields": CONNECTION_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "hooks": [
            {
                "integration-name": "NextLeg",
                "python-modules": ["airflow_provider_nextleg.hooks.nextleg"],
            }
        ],
        "operators": [
            {
                "integration-name": "NextLeg",
                "python-modules": [
                    "airflow_provider_nextleg.operators.nextleg",
                    "airflow_provider_nextleg.operators.storage",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "NextLeg", "python-modules": ["airflow_provider_nextleg.sensors.nextleg"]}
        ],
        "triggers": [
            {"integration-name": "NextLeg", "python-modules": ["airflow_provider_nextleg.triggers.nextleg"]}
        ],
        "extra-links": [
            "airflow_provider_nextleg.operators.links.NextLegImageLink",
            "airflow_provider_nextleg.operators.links.SavedImagesLink",
        ],
    }
