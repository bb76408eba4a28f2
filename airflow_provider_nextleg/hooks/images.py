"""Downloading result images: from their own host without credentials, through the API after a 403.

Image URLs point at a CDN, not at the API, so the token must never go there: :class:`ImageDownloader`
fetches them on a ``requests.Session`` of its own that carries no credentials, with the same retry
policy and the same mapping of HTTP statuses to errors as the API calls
(:mod:`airflow_provider_nextleg.hooks.transport`), ``Retry-After`` honoured. When the host refuses (HTTP
403, as the Midjourney CDN does for servers), the image comes through ``POST /getImage`` on the API's
base URL, the documented way around it, with the hook that holds the token.

Whatever path the bytes take, they are checked to be an image (by their first bytes, not only by the
headers) and within ``max_bytes`` before they are accepted; redirects are followed only to http(s) URLs
and never in a loop.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import Retrying

from airflow_provider_nextleg.exceptions import (
    NextLegBadRequestError,
    NextLegConnectionError,
    NextLegInputError,
    NextLegMalformedResponseError,
)
from airflow_provider_nextleg.hooks.transport import CONNECT_TIMEOUT, retry_policy, status_error

if TYPE_CHECKING:
    from airflow_provider_nextleg.hooks.nextleg import NextLegHook

log = logging.getLogger(__name__)

W = TypeVar("W")

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
"""Most redirects followed for one image."""

# Magic numbers of the formats Midjourney serves.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def image_type(head: bytes) -> str | None:
    """
    The media type the first bytes of a file show (PNG, JPEG, GIF, WebP), or ``None`` if no image.

    :param head: at least the first 12 bytes.
    """
    found = next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)
    if found is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found = "image/webp"
    return found


@dataclass(frozen=True)
class FetchedImage(Generic[W]):
    """
    An image that was fetched and handed to its writer.

    :param written: what the writer returned.
    :param content_type: the media type its bytes show.
    :param via: ``direct`` (from its host) or ``getImage`` (through the API, after a 403).
    """

    written: W
    content_type: str
    via: str


class ImageDownloader:
    """
    Fetches images, each streamed to a writer, within a size limit; a context manager holding one session.

    The arguments are checked when it is built, the session opened when it is entered.

    :param hook: the NextLeg hook, used only for ``POST /getImage`` when an image host answers 403.
    :param max_bytes: largest image accepted.
    :param timeout: seconds a download may wait for the next bytes.
    :param max_attempts: attempts per image, retried on 429 (after its ``Retry-After``), 5xx and broken
        connections.
    :param retry_wait: first pause between attempts in seconds; it doubles with each attempt.
    """

    def __init__(
        self, hook: NextLegHook, *, max_bytes: int, timeout: float, max_attempts: int, retry_wait: float
    ) -> None:
        numbers = (max_bytes, timeout, max_attempts, retry_wait)
        numeric = all(isinstance(number, int | float) and not isinstance(number, bool) for number in numbers)
        if not numeric or not (
            max_bytes >= 1 and 0 < timeout <= 3600 and max_attempts >= 1 and 0 <= retry_wait <= 60
        ):
            raise NextLegInputError(
                f"max_bytes={max_bytes!r}, timeout={timeout!r}, max_attempts={max_attempts!r} and "
                f"retry_wait={retry_wait!r} cannot work",
                advice="Pass a positive max_bytes, a timeout of up to 3600 s, max_attempts of at least 1 "
                "and a retry_wait from 0 to 60 s.",
            )
        self.hook = hook
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_wait = retry_wait
        self._session: requests.Session | None = None

    def __enter__(self) -> ImageDownloader:
        self._session = requests.Session()  # no credentials: image hosts are not the API
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def fetch(self, url: str, write: Callable[[Iterable[bytes]], W]) -> FetchedImage[W]:
        """
        Fetch one image and stream its bytes to ``write``; a 403 from its host goes through ``/getImage``.

        ``write`` receives an iterator of chunks that raises before yielding anything that is not an image
        or goes past ``max_bytes``; an attempt that fails is retried with a fresh iterator.

        :param url: the image's http(s) URL.
        :param write: consumes the chunks (e.g. writes a file) and returns what the caller needs.
        """
        fetched = Retrying(**retry_policy(self.max_attempts, self.retry_wait, log))(self._direct, url, write)
        if fetched is not None:
            return fetched
        log.info("%s answered 403: fetching it through NextLeg's POST /getImage", url)
        data = self.hook.get_image(url)
        chunks = (data[start : start + CHUNK_SIZE] for start in range(0, len(data), CHUNK_SIZE))
        checked, content_type = self._checked(chunks, url, endpoint="POST /getImage")
        return FetchedImage(write(checked), content_type, "getImage")

    def _direct(self, url: str, write: Callable[[Iterable[bytes]], W]) -> FetchedImage[W] | None:
        """One attempt at the image's own host; ``None`` when it answers 403."""
        assert self._session is not None, "use the downloader as a context manager"
        where: dict[str, Any] = {"endpoint": f"GET {url}"}
        try:
            response = self._follow(url)
            with response:
                status = response.status_code
                if status == 403:
                    return None
                error = status_error(status, response.headers, where)
                if error is not None:
                    if isinstance(error, NextLegBadRequestError):
                        error.advice = "The image URL may have expired: run the job again for fresh URLs."
                    raise error
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise self._too_large(url, f"announces {int(length)} bytes")
                checked, content_type = self._checked(
                    response.iter_content(CHUNK_SIZE), url, endpoint=where["endpoint"], status=status
                )
                return FetchedImage(write(checked), content_type, "direct")
        except requests.RequestException as exc:
            raise NextLegConnectionError(
                f"the download broke off ({type(exc).__name__}: {exc})",
                advice="The image host could not be reached or dropped the connection; a retry may help.",
                **where,
            ) from exc

    def _follow(self, url: str) -> requests.Response:
        """GET ``url``, following redirects to http(s) URLs only, at most :data:`MAX_REDIRECTS`, no loop."""
        assert self._session is not None
        seen = {url}
        connect = min(CONNECT_TIMEOUT, self.timeout)
        while True:
            response = self._session.get(
                url, stream=True, timeout=(connect, self.timeout), allow_redirects=False
            )
            location = response.headers.get("Location") if response.is_redirect else None
            if location is None:
                return response
            response.close()
            target = urljoin(url, location)
            problem = None
            if urlsplit(target).scheme not in ("http", "https"):
                problem = f"redirects to {target!r:.120}, which is not an http(s) URL"
            elif target in seen:
                problem = f"redirects in a loop (back to {target!r:.120})"
            elif len(seen) > MAX_REDIRECTS:
                problem = f"redirects more than {MAX_REDIRECTS} times"
            if problem is not None:
                raise NextLegBadRequestError(
                    f"the image host {problem}",
                    endpoint=f"GET {url}",
                    status=response.status_code,
                    advice="The image URL cannot be downloaded: run the job again for fresh URLs.",
                )
            seen.add(target)
            url = target

    def _checked(
        self, chunks: Iterable[bytes], url: str, *, endpoint: str, status: int | None = None
    ) -> tuple[Iterator[bytes], str]:
        """
        The chunks, once their first bytes show an image, and its media type; passing ``max_bytes`` fails
        the iteration.
        """
        source = iter(chunks)
        head = b""
        for chunk in source:
            head += chunk
            if len(head) >= 12:
                break
        content_type = image_type(head)
        if content_type is None:
            raise NextLegMalformedResponseError(
                f"the bytes returned for {url} are not a PNG, JPEG, GIF or WebP image",
                endpoint=endpoint,
                status=status,
                advice="The URL answered something other than an image (a login or error page?).",
            )

        def limited() -> Iterator[bytes]:
            total = 0
            for chunk in itertools.chain((head,), source):
                total += len(chunk)
                if total > self.max_bytes:
                    raise self._too_large(url, f"passed {self.max_bytes} bytes")
                yield chunk

        return limited(), content_type

    def _too_large(self, url: str, how: str) -> NextLegInputError:
        return NextLegInputError(
            f"the image {url} {how}, more than max_bytes allows",
            advice=f"Raise max_bytes (now {self.max_bytes}) if images this large are expected; nothing was "
            "saved.",
        )
