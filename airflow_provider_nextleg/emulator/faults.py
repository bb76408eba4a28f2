"""Which request gets which injected failure, and what a failing proxy's answer looks like."""

from __future__ import annotations

import json
import random
from http import HTTPStatus

from airflow_provider_nextleg.emulator.settings import EmulatorSettings, Fault

_PROXY_PAGES = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class FaultInjector:
    """Picks the fault for a request: the first matching scripted fault, else a seeded random draw.

    It reads ``settings.faults`` on every request, so faults changed at run time apply at once, and it
    decrements a scripted fault's ``count`` in place, so the admin view shows how many are left.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self._settings = settings
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(f"faults-{self._settings.seed}")

    def pick(self, method: str, path: str, *, api: bool) -> Fault | None:
        """The fault for this request, if any; probabilities apply to API requests (``api``) only."""
        faults = self._settings.faults
        for fault in faults.scripted:
            if path.startswith(fault.path) and fault.method in (None, method.upper()):
                fault.count -= 1
                if fault.count == 0:
                    faults.scripted.remove(fault)
                return fault
        if not api:
            return None
        if faults.error_rate and self._rng.random() < faults.error_rate:
            return Fault(path, "status", status=self._rng.choice((500, 502, 503)))
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            return Fault(path, "drop")
        if faults.slow_rate and self._rng.random() < faults.slow_rate:
            return Fault(path, "slow", seconds=faults.slow_seconds)
        if faults.malformed_rate and self._rng.random() < faults.malformed_rate:
            return Fault(path, "malformed")
        return None


def fault_response(status: int, body: str | None) -> tuple[bytes, str]:
    """Body and content type of a ``status`` fault: a proxy's HTML page for 502/503/504 unless given.

    A given body is sent as JSON when it parses as JSON and as HTML otherwise.
    """
    if body is None:
        if status in _PROXY_PAGES:
            title = f"{status} {_PROXY_PAGES[status]}"
            body = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
                "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
        else:
            body = json.dumps({"success": False, "msg": HTTPStatus(status).phrase})
    try:
        json.loads(body)
    except ValueError:
        return body.encode(), "text/html"
    return body.encode(), "application/json"
