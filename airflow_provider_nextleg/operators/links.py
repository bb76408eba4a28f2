"""What the Airflow UI shows of the operators: their extra links (a job's image while it runs and once
done; what :class:`~airflow_provider_nextleg.operators.storage.SaveImagesOperator` saved), and the labels
of mapped tasks.

**Mapped tasks** show a label instead of their index: an ``ImagineOperator`` its prompt, a
``ButtonOperator`` its button and what it is pressed on (``U2 of a red kite over a hill``), from the job
operators' default ``map_index_template`` (:data:`MAP_INDEX_TEMPLATE`), which a template of the DAG's
own replaces. Airflow 3.3 takes that default into ``partial()`` and shows the label from the try's start;
Airflow 3.1 fills ``partial()`` with ``None``, so there the operator puts the default into the try's
context (:func:`label_mapped_task`), and the label appears once a try ends (a deferred try: once it
resumes).

**Where a link comes from.** Airflow 3 never runs a link's code in the API server: the worker calls
``get_link()`` after each try (a deferral included) with the operator that ran it, and stores the answer
as the XCom :attr:`~airflow.sdk.BaseOperatorLink.xcom_key`, which the UI reads. So each link here answers
from what the operator learned during the try; the NextLeg API is never called for a link.

**While a job runs**, :class:`NextLegImageLink` points at the job's progress image (Midjourney's preview,
``progressImageUrl`` of the message while its progress is below 100), and at the result once it is done.
It is the latest image the task's wait saw. While the worker waits (a non-deferrable wait, and a
deferrable task's first seconds, ``worker_wait``), :func:`wait_showing_progress` updates the link's XCom
at each new progress image, from the polls the wait makes anyway (not one request more). While the task
is deferred, the trigger does the same from its own polls, in the triggerer (without holding up its wait:
see :class:`~airflow_provider_nextleg.triggers.nextleg.NextLegMessageTrigger`); HA triggerers running the
same trigger write the same images, and the resumed task overwrites the link with the result. Both write
it with :func:`image_link_xcom`. A job completing by webhook is polled only to reconcile, so it rarely
shows a progress image.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, overload
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperator, BaseOperatorLink, ObjectStoragePath
from airflow.sdk.bases.xcom import BaseXCom
from asgiref.sync import sync_to_async

from airflow_provider_nextleg.polling import TRANSIENT_ERRORS, watch_message
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger, wait_in_process

MAP_INDEX_TEMPLATE = "{{ task.map_index_label() if ti.map_index >= 0 else '' }}"
"""The job operators' default ``map_index_template``: a mapped task shows its operator's
``map_index_label()`` instead of its index."""
LABEL_LENGTH = 60
"""The most characters of a prompt that a mapped task's label shows."""
ONLY_LISTENING = 3600.0
"""The least poll interval the progress follower asks for: far above any trigger's, so the scheduler polls
the message at the trigger's pace, and never for the follower alone once the trigger's wait is over."""


class NextLegImageLink(BaseOperatorLink):
    """Opens the job's image from the task in the Airflow UI: its progress image while it runs, then the
    result (the grid, or the upscale)."""

    name = "NextLeg image"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        """
        The image of this try's job: the result once done, else the latest progress image the worker saw;
        empty when there is neither (a job still queued, one that failed before any preview, one with no
        image).

        The URL is taken from the operator, not from an XCom of it: that XCom would be missing after
        every try that failed before its job finished, and Airflow logs each read of a missing XCom at
        ERROR ("XCom not found").

        ``ti_key`` is a ``TaskInstanceKey``, whose module moved between Airflow 3.1 and 3.3.
        """
        return getattr(operator, "image_url", None) or getattr(operator, "progress_image_url", None) or ""


class SavedImagesLink(BaseOperatorLink):
    """Opens what a :class:`~airflow_provider_nextleg.operators.storage.SaveImagesOperator` saved: the
    job's manifest, in the storage's own browser (see :func:`browsable_url`)."""

    name = "Saved images"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        """The manifest this try saved, where its storage has a browsable URL; empty otherwise."""
        return getattr(operator, "saved_url", None) or ""


def browsable_url(path: ObjectStoragePath) -> str:
    """
    Where a person opens a stored file from the Airflow UI: the S3 console's object page for ``s3://``,
    the Cloud console's for ``gs://``/``gcs://`` (both ask the person to sign in; the object stays
    private).

    Empty for every other storage, local files included: a browser does not open a ``file://`` link from
    an http(s) page (Chromium and Firefox refuse it silently), and the file is on the worker's disk, which
    is rarely the browser's. Azure has no URL of an object that does not name the subscription.

    :param path: the stored file.
    """
    parts = urlsplit(str(path))
    bucket = parts.netloc.rpartition("@")[2]  # without the connection id of s3://aws_conn@bucket/...
    key = parts.path.lstrip("/")
    if parts.scheme == "s3":
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}?prefix={quote(key, safe='')}"
    if parts.scheme in ("gs", "gcs"):
        return f"https://console.cloud.google.com/storage/browser/_details/{quote(bucket)}/{quote(key)}"
    return ""


