"""What the emulator says on the wire: the NextLeg JSON of jobs and errors, and its URL scheme.

Everything a client parses is shaped here and nowhere else: the answer to a submission, the message states
of ``GET /v2/message``, the result object (which webhooks send too), the ``{"success": false, "msg"}``
error body, and the CDN's image URLs, which are built and parsed back by the one :class:`CdnFile`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow_provider_nextleg.emulator.clock import SimClock, iso
from airflow_provider_nextleg.emulator.jobs import Job, Phase

if TYPE_CHECKING:
    from airflow_provider_nextleg.emulator.settings import EmulatorSettings

ADMIN_PREFIX = "/_emulator"
CDN_PREFIX = "/cdn"
#: Paths whose last segment is an id: counters group them under the prefix.
_ID_PATHS = ("/v2/message/", f"{CDN_PREFIX}/")


def error_body(msg: str) -> dict[str, Any]:
    """The service's answer to a request it refuses, whatever the status."""
    return {"success": False, "msg": msg}


class ApiError(Exception):
    """A request the service refuses: an HTTP status and the service's JSON error body.

    :param status: the HTTP status (400 refused, 401 unauthorized, 404 unknown id, 429 rate-limited).
    :param msg: the ``msg`` of the body, which the ledger records too.
    :param headers: extra response headers, e.g. ``Retry-After``.
    """

    def __init__(self, status: int, msg: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.headers = dict(headers or {})

    @property
    def body(self) -> dict[str, Any]:
        return error_body(self.msg)


CdnKind = Literal["grid", "quadrant", "upscale", "progress"]
#: The file names of each kind; the group, where there is one, is the file's number.
_CDN_NAMES: dict[CdnKind, re.Pattern[str]] = {
    "grid": re.compile(r"grid\.png"),
    "upscale": re.compile(r"upscale\.png"),
    "quadrant": re.compile(r"0_([0-3])\.png"),
    "progress": re.compile(r"progress_(\d{1,2})\.png"),
}
_CDN_PATH = re.compile(rf"{re.escape(CDN_PREFIX)}/(?P<job>[^/]+)/(?P<name>[^/]+)")


@dataclass(frozen=True)
class CdnFile:
    """One image file of a job on the CDN, at ``/cdn/<job id>/<name>``.

    :param kind: ``grid`` (``grid.png``), ``quadrant`` (``0_<number>.png``, one image of a grid),
        ``upscale`` (``upscale.png``) or ``progress`` (``progress_<number>.png``, a preview at that percent).
    :param number: the quadrant (0 to 3) or the progress percent; 0 for the other kinds.
    """

    job_id: str
    kind: CdnKind
    number: int = 0

    @property
    def name(self) -> str:
        if self.kind == "quadrant":
            return f"0_{self.number}.png"
        if self.kind == "progress":
            return f"progress_{self.number}.png"
        return f"{self.kind}.png"

    def url(self, base_url: str) -> str:
        return f"{base_url}{CDN_PREFIX}/{self.job_id}/{self.name}"

    @classmethod
    def parse(cls, job_id: str, name: str) -> CdnFile | None:
        """The file a CDN path's two segments name, or None when the name is none of the CDN's."""
        for kind, pattern in _CDN_NAMES.items():
            match = pattern.fullmatch(name)
            if match:
                return cls(job_id, kind, int(match[1]) if pattern.groups else 0)
        return None

    @classmethod
    def from_url(cls, url: str) -> CdnFile | None:
        """The file an image URL of this CDN names, whatever host it was reached on (``POST /getImage``)."""
        match = _CDN_PATH.fullmatch(urlsplit(url).path)
        return cls.parse(match["job"], match["name"]) if match else None


def endpoint_key(method: str, path: str) -> str:
    """A counter key: the method and the path without ids (``GET /v2/message``, ``GET /cdn``)."""
    for prefix in _ID_PATHS:
        if path.startswith(prefix):
            return f"{method} {prefix.rstrip('/')}"
    return f"{method} {path}"


def is_api_path(path: str) -> bool:
    """Whether a path is the API proper (``/v2/...``, ``/getImage``), neither the admin API nor the CDN."""
    return not path.startswith((ADMIN_PREFIX, f"{CDN_PREFIX}/"))


class Wire:
    """The account's jobs in NextLeg JSON, timestamps on the simulated clock's wall time.

    :param settings: the live settings (``account_id``, the default ``expire_mins``).
    :param clock: the emulator's clock.
    """

    def __init__(self, settings: EmulatorSettings, clock: SimClock) -> None:
        self.settings = settings
        self.clock = clock

    def accepted(self, job: Job) -> dict[str, Any]:
        """The immediate answer to a submission the account took."""
        return {"success": True, "messageId": job.id, "createdAt": iso(self.clock.wall(job.created))}

    def message(self, job: Job, expire_mins: float | None, base_url: str) -> dict[str, Any]:
        """What ``GET /v2/message/<id>`` answers right now.

        A job waiting for a concurrency slot answers ``{"progress": 0, "progressImageUrl": null,
        "response": {"content": "JOB_QUEUED", "originatingMessageId": <id>}}``: our reading of the
        service's "reported as JOB_QUEUED", shaped so that a client looking only at ``progress`` keeps
        waiting. A running job answers ``{"progress": 31, "progressImageUrl": <url>}`` (progress 0 and a
        null URL before its first step), a finished one ``{"progress": 100, "response": {...}}``, and one
        with no result ``expireMins`` after its submission ``{"progress": "incomplete"}``, even if it
        finishes later.
        """
        now = self.clock.now()
        phase = job.phase(now, self.settings.expire_mins if expire_mins is None else expire_mins)
        if phase is Phase.INCOMPLETE:
            return {"progress": "incomplete"}
        if phase is Phase.DONE:
            return {"progress": 100, "response": self.result(job, base_url)}
        if phase is Phase.QUEUED:
            return {
                "progress": 0,
                "progressImageUrl": None,
                "response": {"content": "JOB_QUEUED", "originatingMessageId": job.id},
            }
        progress = job.progress(now)
        url = CdnFile(job.id, "progress", progress).url(base_url) if progress and job.image else None
        return {"progress": progress, "progressImageUrl": url}

    def result(self, job: Job, base_url: str) -> dict[str, Any]:
        """The finished job's result object: what ``response`` holds and what a webhook receives."""
        body: dict[str, Any] = {
            "accountId": self.settings.account_id,
            "createdAt": iso(self.clock.wall(job.finish - 0.3)),
            "responseAt": iso(self.clock.wall(job.finish)),
            "originatingMessageId": job.id,
            "buttons": [] if job.error else list(job.buttons),
            "type": job.type,
            "content": job.error or job.content,
            "description": "",
            "ref": job.origin.ref,
        }
        if job.error:
            return body
        if job.buttons:
            body["buttonMessageId"] = job.button_message_id
        if job.image is not None:
            if job.image.kind == "grid":
                body["imageUrl"] = CdnFile(job.id, "grid").url(base_url)
                body["imageUrls"] = [CdnFile(job.id, "quadrant", index).url(base_url) for index in range(4)]
            else:
                body["imageUrl"] = CdnFile(job.id, "upscale").url(base_url)
                body["imageUrls"] = [body["imageUrl"]]
        if job.show_seed:
            body["seed"] = job.seed
        return body
