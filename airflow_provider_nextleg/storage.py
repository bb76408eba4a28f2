"""Saving a finished NextLeg job's images as files, with a manifest, instead of CDN links that expire.

:func:`save_job_images` downloads a job's images (the grid, each image of the grid, or an upscale's
single image) into any Airflow ``ObjectStoragePath`` (``file://``, ``s3://``, ``gs://``, ... through the
matching provider) and writes a JSON :class:`Manifest` beside them, which says what each file is, where it
came from, its sha256, and which tasks made it. :func:`write_contact_sheet` turns manifests into an HTML
page a person can open. :class:`~airflow_provider_nextleg.operators.storage.SaveImagesOperator` is the
task around :func:`save_job_images`.

**Names are predictable** and never come from a URL: ``<message_id>_grid.png``, ``<message_id>_0.png``, ...
and the manifest ``<message_id>.json``, the message id reduced to safe characters.

**A reader never sees half a file.** Each file is streamed (never held whole in memory, except through
``POST /getImage``, whose hook method returns bytes) into a hidden temporary name in the same folder, hashed
as it goes, and renamed to its final name only once complete; on stores without a rename, fsspec's move
copies then deletes. A failed or oversized download deletes its temporary file.

**Running it twice leaves the same files**: a file whose size and sha256 match the earlier manifest is kept,
not downloaded again.

**The API token goes only to the API.** Images are downloaded from their own host with no credentials. When
that host refuses (HTTP 403, as the Midjourney CDN does), the image is fetched through ``POST /getImage`` on
the API's base URL, the documented way around it, with the hook that holds the token.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import posixpath
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import ObjectStoragePath

from airflow_provider_nextleg import validation
from airflow_provider_nextleg.exceptions import (
    NextLegError,
    NextLegInputError,
    read_result,
)
from airflow_provider_nextleg.hooks.images import CHUNK_SIZE, ImageDownloader
from airflow_provider_nextleg.models import JobResult, MessageStatus

if TYPE_CHECKING:
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest image saved; Midjourney's largest upscales are a few MB."""
DEFAULT_TIMEOUT = 60.0
"""Seconds a direct download may wait for the next bytes."""
MANIFEST_FORMAT = "nextleg-images/1"
"""The ``format`` field of every manifest; a reader refuses manifests of another format."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class SavedImage:
    """
    One saved file, as the manifest lists it.

    :param name: the file's name in the manifest's folder.
    :param role: ``grid`` (the 2x2 composite) or ``image`` (one picture: a grid's tile or an upscale).
    :param index: the image's position in the result's ``image_urls`` (``None`` for the grid).
    :param source_url: the URL it was downloaded from.
    :param fetched_via: ``direct`` (from its host) or ``getImage`` (through the API, after a 403).
    :param sha256: the hex digest of the file's bytes.
    :param size: its size in bytes.
    :param content_type: its media type, e.g. ``image/png``.
    """

    name: str
    role: str
    index: int | None
    source_url: str
    fetched_via: str
    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class Manifest:
    """
    What was saved for one job and where it came from: the JSON file ``<message_id>.json`` beside the images.

    :param path: where the manifest file is (not part of its JSON); its folder holds the images.
    :param message_id: the job's message id.
    :param type: the job's type (``imagine``, ``button``, ``blend``).
    :param prompt: the prompt, as the result's ``content`` reports it.
    :param button: the button pressed to make this job (``V1``, ``U2``...): the saving task's ``button``
        argument, else the one the result names (a ``ButtonOperator``'s result names its own).
    :param button_message_id: the handle for pressing this job's buttons.
    :param buttons: the buttons the job offers.
    :param seed: the job's seed, where the result carries it.
    :param ref: the job's ``ref`` as NextLeg echoed it, unparsed: for a job operator's job, the JSON object
        of :func:`~airflow_provider_nextleg.models.job_ref` (the submitting task, your own ``ref`` under
        ``"ref"``).
    :param submitted_by: the task instance whose try submitted the job (dag_id, run_id, task_id,
        map_index, try_number), as the result names it; ``None`` for a result that does not (one a
        ``MessageSensor`` waited for).
    :param saved_by: the task that saved the images, in the same shape.
    :param created_at: when the images were first saved (ISO 8601, UTC); a rerun keeps it.
    :param files: the saved images.
    """

    path: str
    message_id: str
    type: str | None
    prompt: str | None
    button: str | None
    button_message_id: str | None
    buttons: tuple[str, ...]
    seed: str | None
    ref: str | None
    submitted_by: dict[str, Any] | None
    saved_by: dict[str, Any] | None
    created_at: str
    files: tuple[SavedImage, ...]

    @property
    def folder(self) -> ObjectStoragePath:
        """The folder holding the manifest and its images."""
        return ObjectStoragePath(self.path).parent

    def file_path(self, image: SavedImage) -> ObjectStoragePath:
        """Where a saved image is."""
        return self.folder / image.name

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object (``path`` left out: the file's location says it)."""
        return {
            "format": MANIFEST_FORMAT,
            "message_id": self.message_id,
            "type": self.type,
            "prompt": self.prompt,
            "button": self.button,
            "button_message_id": self.button_message_id,
            "buttons": list(self.buttons),
            "seed": self.seed,
            "ref": self.ref,
            "submitted_by": self.submitted_by,
            "saved_by": self.saved_by,
            "created_at": self.created_at,
            "files": [asdict(image) for image in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> Manifest:
        """
        Read a manifest's JSON object; ``ValueError`` if it is not one this module writes.

        :param data: the decoded JSON.
        :param path: where it was read from.
        """
        if not isinstance(data, Mapping) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest")
        try:
            return cls(
                path=path,
                **{name: data[name] for name in _MANIFEST_SCALARS},
                buttons=tuple(data["buttons"]),
                files=tuple(SavedImage(**image) for image in data["files"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a valid manifest: {exc}") from None

    @classmethod
    def load(cls, path: str | ObjectStoragePath) -> Manifest:
        """
        Read a manifest file, e.g. the one an Asset event's ``extra["manifest"]`` names.

        :param path: the manifest's path or URI.
        """
        manifest_path = _as_path(path)
        return cls.from_dict(json.loads(manifest_path.read_bytes()), str(manifest_path))

    def verify(self) -> None:
        """
        Check that every listed file is there with its recorded size and sha256, to trust them before use.

        :raises NextLegError: naming the first file that is missing or differs.
        """
        for image in self.files:
            if not _unchanged(self.file_path(image), image):
                raise NextLegError(
                    f"{self.file_path(image)} is missing or differs from its manifest {self.path}",
                    message_id=self.message_id,
                    advice="Save the job's images again (rerun the saving task) before using them.",
                )


_MANIFEST_SCALARS = (
    "message_id",
    "type",
    "prompt",
    "button",
    "button_message_id",
    "seed",
    "ref",
    "submitted_by",
    "saved_by",
    "created_at",
)


def save_job_images(
    result: Mapping[str, Any],
    destination: str | ObjectStoragePath,
    hook: NextLegHook,
    *,
    button: str | None = None,
    saved_by: Mapping[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    max_attempts: int = 5,
    retry_wait: float = 1.0,
) -> Manifest:
    """
    Save a finished job's images and their manifest into ``destination``; files already saved are kept.

    :param result: the job's result: a job operator's output (``JobResult.to_xcom()``); it must be done
        and carry images.
    :param destination: the folder, as an ``ObjectStoragePath`` or its URI (``file:///data/nextleg/``,
        ``s3://my_conn@bucket/images/``); created if missing.
    :param hook: the NextLeg hook, used only for ``POST /getImage`` when an image host answers 403.
    :param button: the button pressed to make this job, for the manifest; by default the one the result
        names.
    :param saved_by: the saving task (dag_id, run_id, task_id, map_index, try_number), for the manifest.
    :param max_bytes: largest image accepted; a bigger one fails the step and leaves no file.
    :param timeout: seconds a direct download may wait for the next bytes.
    :param max_attempts: attempts per direct download, retried on 429, 5xx and broken connections.
    :param retry_wait: first pause between attempts in seconds; it doubles with each attempt.
    """
    job = _finished_result(result)
    stem = _safe_stem(job.message_id)
    planned = _planned_images(job, stem)
    downloader = ImageDownloader(
        hook, max_bytes=max_bytes, timeout=timeout, max_attempts=max_attempts, retry_wait=retry_wait
    )
    folder = _destination_folder(destination)
    manifest_path = folder / f"{stem}.json"
    earlier = _earlier_manifest(manifest_path)
    kept = {image.name: image for image in earlier.files} if earlier else {}
    files: list[SavedImage] = []
    reused = 0
    with downloader, _configuration_errors(folder):
        for role, index, url, name in planned:
            target = folder / name
            previous = kept.get(name)
            if previous is not None and _unchanged(target, previous):
                files.append(previous)
                reused += 1
                continue
            fetched = downloader.fetch(url, functools.partial(_write_atomically, target))
            sha256, size = fetched.written
            files.append(
                SavedImage(target.name, role, index, url, fetched.via, sha256, size, fetched.content_type)
            )
            log.info("Job %s: saved %s (%d of %d images)", job.message_id, target, len(files), len(planned))
    manifest = Manifest(
        path=str(manifest_path),
        message_id=job.message_id,
        type=job.type,
        prompt=job.content if isinstance(job.content, str) else None,
        button=button or job.button,
        button_message_id=job.button_message_id,
        buttons=job.buttons,
        seed=job.seed,
        ref=job.ref,
        submitted_by=dict(job.submitted_by) if job.submitted_by is not None else None,
        saved_by=dict(saved_by) if saved_by is not None else None,
        created_at=earlier.created_at if earlier else datetime.now(timezone.utc).isoformat(),
        files=tuple(files),
    )
    _write_atomically(manifest_path, [json.dumps(manifest.to_dict(), indent=2).encode()])
    log.info(
        "Job %s: %d images in %s (%d already there), manifest %s",
        job.message_id,
        len(files),
        folder,
        reused,
        manifest_path,
    )
    return manifest


def write_contact_sheet(
    manifests: Sequence[Manifest],
    destination: str | ObjectStoragePath,
    *,
    title: str = "NextLeg contact sheet",
) -> ObjectStoragePath:
    """
    Write an HTML page showing jobs in order (prompt, grid, variation, upscale...) with their saved images.

    Images in the same store are linked by relative path, so the page works wherever its folder is copied.

    :param manifests: the jobs, in the order to show them (e.g. imagine, then V1, then U1).
    :param destination: the page's path (ending in ``.html``) or the folder for ``contact_sheet.html``.
    :param title: the page's title.
    """
    page = _as_path(destination)
    if not page.name.endswith(".html"):
        page = page / "contact_sheet.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    steps = "\n<div class='arrow'>↓</div>\n".join(
        _contact_sheet_step(number, manifest, page) for number, manifest in enumerate(manifests, 1)
    )
    document = _CONTACT_SHEET.format(title=html.escape(title), steps=steps)
    _write_atomically(page, [document.encode()])
    log.info("Wrote a contact sheet of %d jobs to %s", len(manifests), page)
    return page


# --- the job's images ---------------------------------------------------------------------------------


def _as_path(path: str | ObjectStoragePath) -> ObjectStoragePath:
    return ObjectStoragePath(path) if isinstance(path, str) else path


def _destination_folder(destination: object) -> ObjectStoragePath:
    """The destination as a folder that exists (created if missing); a typed error when it cannot be one."""
    if not isinstance(destination, str | ObjectStoragePath) or not str(destination).strip():
        raise NextLegInputError(
            f"destination {destination!r:.120} is not a folder path or URI",
            advice="Pass destination as a URI such as file:///data/nextleg/ or s3://conn@bucket/path/.",
        )
    try:
        folder = _as_path(destination)
        with _configuration_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                raise FileExistsError(f"{folder} is not a folder")
    except NextLegInputError:
        raise
    except ValueError as exc:  # an unknown protocol (found when the path is made, or first used), a bad URI
        raise NextLegInputError(
            f"destination {str(destination)!r:.120} cannot be opened ({exc})",
            advice="Use a protocol Airflow's ObjectStoragePath knows (file://, s3://, gs://, ...), with "
            "its provider installed.",
        ) from None
    return folder


@contextlib.contextmanager
def _configuration_errors(folder: ObjectStoragePath) -> Iterator[None]:
    """
    Turn the storage errors that only a change of configuration mends (a file where the folder should be,
    no permission) into a typed, terminal error naming the folder; other errors (a full disk, a network
    store failing) pass as they are, for Airflow's retries.
    """
    try:
        yield
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise NextLegInputError(
            f"cannot write images into {folder} ({type(exc).__name__}: {exc})",
            advice="Point destination at a folder this worker may write (not a file), or fix its "
            "permissions.",
        ) from None


def _safe_stem(message_id: str) -> str:
    """
    The message id reduced to a file-name stem that cannot leave its folder (no ``/``, no leading dots).

    :param message_id: the job's message id (NextLeg's are alphanumeric; anything else is replaced).
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", message_id).strip("_")[:120]
    if not stem:
        raise NextLegInputError(
            f"message id {message_id!r:.120} leaves no usable file name",
            advice="Pass the result of a NextLeg job operator, whose message id names the files.",
        )
    return stem


def _finished_result(result: object) -> JobResult:
    """The result of a job that is done and has images; ``NextLegInputError`` otherwise."""
    job = read_result(result, name="result")
    if job.status is not MessageStatus.DONE or not (job.image_url or job.image_urls):
        raise NextLegInputError(
            f"job {job.message_id} is {job.status.value} with no images to save",
            message_id=job.message_id,
            advice="Save the output of an imagine, button or blend job that finished with images.",
        )
    return job


def _planned_images(job: JobResult, stem: str) -> list[tuple[str, int | None, str, str]]:
    """
    ``(role, index, url, name)`` of each image to save.

    ``image_url`` is the grid when it is not among ``image_urls``; a job with ``image_url`` alone (an
    upscale, in some responses) has that one image.
    """
    urls = list(job.image_urls)
    planned: list[tuple[str, int | None, str, str]] = []
    if job.image_url and job.image_url not in urls:
        if urls:
            planned.append(("grid", None, job.image_url, f"{stem}_grid"))
        else:
            urls = [job.image_url]
    planned += [("image", index, url, f"{stem}_{index}") for index, url in enumerate(urls)]
    return [
        (role, index, validation.check_url(url, name="image URL"), name + _suffix(url))
        for role, index, url, name in planned
    ]


def _suffix(url: str) -> str:
    """The file suffix: the URL's own if it is an image suffix, else ``.png`` (what Midjourney serves)."""
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower()
    return suffix if suffix in _IMAGE_SUFFIXES else ".png"


def _earlier_manifest(path: ObjectStoragePath) -> Manifest | None:
    """The manifest an earlier run wrote here, if it can be read."""
    try:
        return Manifest.load(path)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.warning("Ignoring the unreadable earlier manifest %s (%s): saving every image again", path, exc)
        return None


def _unchanged(path: ObjectStoragePath, image: SavedImage) -> bool:
    """Whether ``path`` holds exactly the bytes the manifest recorded (size first: it costs no read)."""
    try:
        if path.stat()["size"] != image.size:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return False
    return digest.hexdigest() == image.sha256


# --- writing -----------------------------------------------------------------------------------------


def _write_atomically(target: ObjectStoragePath, chunks: Iterable[bytes]) -> tuple[str, int]:
    """
    Write ``chunks`` to a temporary name beside ``target``, then rename it into place; ``(sha256, size)``.

    On any failure, the temporary file is removed and ``target`` is left as it was.
    """
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with temp.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        temp.rename(target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


# --- the contact sheet --------------------------------------------------------------------------------

_CONTACT_SHEET = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
section {{ border: 1px solid #ddd; border-radius: 8px; padding: 1rem; }}
.prompt {{ font-size: 1.1rem; font-style: italic; }}
.meta {{ color: #666; font-size: 0.85rem; }}
.images {{ display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: flex-start; }}
figure {{ margin: 0; }}
figure img {{ width: 12rem; display: block; border-radius: 4px; }}
figure.grid img, figure:only-child img {{ width: 24rem; }}
figcaption {{ color: #666; font-size: 0.75rem; }}
.arrow {{ text-align: center; font-size: 2rem; color: #999; }}
</style>
</head>
<body>
<h1>{title}</h1>
{steps}
</body>
</html>
"""


def _contact_sheet_step(number: int, manifest: Manifest, page: ObjectStoragePath) -> str:
    """One job's section: what made it, its prompt, its images."""
    made_by = manifest.button or manifest.type or "job"
    figures = "\n".join(
        f"<figure class='{image.role}'><a href='{_link(page, manifest.file_path(image))}'>"
        f"<img src='{_link(page, manifest.file_path(image))}' alt='{html.escape(image.name, quote=True)}'>"
        f"</a><figcaption>{html.escape(image.name)} · {image.size // 1024} KB · "
        f"sha256 {image.sha256[:12]}… · {image.fetched_via}</figcaption></figure>"
        for image in manifest.files
    )
    meta = [f"message {manifest.message_id}"]
    if manifest.seed:
        meta.append(f"seed {manifest.seed}")
    if manifest.buttons:
        meta.append("buttons " + ", ".join(manifest.buttons))
    meta.append(f"saved {manifest.created_at}")
    return (
        f"<section>\n<h2>{number}. {html.escape(made_by)}</h2>\n"
        f"<p class='prompt'>{html.escape(manifest.prompt or '(no prompt)')}</p>\n"
        f"<p class='meta'>{html.escape(' · '.join(meta))} · "
        f"<a href='{_link(page, ObjectStoragePath(manifest.path))}'>manifest</a></p>\n"
        f"<div class='images'>\n{figures}\n</div>\n</section>"
    )


def _link(page: ObjectStoragePath, target: ObjectStoragePath) -> str:
    """A link from ``page`` to ``target``: relative within one store, else ``target``'s full URI."""
    # samestore compares protocols as written: a bare local path ('') and a file:// URI are one store.
    local = (page.protocol or "file") == (target.protocol or "file") == "file"
    same_store = (local or page.samestore(target)) and page.bucket == target.bucket
    href = quote(posixpath.relpath(target.path, page.parent.path)) if same_store else str(target)
    return html.escape(href, quote=True)
