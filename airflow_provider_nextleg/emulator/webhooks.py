"""Delivery of finished jobs' results to webhooks, from one background task.

Job state is lazy, so nothing happens by itself when a job finishes. One task sleeps until the next job
with a webhook is due, POSTs the due results (one attempt each, no retries, like the real service), and
sleeps again; a new submission wakes it early in case its job finishes sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from airflow_provider_nextleg.emulator.account import Account
from airflow_provider_nextleg.emulator.clock import iso
from airflow_provider_nextleg.emulator.jobs import Job
from airflow_provider_nextleg.emulator.protocol import Wire

logger = logging.getLogger(__name__)


class WebhookDispatcher:
    """Posts results when due and keeps a record of every delivery for inspection."""

    def __init__(self, accounts: Callable[[], list[Account]], wire: Wire, timeout: float = 10.0) -> None:
        self.accounts = accounts
        self.wire = wire
        self.timeout = timeout
        self.deliveries: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Recompute the next due time (after a submission, a reset or a change of time scale)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due webhooks until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            while True:
                for job in (job for account in self.accounts() for job in account.due_webhooks()):
                    task = asyncio.create_task(self._deliver(client, job))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._next_in())

    def _next_in(self) -> float | None:
        """Real seconds until the next webhook of any account falls due, or None when none is pending."""
        due = [wait for account in self.accounts() if (wait := account.next_webhook_in()) is not None]
        return min(due, default=None)

    async def _deliver(self, client: httpx.AsyncClient, job: Job) -> None:
        url = job.origin.webhook
        assert url is not None
        record: dict[str, Any] = {
            "url": url,
            "messageId": job.id,
            "ref": job.origin.ref,
            "status": None,
            "error": None,
            "time": iso(datetime.now(timezone.utc)),
        }
        try:
            response = await client.post(url, json=self.wire.result(job, job.origin.base_url))
            record["status"] = response.status_code
            logger.info("Webhook for message %s delivered to %s: HTTP %s", job.id, url, response.status_code)
        except Exception as exc:  # whatever goes wrong (bad URL, refused, timeout) is this delivery's outcome
            record["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "Webhook for message %s to %s failed, not retried: %s", job.id, url, record["error"]
            )
        self.deliveries.append(record)
