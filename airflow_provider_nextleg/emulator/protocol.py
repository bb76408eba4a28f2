"""What the emulator says on the wire: the NextLeg JSON of jobs and errors, and its URL scheme.

Everything a client parses is shaped here and nowhere else: the answer to a submission, the message states
of ``GET /v2/message``, the result object (which webhooks send too), the ``{"success": false, "msg"}``
error body, and the CDN's image URLs, which are built and parsed back by the one :class:`CdnFile`.
"""

from __future__ import annotations

import hashlib
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
#: The names under which a pool's submission id travels: the load balancer's, pay-per-use's.
LOAD_BALANCE_ID = "loadBalanceId"
PPU_ID = "ppuId"
#: Paths whose last segment is an id: counters group them under the prefix.
_ID_PATHS = ("/v2/message/", "/loadBalancer/message/", "/ppu/message/", f"{CDN_PREFIX}/")


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


CdnKind = Literal["image", "tile", "preview"]
#: The Discord channel the emulated bot posts its images to: one for all of them, like one account's.
DISCORD_CHANNEL = "1108565403527159838"
#: The user name a Midjourney attachment's file name starts with.
IMAGE_USER = "emulator"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: ``<prefix>/attachments/<channel>/<attachment>/<file>`` (``cdn.discordapp.com``) and
#: ``<prefix>/<job uuid>/0_<index>.png`` (``cdn.midjourney.com``); the prefix is optional when parsing, so
#: a URL of the real hosts names the same file.
_ATTACHMENT_PATH = re.compile(
    rf"(?:{re.escape(CDN_PREFIX)})?/attachments/(?P<channel>\d{{19}})/(?P<attachment>\d{{19}})/(?P<name>[^/]+)"
)
_TILE_PATH = re.compile(rf"(?:{re.escape(CDN_PREFIX)})?/(?P<uuid>{_UUID})/0_(?P<index>[0-3])\.png")
_IMAGE_NAME = re.compile(rf"(?:(?P<stem>[^/]*)_)?(?P<uuid>{_UUID})\.png")
_PREVIEW_NAME = re.compile(rf"(?P<uuid>{_UUID})_grid_0\.webp")
_SLUG_LENGTH = 60