def label_mapped_task(context: Any) -> None:
    """Give a mapped task's try :data:`MAP_INDEX_TEMPLATE` when ``partial()`` gave it no template (Airflow
    3.1): Airflow renders the context's template after ``execute`` and after ``execute_complete``.

    :param context: the try's context, which Airflow renders the label with.
    """
    if context["ti"].map_index >= 0 and context.get("map_index_template") is None:
        context["map_index_template"] = MAP_INDEX_TEMPLATE


def shortened(text: object) -> str:
    """A text on one line, at most :data:`LABEL_LENGTH` characters (cut with an ellipsis)."""
    line = " ".join(str(text).split())
    return line if len(line) <= LABEL_LENGTH else line[: LABEL_LENGTH - 1].rstrip() + "…"


def result_label(message: object) -> str:
    """What a button is pressed on, in a label: the upstream result's prompt, else its message id (or the
    button message id given instead of a result)."""
    if isinstance(message, dict):
        content = message.get("content")
        message = content if isinstance(content, str) and content else message.get("message_id")
    return shortened(message)


def show_progress_image(operator: BaseOperator, ti: Any, image_url: str) -> None:
    """
    Point the task's :class:`NextLegImageLink` at a new progress image now, not only after the try: the
    operator keeps it for ``get_link``, and its XCom, which the UI reads, is written at once
    (:func:`image_link_xcom`).

    :param operator: the job operator waiting for the job.
    :param ti: its task instance.
    :param image_url: the progress image.
    """
    operator.progress_image_url = image_url  # type: ignore[attr-defined]
    try:
        key_and_value, place = image_link_xcom(ti, image_url)
        BaseXCom.set(*key_and_value, **place)
    except Exception as exc:  # the link only lags behind: the wait goes on
        operator.log.debug("Could not point the image link at %s: %s", image_url, exc)


def image_link_xcom(ti: Any, image_url: str) -> tuple[tuple[str, str], dict[str, Any]]:
    """
    The XCom that points a task instance's :class:`NextLegImageLink` at an image, as the arguments of
    ``BaseXCom.set`` (or ``aset``): positional (the link's key, the URL) and by keyword (where: the task
    instance). The worker's wait and the trigger write the link with it before the try ends (Airflow writes
    it from ``get_link`` after the try); through ``BaseXCom``, so in the metadata database whatever the
    XCom backend, as Airflow stores a link's XCom.

    :param ti: the task instance (the worker's, or a trigger's ``task_instance``): its dag, task and run
        ids and map index.
    :param image_url: the image the link opens.
    """
    place = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}
    return (NextLegImageLink().xcom_key, image_url), place


@overload
async def wait_showing_progress(
    trigger: NextLegMessageTrigger, show: Callable[[str], None], within: None = None
) -> dict[str, Any]: ...
@overload
async def wait_showing_progress(
    trigger: NextLegMessageTrigger, show: Callable[[str], None], within: float
) -> dict[str, Any] | None: ...
async def wait_showing_progress(
    trigger: NextLegMessageTrigger, show: Callable[[str], None], within: float | None = None
) -> dict[str, Any] | None:
    """
    :func:`~airflow_provider_nextleg.triggers.nextleg.wait_in_process`, telling ``show`` each new progress
    image that the wait's polls bring.

    The follower is a second watcher of the trigger's message with its account's poll scheduler: it hears
    the trigger's polls and asks for none of its own (:data:`ONLY_LISTENING`). ``show`` runs in a worker
    thread (it calls the task's supervisor, synchronously). A job that completes by webhook is not polled:
    there is nothing to follow.

    :param trigger: the wait.
    :param within: as for ``wait_in_process``.
    :param show: called with each new progress image URL.
    """
    if trigger.job_key is not None:
        return await wait_in_process(trigger, within)
    follower = _ProgressFollower(trigger, show)
    try:
        return await wait_in_process(trigger, within)
    finally:
        await follower.stop()


class _ProgressFollower:
    """
    Hears the polls of a trigger's message until it ends, and shows each new progress image.

    A show under way is finished, never abandoned, when the follower stops: it talks to the task's
    supervisor from a thread, and the task goes on talking to it once the wait returns (Airflow 3.1's
    supervisor is not safe for two callers at once; in ``dag.test()`` it even unsets itself while it
    answers one).

    :param trigger: the wait being followed.
    :param show: called with each new progress image URL.
    """

    def __init__(self, trigger: NextLegMessageTrigger, show: Callable[[str], None]) -> None:
        self.trigger = trigger
        self.show = sync_to_async(show)
        self.showing: asyncio.Future[None] | None = None
        self.task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        """Stop following; return once the last show is over."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.showing is not None:
            await self.showing

    async def _follow(self) -> None:
        shown = None
        async with watch_message(
            self.trigger.nextleg_conn_id,
            self.trigger.message_id,
            expire_mins=self.trigger.expire_mins,
            min_interval=ONLY_LISTENING,
            route_id=self.trigger.route_id,
        ) as updates:
            while True:
                try:
                    message = await updates.next()
                except TRANSIENT_ERRORS:
                    continue
                except Exception:  # the trigger's own wait meets the same error and reports it
                    return
                if message.status.is_terminal:
                    return
                if message.progress_image_url and message.progress_image_url != shown:
                    shown = message.progress_image_url
                    self.showing = asyncio.ensure_future(self.show(shown))
                    await asyncio.shield(self.showing)
