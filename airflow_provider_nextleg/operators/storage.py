"""The operator that saves a finished NextLeg job's images to storage and announces them as an Asset event.

CDN links expire and sometimes answer 403; a pipeline that needs the pictures later saves them when the
job finishes. :class:`SaveImagesOperator` wraps :func:`~airflow_provider_nextleg.storage.save_job_images`
and updates an Airflow Asset, so DAGs scheduled on it run whenever new images land.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.operators.links import SavedImagesLink, browsable_url
from airflow_provider_nextleg.operators.nextleg import task_instance_identity
from airflow_provider_nextleg.storage import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, save_job_images

if TYPE_CHECKING:
    from airflow.sdk import Context

_TEMPLATE_START = re.compile(r"\{\{|\{%")


def destination_asset(destination: str | ObjectStoragePath) -> Asset:
    """
    The Asset a destination folder stands for: its fixed part, up to the first templated path segment.

    ``file:///data/nextleg/{{ ds }}/{{ run_id }}/`` gives ``Asset("file:///data/nextleg")``: one Asset for
    every run's folder, so a consumer DAG is scheduled on it once and finds each run's files in the event.
    A connection id in the URI (``s3://aws_conn@bucket/...``) is left out: it is not part of the data's name.

    :param destination: the destination as given to :class:`SaveImagesOperator`.
    """
    text = str(destination)
    fixed = _TEMPLATE_START.split(text, maxsplit=1)[0]
    if fixed != text:
        fixed = fixed[: fixed.rfind("/") + 1]
    parts = urlsplit(fixed if "://" in fixed else f"file://{fixed}")
    if not parts.path.strip("/") and not parts.netloc:
        raise NextLegInputError(
            f"destination {text!r:.120} has no fixed folder to name an Asset after",
            advice="Pass outlets=[Asset(...)] (or outlets=[] for none) to SaveImagesOperator.",
        )
    netloc = parts.netloc.rpartition("@")[2]
    return Asset(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))


class SaveImagesOperator(BaseOperator):
    """
    Save a finished job's images and a JSON manifest to any ``ObjectStoragePath``, and emit an Asset event.

    Files are named after the job (``<message_id>_grid.png``, ``<message_id>_0.png``, ...,
    ``<message_id>.json``), written under a temporary name and renamed when complete, and kept on a rerun
    when unchanged. See :mod:`airflow_provider_nextleg.storage` for the manifest and the safety rules.

    By default the task's outlet is :func:`destination_asset` of ``destination``; pass ``outlets`` to
    choose others. Each Asset outlet's event carries ``extra`` ``{"message_id", "manifest", "files"}``
    (URIs), so a downstream DAG scheduled on the Asset can open the manifest
    (:meth:`~airflow_provider_nextleg.storage.Manifest.load`). Returns the same small dict as XCom.

    Once saved, the task's extra link "Saved images" opens the manifest where the storage has a page
    for it: the S3 console for ``s3://``, the Cloud console for ``gs://`` (see
    :func:`~airflow_provider_nextleg.operators.links.browsable_url`). A local folder (``file://``) and
    other stores get no link: a browser does not open ``file://`` links from the Airflow UI.

    :param result: the finished job's result (an ImagineOperator's or ButtonOperator's ``output``).
    :param destination: the folder (templated), e.g. ``file:///data/nextleg/{{ ds }}/{{ run_id }}/``
        or ``s3://aws_default@bucket/nextleg/{{ run_id }}/``; the connection id before ``@`` authenticates.
        (``{{ ds }}`` is undefined in a run without a logical date; ``{{ dag_run.run_after | ds }}`` is not.)
    :param nextleg_conn_id: the nextleg connection, used only to fetch images through ``POST /getImage``
        when their host answers 403.
    :param button: the button that made this job (templated), for the manifest; by default the one the
        result names (a ButtonOperator's result names its own).
    :param max_bytes: largest image accepted; a bigger one fails the task and leaves no file.
    :param timeout: seconds a direct download may wait for the next bytes.
    """

    template_fields: Sequence[str] = ("result", "destination", "button")
    operator_extra_links = (SavedImagesLink(),)
    ui_color = "#e6f7ff"

    def __init__(
        self,
        *,
        result: dict[str, Any],
        destination: str | ObjectStoragePath,
        nextleg_conn_id: str = NextLegHook.default_conn_name,
        button: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs:
            kwargs["outlets"] = [destination_asset(destination)]
        super().__init__(**kwargs)
        self.result = result
        self.destination = destination
        self.nextleg_conn_id = nextleg_conn_id
        self.button = button
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.saved_url: str | None = None
        """Where a person opens the manifest this try saved, for :class:`SavedImagesLink`."""

    @cached_property
    def hook(self) -> NextLegHook:
        """The hook of this task's connection (only for ``POST /getImage``)."""
        return NextLegHook(self.nextleg_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        """Save the images, attach what was saved to the outlets' Asset events, and return it."""
        manifest = save_job_images(
            self.result,
            self.destination,
            self.hook,
            button=self.button,
            saved_by=task_instance_identity(context),
            max_bytes=self.max_bytes,
            timeout=self.timeout,
        )
        self.saved_url = browsable_url(ObjectStoragePath(manifest.path))
        summary: dict[str, Any] = {
            "message_id": manifest.message_id,
            "manifest": manifest.path,
            "files": [str(manifest.file_path(image)) for image in manifest.files],
        }
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra.update(summary)
        return summary
