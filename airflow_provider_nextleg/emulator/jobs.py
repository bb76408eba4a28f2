"""One message of the account and its timeline, from which every later state is read.

A job's timeline (when it leaves the queue, when it finishes, how its progress steps fall) is fixed at
submission; nothing runs while it waits. Where the job stands, how far it has got and which pictures it
can show are computed from that timeline and the simulated time of the question, so thousands of jobs cost
a dict entry each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from airflow_provider_nextleg.emulator.images import PROGRESS_SIZE, QUADRANT_SIZE, ImageSpec

if TYPE_CHECKING:
    from airflow_provider_nextleg.emulator.protocol import CdnFile


@dataclass(frozen=True)
class Route:
    """How a job of a pool of accounts is found again: the id a submission's answer carries.

    :param key: ``loadBalanceId`` (the load balancer's, ``/loadBalancer/...``) or ``ppuId`` (pay-per-use,
        ``/ppu/...``); the answer, the result and the webhook carry it under this name, and a button press
        or a poll sends it back.
    :param id: the id, one per submission.
    """

    key: str
    id: str


@dataclass(frozen=True)
class Origin:
    """What every submission carries besides its own fields.

    :param ref: echoed in the result, any JSON value.
    :param webhook: where the result is POSTed when the job finishes, if anywhere.
    :param base_url: the base URL the client reached the emulator on; webhooks build image URLs from it.
    :param account_id: the Midjourney account that runs the job (the result's ``accountId``).
    :param route: the pool's id of the submission, for jobs submitted through a pool of accounts.
    """

    ref: Any
    webhook: str | None
    base_url: str
    account_id: str = ""
    route: Route | None = None


class Phase(Enum):
    """Where a job stands at a given moment, as a poll sees it."""

    QUEUED = "queued"
    """Waiting for a concurrency slot."""
    RUNNING = "running"
    """Out of the queue, not finished (a stalled job stays here until it turns incomplete)."""
    DONE = "done"
    """Finished: its result (or its error code) is visible."""
    INCOMPLETE = "incomplete"
    """No result within the poll's ``expireMins``."""


@dataclass
class Job:
    """One message of the account, with its timeline fixed at submission (simulated seconds).

    :param uuid: the Midjourney-like UUID its image URLs are named after (never its message id).
    :param steps: how many progress steps an image job shows; 0 for bot answers (errors, info,
        describe...), which show progress 0 until they appear.
    :param error: the error code the job ends with, if it fails.
    :param stalled: the job never finishes: it runs for its drawn duration, stays at its last progress
        step, sends no webhook, and turns incomplete after ``expireMins``.
    :param image: the picture it draws, if any; buttons on its result derive theirs from it.
    :param button_message_id: the handle its buttons are pressed on, when it has buttons.
    :param show_seed: its result carries ``seed`` (the ``✉️`` button's answer).
    :param pressed: upscale buttons already pressed on it, which refuse a second press.
    """

    id: str
    uuid: str
    type: str
    prompt: str
    content: Any
    seed: str
    origin: Origin
    created: float
    start: float
    finish: float
    steps: int = 0
    error: str | None = None
    stalled: bool = False
    image: ImageSpec | None = None
    buttons: tuple[str, ...] = ()
    button_message_id: str | None = None
    show_seed: bool = False
    pressed: set[str] = field(default_factory=set)

    def finished(self, now: float) -> bool:
        """Whether the result (or the error) is visible at ``now``."""
        return not self.stalled and now >= self.finish

    def succeeded(self, now: float) -> bool:
        return self.error is None and self.finished(now)

    def phase(self, now: float, expire_mins: float) -> Phase:
        """Where the job stands at ``now`` for a poll with this ``expireMins``.

        Incomplete is measured from submission and wins over a later finish: a job that finishes after
        its deadline is never seen done by that poll.
        """
        deadline = self.created + 60 * expire_mins
        if now >= deadline and (self.stalled or self.finish > deadline):
            return Phase.INCOMPLETE
        if self.finished(now):
            return Phase.DONE
        return Phase.QUEUED if now < self.start else Phase.RUNNING

    def progress(self, now: float) -> int:
        """The progress shown while running: 0, then steps like 31, 62, 93 or 31, 46, 62, 78, 93."""
        if not self.steps:
            return 0
        phase = min(self.steps, int((now - self.start) / (self.finish - self.start) * (self.steps + 1)))
        return 0 if phase == 0 else round(31 + 62 * (phase - 1) / (self.steps - 1))

    def picture(self, file: CdnFile, now: float) -> ImageSpec | None:
        """The picture behind one of the job's CDN files at ``now``, or None if it has no such picture (yet).

        Previews exist at any time (a client may hold an old progress URL); the finished pictures only once
        the job succeeded: a grid's whole picture and its four tiles, an upscale's picture.
        """
        if self.image is None:
            return None
        if file.kind == "preview":
            return replace(self.image, size=PROGRESS_SIZE, progress=file.number)
        if not self.succeeded(now):
            return None
        if file.kind == "image":
            return self.image
        if self.image.kind == "tile":
            return None
        return replace(
            self.image,
            kind="tile",
            index=file.number,
            size=QUADRANT_SIZE,
            label=f"{self.image.label} #{file.number + 1}",
        )