@dataclass(frozen=True)
class CdnFile:
    """One image file of a job, at a URL shaped like the real ones and served by the emulator under ``/cdn``.

    The real service hands out three kinds of URL, each on its own host; the emulator serves all three
    under its own ``/cdn`` path, in their real shapes:

    - ``image``: the job's picture as the bot posted it to Discord (a grid, or an upscale),
      ``/cdn/attachments/<channel>/<attachment>/<user>_<prompt words>_<job uuid>.png``, like
      ``https://cdn.discordapp.com/attachments/...``: a result's ``imageUrl``;
    - ``tile``: one image of a grid on Midjourney's own CDN, ``/cdn/<job uuid>/0_<index>.png``, like
      ``https://cdn.midjourney.com/<uuid>/0_0.png``: a grid's ``imageUrls`` (an upscale's is its ``image``);
    - ``preview``: an unfinished job's preview,
      ``/cdn/attachments/<channel>/<attachment>/<job uuid>_grid_0.webp`` (a WebP, as in the documentation's
      logs), a new attachment at each progress step.

    The attachment ids are Discord-like 19-digit snowflakes derived from the file, so a URL that names no
    file of the emulator (another number, another channel) parses to ``None``.

    :param uuid: the job's Midjourney-like UUID (not its NextLeg message id, which never appears in a URL).
    :param kind: ``image``, ``tile`` or ``preview``.
    :param number: the tile's index (0 to 3) or the preview's percent (1 to 99); 0 for an image.
    :param stem: the ``<user>_<prompt words>`` an image's file name starts with (anything when parsed).
    """

    uuid: str
    kind: CdnKind
    number: int = 0
    stem: str = ""

    @classmethod
    def image(cls, uuid: str, prompt: str) -> CdnFile:
        """A job's picture, its file named after the prompt as Midjourney names its attachments."""
        words = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:_SLUG_LENGTH].rstrip("_")
        return cls(uuid, "image", stem=f"{IMAGE_USER}_{words}" if words else IMAGE_USER)

    @property
    def path(self) -> str:
        if self.kind == "tile":
            return f"{CDN_PREFIX}/{self.uuid}/0_{self.number}.png"
        name = f"{self.uuid}_grid_0.webp" if self.kind == "preview" else f"{self.stem}_{self.uuid}.png"
        return f"{CDN_PREFIX}/attachments/{DISCORD_CHANNEL}/{self._attachment}/{name}"

    @property
    def media_type(self) -> str:
        return "image/webp" if self.kind == "preview" else "image/png"

    def url(self, base_url: str) -> str:
        return f"{base_url}{self.path}"

    @classmethod
    def from_path(cls, path: str) -> CdnFile | None:
        """The file a URL path names (with or without the ``/cdn`` prefix), or None if it names none."""
        tile = _TILE_PATH.fullmatch(path)
        if tile:
            return cls(tile["uuid"], "tile", int(tile["index"]))
        attached = _ATTACHMENT_PATH.fullmatch(path)
        if attached is None or attached["channel"] != DISCORD_CHANNEL:
            return None
        file: CdnFile | None = None
        image, preview = _IMAGE_NAME.fullmatch(attached["name"]), _PREVIEW_NAME.fullmatch(attached["name"])
        if image:
            file = cls(image["uuid"], "image", stem=image["stem"] or "")
        elif preview:
            # The percent is not in the name: find the step whose attachment this is.
            file = next(
                (
                    candidate
                    for candidate in (cls(preview["uuid"], "preview", step) for step in range(1, 100))
                    if candidate._attachment == attached["attachment"]
                ),
                None,
            )
        return file if file is not None and file._attachment == attached["attachment"] else None

    @classmethod
    def from_url(cls, url: str) -> CdnFile | None:
        """The file an image URL names, whatever host it was reached on (``POST /getImage``)."""
        try:
            return cls.from_path(urlsplit(url).path)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return None

    @property
    def _attachment(self) -> str:
        """A 19-digit Discord-like snowflake for the file (the same for every image of a job)."""
        key = f"{self.uuid}:{self.number}" if self.kind == "preview" else self.uuid
        digest = hashlib.sha256(key.encode()).digest()
        return str(10**18 + int.from_bytes(digest[:8], "big") % (9 * 10**18))


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

    :param settings: the live settings (the default ``expire_mins``).
    :param clock: the emulator's clock.
    """

    def __init__(self, settings: EmulatorSettings, clock: SimClock) -> None:
        self.settings = settings
        self.clock = clock

    def accepted(self, job: Job) -> dict[str, Any]:
        """The immediate answer to a submission the account took.

        Through the load balancer it adds ``loadBalanceId`` and ``accountId`` (the SDK's ``MessageLB``);
        through pay-per-use it adds ``ppuId``.
        """
        body: dict[str, Any] = {
            "success": True,
            "messageId": job.id,
            "createdAt": iso(self.clock.wall(job.created)),
        }
        route = job.origin.route
        if route is not None:
            body[route.key] = route.id
            if route.key == LOAD_BALANCE_ID:
                body["accountId"] = job.origin.account_id
        return body

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
        url = CdnFile(job.uuid, "preview", progress).url(base_url) if progress and job.image else None
        return {"progress": progress, "progressImageUrl": url}

    def result(self, job: Job, base_url: str) -> dict[str, Any]:
        """The finished job's result object: what ``response`` holds and what a webhook receives.

        A job of a pool carries its ``loadBalanceId`` or ``ppuId``, so the next button press can send it.
        """
        body: dict[str, Any] = {
            "accountId": job.origin.account_id,
            "createdAt": iso(self.clock.wall(job.finish - 0.3)),
            "responseAt": iso(self.clock.wall(job.finish)),
            "originatingMessageId": job.id,
            "buttons": [] if job.error else list(job.buttons),
            "type": job.type,
            "content": job.error or job.content,
            "description": "",
            "ref": job.origin.ref,
        }
        if job.origin.route is not None:
            body[job.origin.route.key] = job.origin.route.id
        if job.error:
            return body
        if job.buttons:
            body["buttonMessageId"] = job.button_message_id
        if job.image is not None:
            body["imageUrl"] = CdnFile.image(job.uuid, job.prompt).url(base_url)
            if job.image.kind == "grid":
                body["imageUrls"] = [CdnFile(job.uuid, "tile", index).url(base_url) for index in range(4)]
            else:  # an upscale: its one picture (our reading; the documentation shows grids only)
                body["imageUrls"] = [body["imageUrl"]]
        if job.show_seed:
            body["seed"] = job.seed
        return body
