"""A client of the emulator's ``/_emulator/`` admin API, for tests that inspect or steer a running emulator.

It works the same against an in-process :class:`~airflow_provider_nextleg.emulator.server.EmulatorServer`
and against one started with the ``nextleg-emulator`` command, because it only speaks HTTP.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any, Literal

import httpx

from airflow_provider_nextleg.emulator.settings import DEFAULT_ADMIN_TOKEN, Fault, FaultSettings

#: Endpoints whose accepted submissions start a job the account pays for (``/api`` only with the ``cmd``
#: of one of them, or a button press).
PAID_ENDPOINTS = (
    "/v2/imagine",
    "/v2/button",
    "/v2/blend",
    "/v2/describe",
    "/loadBalancer/imagine",
    "/loadBalancer/button",
    "/loadBalancer/describe",
    "/ppu/imagine",
    "/ppu/button",
    "/api",
)
_PAID_V1_COMMANDS = ("imagine", "describe", None, "")


class EmulatorAdmin:
    """Inspect and steer a running emulator.

    :param base_url: the emulator's base URL, e.g. ``http://127.0.0.1:8765`` (no ``/v2``).
    :param admin_token: its admin token (not the API token).
    """

    def __init__(self, base_url: str, admin_token: str = DEFAULT_ADMIN_TOKEN) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=f"{self.base_url}/_emulator",
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10.0,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def ledger(self) -> list[dict[str, Any]]:
        """Every submission: ``endpoint``, ``method``, ``payload`` (no token), ``ref``, ``time``, ``status``,
        and ``messageId`` when accepted or ``error`` when refused (400, 429)."""
        return self._call("GET", "/ledger")

    def counters(self) -> dict[str, dict[str, int]]:
        """Requests per endpoint (``"GET /v2/message"``) under ``requests``, ``unauthorized``,
        ``rate_limited``, ``faults`` and ``forbidden`` (CDN downloads answered 403)."""
        return self._call("GET", "/counters")

    def accounts(self) -> dict[str, Any]:
        """The token's accounts: ``direct`` (its ``accountId``), ``loadBalancer`` (``accountId`` and
        ``jobs`` of each) and ``ppu`` (``accountId``, ``jobs`` and the ``credits`` left)."""
        return self._call("GET", "/accounts")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of every account in submission order: ``messageId``, ``accountId``, ``type``,
        ``error``, ``stalled``, and its timeline as UNIX times, ``created``, ``started`` (out of the queue)
        and ``finished`` (result visible)."""
        return self._call("GET", "/jobs")

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook delivery: ``url``, ``messageId``, ``ref``, ``status`` or ``error``, ``time``; and
        ``fault`` (``lost``, ``delayed`` with its ``delay`` in seconds, ``duplicate``) when one applied."""
        return self._call("GET", "/webhooks")

    def faults(self) -> dict[str, Any]:
        """The current fault settings, with the scripted faults still pending and their remaining counts."""
        return self._call("GET", "/faults")

    def set_faults(self, faults: FaultSettings) -> None:
        """Replace every fault setting, scripted faults included."""
        self._call("PUT", "/faults", dataclasses.asdict(faults))

    def add_fault(self, fault: Fault) -> None:
        """Queue one scripted fault after those already pending."""
        self._call("POST", "/faults", dataclasses.asdict(fault))

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at run time (``configure(rate_limit=True, concurrency=1)``); return them all,
        tokens left out. With no argument, just return the current settings."""
        body = {name: _plain(value) for name, value in changes.items()}
        return self._call("PATCH", "/settings", body) if body else self._call("GET", "/settings")

    def reset(self) -> None:
        """Clear jobs, ledger, counters, webhook records, faults and the rate-limit window."""
        self._call("POST", "/reset")

    def duplicate_submissions(self, by: Literal["payload", "ref"] = "payload") -> list[list[dict[str, Any]]]:
        """Jobs paid for more than once, as groups of ledger entries; see :func:`duplicate_submissions`."""
        return duplicate_submissions(self.ledger(), by)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


def duplicate_submissions(
    ledger: list[dict[str, Any]], by: Literal["payload", "ref"] = "payload"
) -> list[list[dict[str, Any]]]:
    """Groups of accepted, paid submissions that asked for the same job: "was any job paid for twice?".

    :param ledger: entries as returned by :meth:`EmulatorAdmin.ledger`.
    :param by: ``payload`` groups by endpoint and payload without ``ref`` and ``webhookOverride`` (a retry
        that changes only those still pays twice); ``ref`` groups by endpoint and non-empty ``ref``.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in ledger:
        if entry["messageId"] is None or entry["endpoint"] not in PAID_ENDPOINTS:
            continue
        if entry["endpoint"] == "/api" and entry["payload"].get("cmd") not in _PAID_V1_COMMANDS:
            continue
        if by == "ref":
            if entry["ref"] in (None, ""):
                continue
            what: Any = entry["ref"]
        else:
            what = {
                key: value for key, value in entry["payload"].items() if key not in ("ref", "webhookOverride")
            }
        groups[json.dumps([entry["endpoint"], what], sort_keys=True)].append(entry)
    return [group for group in groups.values() if len(group) > 1]


def _plain(value: Any) -> Any:
    return (
        dataclasses.asdict(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
    )
