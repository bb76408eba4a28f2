"""Delivery of finished jobs' results to webhooks, from one background task.

Job state is lazy, so nothing happens by itself when a job finishes. One task sleeps until the next job
with a webhook is due, POSTs the due results (one attempt each, no retries, like the real service), and
sleeps again; a new submission wakes it early in case its job finishes sooner.

Faults (``FaultSettings.webhook_*``, drawn from the seed and the job's id): a webhook may be lost
(never sent), held back a random while (so it also arrives out of order), or sent twice. A receiver that
answers 5xx, or cannot be reached, gets no second attempt: the service documents no retries, and its
users report lost webhooks, so the emulator retries nothing either (our judgement). A delivery is logged
without its URL's query (where a receiver's token goes) and recorded whole for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
        """Send one job's webhook, with the faults drawn for it: from the seed and the job's id, so the
        same jobs meet the same faults in every run, whatever the order their webhooks fall due in."""
        faults = self.wire.settings.faults
        draws = random.Random(f"webhook-faults-{self.wire.settings.seed}-{job.id}")
        lost, held, hold, doubled = (draws.random() for _ in range(4))
        if lost < faults.webhook_loss_rate:
            logger.info("Webhook for message %s lost (injected fault): not sent", job.id)
            self.deliveries.append(self._record(job, fault="lost", error="lost (injected fault): not sent"))
            return
        delay = hold * faults.webhook_delay_seconds if held < faults.webhook_delay_rate else 0.0
        if delay:
            await asyncio.sleep(delay)
        copies = 2 if doubled < faults.webhook_duplicate_rate else 1
        for copy in range(copies):
            fault = "duplicate" if copy else ("delayed" if delay else None)
            await self._post(client, job, fault, delay)

    async def _post(self, client: httpx.AsyncClient, job: Job, fault: str | None, delay: float) -> None:
        url = job.origin.webhook
        assert url is not None
        record = self._record(job, fault=fault, delay=delay)
        where = _without_query(url)
        try:
            response = await client.post(url, json=self.wire.result(job, job.origin.base_url))
            record["status"] = response.status_code
            logger.info(
                "Webhook for message %s delivered to %s: HTTP %s", job.id, where, response.status_code
            )
        except Exception as exc:  # whatever goes wrong (bad URL, refused, timeout) is this delivery's outcome
            record["error"] = f"{type(exc).__name__}: {exc}".replace(url, where)
            logger.warning(
                "Webhook for message %s to %s failed, not retried: %s", job.id, where, record["error"]
            )
        self.deliveries.append(record)

    def _record(
        self, job: Job, *, fault: str | None = None, error: str | None = None, delay: float = 0.0
    ) -> dict[str, Any]:
        """A delivery's record; ``fault`` (``lost``, ``delayed`` with its ``delay``, ``duplicate`` for the
        second copy) only when one applied."""
        record: dict[str, Any] = {
            "url": job.origin.webhook,
            "messageId": job.id,
            "ref": job.origin.ref,
            "status": None,
            "error": error,
            "time": iso(datetime.now(timezone.utc)),
        }
        if fault is not None:
            record["fault"] = fault
        if delay:
            record["delay"] = round(delay, 3)
        return record


def _without_query(url: str) -> str:
    """A URL for the log: no query, no fragment, no credentials (a receiver's token goes there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return "<an invalid URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
