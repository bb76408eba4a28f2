"""The Midjourney accounts behind the API token: the one ``/v2`` uses, the load balancer's, pay-per-use's.

What is documented, and what is our reading:

- **Load balancer** (``/loadBalancer/<imagine|describe|button|message>``, the service's "Multi-Account
  Setup"): the answer to a submission adds ``loadBalanceId`` and ``accountId``, a button press sends
  ``loadBalanceId`` back, and a poll is ``/loadBalancer/message/<id>?loadBalanceId=`` [sdk: the
  ``TNLBalanced`` class of ``tnl-midjourney-api``]. Our reading: the token holds
  ``load_balancer_accounts`` accounts (the first is the one ``/v2`` uses), new jobs go to them in turn
  (round-robin), each with its own concurrency, queue, fast hours and modes; a ``loadBalanceId`` is one per
  submission and names the account that runs it, so a press or a poll reaches that account and no other
  (a ``buttonMessageId`` of another account there ends ``BUTTON_NOT_FOUND``, a message id of another
  account answers 404, as on ``/v2``). A missing or unknown ``loadBalanceId`` is refused with a 400 in
  the service's error shape: the service cannot route the request, and says so before anything is paid.
- **Pay-per-use** (``/ppu/<imagine|button|message>``, ``ppuId``): seen in a real client's code
  (``/ppu/imagine``, ``/ppu/message/<id>?ppuId=``); the rest mirrors the load balancer. Our reading: jobs
  run on the service's own account (``accountId`` ``nextleg-ppu``), each job that draws an image costs
  one of ``ppu_credits`` when submitted (errors and answers without an image cost nothing), and with no
  credit left a submission is refused with a 402 before any job exists.
- **Rate limit**: documented as one request every 3 seconds for the token, account-wide; we key it by the
  token alone, so the load balancer's accounts share one budget with ``/v2`` and pay-per-use (the
  documentation gives no other key, and the accounts are not the client's to tell apart).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from airflow_provider_nextleg.emulator.account import Account
from airflow_provider_nextleg.emulator.clock import SimClock
from airflow_provider_nextleg.emulator.images import ImageSpec
from airflow_provider_nextleg.emulator.jobs import Job, Route
from airflow_provider_nextleg.emulator.protocol import LOAD_BALANCE_ID, PPU_ID, ApiError, CdnFile
from airflow_provider_nextleg.emulator.settings import EmulatorSettings

#: How a submission reaches its account: ``direct`` (``/v2``, ``/api``), ``loadBalancer`` or ``ppu``.
POOLS = ("direct", "loadBalancer", "ppu")
PPU_ACCOUNT_ID = "nextleg-ppu"
#: A submission's call on the account it reaches: (account, payload, base URL, route) -> job.
Submit = Callable[[Account, dict[str, Any], str, Route | None], Job]

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_KEYS = {"loadBalancer": LOAD_BALANCE_ID, "ppu": PPU_ID}


class Accounts:
    """Every account of the token and the routes of the pools' submissions.

    :param settings: the live settings (``load_balancer_accounts``, ``ppu_credits``, ...).
    :param clock: the emulator's clock.
    """

    def __init__(self, settings: EmulatorSettings, clock: SimClock) -> None:
        self.settings = settings
        self.clock = clock
        self.direct = Account(settings, clock)
        self.balanced: list[Account] = [self.direct]
        self.ppu = Account(settings, clock, index=1000, account_id=PPU_ACCOUNT_ID)
        # Like message ids, route ids stay unique across resets.
        self._ids = random.Random(f"routes-{settings.seed}")
        self.reset()

    def all(self) -> list[Account]:
        return [*self.balanced, self.ppu]

    def reset(self) -> None:
        """Forget every job and route; refill the pay-per-use credits; fit the pool to the settings."""
        self._routes: dict[str, dict[str, Account]] = {key: {} for key in _KEYS.values()}
        for account in self.all():
            account.reset()
        self.resize()
        self._turn = 0
        self.credits = self.settings.ppu_credits

    def resize(self) -> None:
        """Fit the load balancer's pool to ``load_balancer_accounts``: new accounts are added empty, and
        the last ones dropped with their jobs (which then answer 404)."""
        wanted = self.settings.load_balancer_accounts
        del self.balanced[wanted:]
        for routes in self._routes.values():
            for route_id in [route for route, account in routes.items() if account not in self.all()]:
                del routes[route_id]
        self.balanced.extend(
            Account(self.settings, self.clock, index, f"{self.settings.account_id}-{index + 1}")
            for index in range(len(self.balanced), wanted)
        )

    def submit(
        self, pool: str, submit: Submit, payload: dict[str, Any], base_url: str, *, follow_up: bool
    ) -> Job:
        """Run a submission on the account its pool gives it, and book what it costs.

        :param pool: one of :data:`POOLS`.
        :param follow_up: a button press, which goes to the account of the id it sends back; a new job goes
            to the next account in turn.
        """
        if pool == "direct":
            return submit(self.direct, payload, base_url, None)
        key = _KEYS[pool]
        if pool == "ppu" and self.credits < 1:
            raise ApiError(
                402, "Out of pay-per-use credits: each job that draws an image costs one; add credits"
            )
        if follow_up:
            account = self.routed(pool, payload.get(key))
        elif pool == "ppu":
            account = self.ppu
        else:
            account = self.balanced[self._turn % len(self.balanced)]
            self._turn += 1
        route = Route(key, self._new_id())
        job = submit(account, payload, base_url, route)
        self._routes[key][route.id] = account
        if pool == "ppu" and job.steps:
            self.credits -= 1
        return job

    def routed(self, pool: str, route_id: object) -> Account:
        """The account a ``loadBalanceId`` or ``ppuId`` names; a missing or unknown one is a 400."""
        key = _KEYS[pool]
        account = self._routes[key].get(route_id) if isinstance(route_id, str) else None
        if account is None:
            given = f"got {str(route_id)[:40]!r}" if route_id not in (None, "") else "none was sent"
            raise ApiError(400, f"Invalid {key}: send the {key} the submission's answer carried ({given})")
        return account

    def image(self, file: CdnFile) -> ImageSpec | None:
        """The picture behind a CDN file, whichever account drew it, or None."""
        for account in self.all():
            spec = account.image(file)
            if spec is not None:
                return spec
        return None

    def jobs(self) -> list[Job]:
        """Every job of every account, in submission order."""
        return sorted((job for account in self.all() for job in account.jobs.values()), key=_order)

    def report(self) -> dict[str, Any]:
        """What ``GET /_emulator/accounts`` answers: the accounts of each pool and the credits left."""
        return {
            "direct": self.direct.account_id,
            "loadBalancer": [
                {"accountId": account.account_id, "jobs": len(account.jobs)} for account in self.balanced
            ],
            "ppu": {"accountId": self.ppu.account_id, "jobs": len(self.ppu.jobs), "credits": self.credits},
        }

    def _new_id(self) -> str:
        return "".join(self._ids.choices(_ID_ALPHABET, k=20))


def _order(job: Job) -> float:
    return job.created
