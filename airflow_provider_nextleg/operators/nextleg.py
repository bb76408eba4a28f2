"""Operators that start NextLeg jobs (imagine, button presses, describe, blend) and wait for their results.

Each job operator checks its arguments before anything is sent, submits one job, and by default waits
for it: deferred to the triggerer (no worker slot held) or, where there is no triggerer, by running the
same trigger on the worker. The finished result is returned as a small JSON XCom (see
:class:`~airflow_provider_nextleg.models.JobResult`), so the next operator takes ``upstream.output``.

**Retries never pay twice.** On Airflow 3.3 and later the submitted message id is kept in the task
instance's ``task_state_store``, which survives retries and clears (see
:mod:`~airflow_provider_nextleg.operators.job_state`): a retry whose job is still running waits for it
again, one whose job already finished returns that result, and only a job that failed or expired is
submitted anew. A stored id is used only for the same request (a changed prompt or button submits
afresh). It is removed when the task succeeds, so clearing a finished task to regenerate starts a new
job, except for the buttons that can only give the same result again (:data:`SAME_RESULT_BUTTONS`, the
upscales ``U1``–``U4`` first): a clear of such a task returns its result. Airflow 3.1 and 3.2 have no
task state store: there, every try submits a new job, and a clear of a finished upscale presses it again,
which NextLeg refuses (``ALREADY_REQUESTED_UPSCALE``, terminal).

**Killing a task does not stop its job.** The API has no cancel call: ``on_kill`` (a task marked failed
or success, or cleared, while it runs) and a framework timeout leave the job running at Midjourney, and
it is paid for; it finishes on its own and its result stays readable by message id (it is in the task's
``nextleg_message_id`` XCom and the log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_nextleg import validation
from airflow_provider_nextleg.exceptions import NextLegInputError, NextLegJobFailedError, read_result
from airflow_provider_nextleg.hooks import calls
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.hooks.transport import ApiCall
from airflow_provider_nextleg.models import JobResult, MessageStatus, SubmitResult, TaskIdentity, job_ref
from airflow_provider_nextleg.operators import links
from airflow_provider_nextleg.operators.job_state import JobState, fingerprint
from airflow_provider_nextleg.triggers.nextleg import NextLegMessageTrigger, job_result, read_event
from airflow_provider_nextleg.webhooks.config import WebhookConfig
from airflow_provider_nextleg.webhooks.tokens import new_job_key

if TYPE_CHECKING:
    from airflow.sdk import Context

MESSAGE_ID_XCOM_KEY = "nextleg_message_id"

SEED_BUTTON = "✉️"
"""The button that returns a finished job's seed; NextLeg accepts it on any finished image result."""
FAVORITE_BUTTON = "❤️ Favorite"
QUICK_BUTTONS = frozenset({SEED_BUTTON, FAVORITE_BUTTON})
"""Buttons whose job answers within seconds, drawing nothing."""
SAME_RESULT_BUTTONS = frozenset(
    {"U1", "U2", "U3", "U4", "Upscale (2x)", "Upscale (4x)", SEED_BUTTON, FAVORITE_BUTTON}
)
"""Buttons that can only ever give the same result on the same message: the upscales of one picture
(which NextLeg refuses a second time, ``ALREADY_REQUESTED_UPSCALE``), its seed, its favourite mark. A task
that pressed one keeps its job, so that a clear returns the same result instead of pressing again. Every
other button draws something new (``V1``–``V4``, ``🔄``, the zooms and pans, ``Vary``, ``Make Square``,
describe's ``1️⃣``–``4️⃣``), as imagine and blend do: a clear of such a task makes a new job."""
COMPLETIONS = (None, "poll", "webhook")
"""The ``completion`` a job operator takes."""
RECONCILE_INTERVALS = 40
"""A job completing by webhook is polled to reconcile after this many of the account's request intervals
(2 minutes at the documented 3 s: past a fast job's end), and as often after that; later, up to three
times that, while the account's other jobs keep being delivered (see ``triggers/nextleg.py``)."""
QUICK_JOB_WORKER_WAIT = 15.0
"""Seconds a deferrable operator waits on the worker for a quick job (describe, ✉️, ❤️) before deferring."""
IMAGE_JOB_WORKER_WAIT = 5.0
"""Seconds a deferrable operator waits on the worker for an image job before deferring. Midjourney refuses
a job (``BANNED_PROMPT``, ``MODERATION_OUTAGE``, ``QUEUE_FULL``...) within 1 to 3 s of its submission,
while drawing takes 30 s and more: a refusal is then met on the worker, and never by a trigger firing
seconds after the deferral, which Airflow's scheduler can get wrong (it may fail the try, and a stale copy
of it run ``execute`` again, see the README)."""


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def task_instance_identity(context: Context) -> TaskIdentity:
    """Which task instance, and which try of it, is running: for refs, results and manifests."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
    }


class NextLegJobOperator(BaseOperator):
    """
    Base of the operators that start one NextLeg job and wait for its result.

    Subclasses build the job's call (:meth:`build_call`, which checks every argument it takes); this
    class checks its own arguments when the operator is created, and does the rest.

    :param nextleg_conn_id: the nextleg connection.
    :param ref: your own reference for the job. NextLeg echoes ``ref`` in the result and the webhook;
        this operator sends :func:`~airflow_provider_nextleg.models.job_ref`, a JSON object naming the
        task instance that submitted (dag, run, task, map index, try) with your ``ref`` under ``"ref"``,
        so every job can be traced back to its task.
    :param webhook_override: a URL that receives the result instead of the account's webhook (then the
        job is polled).
    :param completion: how the task learns that its job ended: ``"webhook"`` (its result is posted to the
        provider's receiver: one request per job, see the README's Webhooks), ``"poll"``, or ``None``, the
        default: by webhook when the connection names a ``webhook_url`` (and the task waits), else polls.
    :param wait_for_completion: wait for the job and return its result (the default); otherwise return
        ``{"message_id": ...}`` as soon as it is submitted.
    :param deferrable: wait in the triggerer, holding no worker slot; the default comes from
        ``[operators] default_deferrable``. Otherwise the worker runs the same wait itself.
    :param worker_wait: deferrable only: how long to wait on the worker before deferring (``timedelta``
        or seconds). A job that ends by then returns without the round trip through the triggerer,
        which costs more than a job that answers in seconds, and which Airflow's scheduler can get
        wrong when the trigger fires within seconds of the deferral (it may fail the resumed task, see
        the README). ``None``: :data:`QUICK_JOB_WORKER_WAIT` for jobs with a quick text answer
        (describe, ``✉️``, ``❤️ Favorite``), :data:`IMAGE_JOB_WORKER_WAIT` for jobs that draw images
        (30 to 75 s), long enough to see the quick refusals.
    :param poll_interval: seconds between two polls of the job; ``None`` polls as often as the
        connection's rate limit allows (``rate_limit_interval``, one request every 3 s by default), which
        the hook's limiter enforces anyway.
    :param wait_timeout: how long to wait for the job at most (``timedelta`` or seconds; ``None`` waits
        as long as the job runs, which NextLeg bounds by ``expire_mins``). Kept as an absolute deadline,
        so a restarted triggerer does not restart the clock.
    :param expire_mins: minutes after which NextLeg reports an unfinished job incomplete; ``None``
        takes the connection's (12 by default).
    :param map_index_template: what a mapped task shows in the UI instead of its index; by default its
        prompt or button (:meth:`map_index_label`). Your own template replaces it; ``""`` shows the index.
    """

    template_fields: Sequence[str] = ("nextleg_conn_id", "ref", "webhook_override")
    operator_extra_links = (links.NextLegImageLink(),)
    ui_color = "#f2e6ff"

    def __init__(
        self,
        *,
        nextleg_conn_id: str = NextLegHook.default_conn_name,
        ref: str | None = None,
        webhook_override: str | None = None,
        completion: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        worker_wait: timedelta | float | None = None,
        poll_interval: float | None = None,
        wait_timeout: timedelta | float | None = timedelta(hours=1),
        expire_mins: int | None = None,
        map_index_template: str | None = links.MAP_INDEX_TEMPLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(map_index_template=map_index_template, **kwargs)
        self.nextleg_conn_id = nextleg_conn_id
        self.ref = ref
        self.webhook_override = webhook_override
        if completion not in COMPLETIONS:
            raise NextLegInputError(
                f"completion={completion!r:.40} is none of {', '.join(map(repr, COMPLETIONS))}",
                advice="Pass completion='webhook', 'poll', or None to follow the connection.",
            )
        if completion == "webhook" and webhook_override is not None:
            raise NextLegInputError(
                "completion='webhook' and a webhook_override cannot go together",
                advice="Drop webhook_override (the provider's receiver takes the result), or poll.",
            )
        self.completion = completion
        self.wait_for_completion = validation.check_flag(wait_for_completion, name="wait_for_completion")
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.worker_wait = validation.check_seconds(worker_wait, name="worker_wait")
        self.poll_interval = validation.check_seconds(poll_interval, name="poll_interval")
        self.wait_timeout = validation.check_seconds(wait_timeout, name="wait_timeout", positive=True)
        self.expire_mins = None if expire_mins is None else validation.check_expire_mins(expire_mins)
        self.image_url: str | None = None
        """The image of the job this try finished, for :class:`~.links.NextLegImageLink`."""
        self.progress_image_url: str | None = None
        """The latest progress image of this try's job that the worker saw, for the link."""
        self.message_id: str | None = None
        """The job this try submitted or resumed, for :meth:`on_kill`."""

    @cached_property
    def hook(self) -> NextLegHook:
        """The hook of this task's connection."""
        return NextLegHook(self.nextleg_conn_id)

    # --- what subclasses provide -------------------------------------------------------------------

    def build_call(self, ref: str, webhook_override: str | None) -> ApiCall[SubmitResult]:
        """
        The job's call, built from the rendered arguments, each checked: a bad one raises
        ``NextLegInputError`` before anything is sent.

        :param ref: the ``ref`` to send.
        :param webhook_override: where NextLeg posts the result, if not to the account's webhook.
        """
        raise NotImplementedError

    def answers_quickly(self) -> bool:
        """Whether the job gives a text answer within seconds, rather than drawing for a minute."""
        return False

    def pressed_button(self) -> str | None:
        """The button this operator presses, which its result names; ``None`` for jobs of no button."""
        return None

    def repeats_its_result(self) -> bool:
        """Whether the same request can only ever give the same result (see :data:`SAME_RESULT_BUTTONS`):
        then the task keeps its job when it succeeds, and a clear returns that result."""
        return False

    def map_index_label(self) -> str:
        """What a mapped task shows in the UI (:data:`.links.MAP_INDEX_TEMPLATE`); empty: its index."""
        return ""

    # --- the job's life ----------------------------------------------------------------------------

    def pre_execute(self, context: Any) -> None:
        """A mapped task's default label, where Airflow's ``partial()`` left none (see :mod:`.links`)."""
        links.label_mapped_task(context)

    def execute(self, context: Context) -> dict[str, Any]:
        """Check, then resume this task's job if an earlier try left one, or submit a new one; then wait."""
        submitted_by = task_instance_identity(context)
        own_ref = None if self.ref is None else validation.check_ref(self.ref)
        webhooks, job_key, override = self._webhooks(), None, self.webhook_override
        if webhooks is not None:  # the result goes to the provider's receiver, under this job's key
            job_key = new_job_key()
            override = webhooks.override_url(job_key)
        call = self.build_call(job_ref(submitted_by, own_ref, job_key), override)
        request = fingerprint(call)
        state = JobState(context, self.log)
        earlier = state.earlier_job(self.hook, request, self.expire_mins)
        if earlier is not None and earlier.status is MessageStatus.DONE:
            return self._finish(context, job_result(earlier))
        if earlier is not None:
            message_id, (route_id, job_key) = earlier.message_id, state.routing()
        else:
            submitted = self.hook.request(call)
            message_id, route_id = submitted.message_id, submitted.route_id
            # First of all: whatever fails from here on, the next try finds this job instead of paying again.
            state.record(message_id, request, submitted_by, route_id, job_key)
        self.message_id = message_id
        context["ti"].xcom_push(key=MESSAGE_ID_XCOM_KEY, value=message_id)
        if self.wait_for_completion:
            return self._wait(context, message_id, route_id, job_key)
        self._done_with(state)  # submitted is all this task wanted of its job
        return {"message_id": message_id}

    def on_kill(self) -> None:
        """The task was marked failed or success, or cleared, while its job ran: say that the job goes on
        (the API has no cancel) and is paid for, and where to find it."""
        if self.message_id is not None:
            self.log.warning(
                "NextLeg job %s keeps running at Midjourney and is paid for (the API cannot cancel it); "
                "its result stays readable by that message id.",
                self.message_id,
            )

    def _done_with(self, state: JobState) -> None:
        """The task got what it wanted of its job: a clear of it asks for a new job, unless the request can
        only give this result again."""
        if not self.repeats_its_result():
            state.forget()

    def _webhooks(self) -> WebhookConfig | None:
        """The connection's webhooks, when this job completes by webhook (see ``completion``)."""
        webhooks = self.hook.webhooks
        enabled = webhooks is not None and webhooks.enabled
        if self.completion == "webhook" and not enabled:
            raise NextLegInputError(
                f"completion='webhook', but connection {self.nextleg_conn_id!r} names no webhook_url and "
                "webhook_secret",
                advice="Set both extras on the connection (see the README's Webhooks), or poll. Nothing "
                "was sent to NextLeg.",
            )
        by_webhook = self.completion == "webhook" or (
            self.completion is None and enabled and self.wait_for_completion and self.webhook_override is None
        )
        return webhooks if by_webhook else None

    def _trigger(
        self, context: Context, message_id: str, route_id: str | None, job_key: str | None
    ) -> NextLegMessageTrigger:
        interval = self.hook.rate_limit_interval
        return NextLegMessageTrigger(
            message_id=message_id,
            try_number=context["ti"].try_number,
            route_id=route_id,
            job_key=job_key,
            reconcile_after=None if job_key is None else max(RECONCILE_INTERVALS * interval, 1.0),
            nextleg_conn_id=self.nextleg_conn_id,
            deadline=None if self.wait_timeout is None else time.time() + self.wait_timeout,
            poll_interval=self.hook.rate_limit_interval if self.poll_interval is None else self.poll_interval,
            expire_mins=self.expire_mins,
        )

    def _wait(
        self, context: Context, message_id: str, route_id: str | None, job_key: str | None
    ) -> dict[str, Any]:
        trigger = self._trigger(context, message_id, route_id, job_key)
        show = partial(links.show_progress_image, self, context["ti"])
        if not self.deferrable:
            self.log.info("Waiting for NextLeg job %s on this worker.", message_id)
            return self.execute_complete(context, asyncio.run(links.wait_showing_progress(trigger, show)))
        worker_wait = self.worker_wait
        if worker_wait is None:
            worker_wait = QUICK_JOB_WORKER_WAIT if self.answers_quickly() else IMAGE_JOB_WORKER_WAIT
        if worker_wait > 0:
            self.log.info(
                "Waiting up to %g s for NextLeg job %s on this worker, then in the triggerer.",
                worker_wait,
                message_id,
            )
            event = asyncio.run(links.wait_showing_progress(trigger, show, within=worker_wait))
            if event is not None:
                return self.execute_complete(context, event)
        self.log.info("Waiting for NextLeg job %s in the triggerer.", message_id)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """
        Turn the wait's event into the task's result, or its error (terminal codes are not retried).

        A failed job, reported here, is forgotten: the retry that follows submits anew, and so does a clear.
        An earlier try's event that ended without a result, handed to this try (Airflow 3.1 keeps a
        deferral's resume method for the retries of a try that failed after it), would only repeat that
        try's failure: this try runs the task afresh instead, as a retry should.
        """
        deferred_by = event.get("try_number") if isinstance(event, dict) else None
        this_try = context["ti"].try_number
        if isinstance(deferred_by, int) and deferred_by != this_try and event.get("status") != "done":
            self.log.warning(
                "Try %d was handed the event of try %d, which deferred (Airflow 3.1 replays it to the "
                "retries): running the task afresh.",
                this_try,
                deferred_by,
            )
            return self.execute(context)
        try:
            result = read_event(event)
        except NextLegJobFailedError:
            JobState(context, self.log).forget()
            raise
        return self._finish(context, result)

    def _finish(self, context: Context, result: JobResult) -> dict[str, Any]:
        """The task's result: the job's, naming the button pressed and the try that submitted the job."""
        state = JobState(context, self.log)
        result = replace(
            result,
            button=self.pressed_button(),
            submitted_by=state.submitter(result.message_id, task_instance_identity(context)),
        )
        context["ti"].xcom_push(key=MESSAGE_ID_XCOM_KEY, value=result.message_id)
        self.image_url = result.image_url
        self._done_with(state)
        self.log.info(
            "NextLeg job %s finished: %s%s",
            result.message_id,
            result.image_url or "no image",
            f"; buttons: {', '.join(result.buttons)}" if result.buttons else "",
        )
        return result.to_xcom()


class ImagineOperator(NextLegJobOperator):
    """
    Generate a 2x2 grid from a prompt (``POST /v2/imagine``).

    :param prompt: the prompt (templated); may start with image URLs and carry flags (``--ar 16:9``).
    :param ignore_prefilter: skip NextLeg's banned-phrase prefilter (Midjourney still moderates).
    """

    template_fields: Sequence[str] = (*NextLegJobOperator.template_fields, "prompt")

    def __init__(self, *, prompt: str, ignore_prefilter: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.ignore_prefilter = ignore_prefilter

    def build_call(self, ref: str, webhook_override: str | None) -> ApiCall[SubmitResult]:
        """The imagine call: a prompt with words, within Discord's length, its documented flags valid."""
        return calls.imagine(self.prompt, ref, webhook_override, self.ignore_prefilter)

    def map_index_label(self) -> str:
        """The prompt, shortened."""
        return links.shortened(self.prompt)


class ButtonOperator(NextLegJobOperator):
    """
    Press a button on a finished result (``POST /v2/button``): ``V1``–``V4`` for variations, ``U1``–``U4``
    to upscale, ``🔄`` to reroll, the upscale's ``Vary (Strong)``, ``Zoom Out 2x``, ``Custom Zoom``, ...;
    ``✉️`` returns the job's seed (in the result's ``seed``).

    Given an upstream result (``imagine.output``), the button is checked against the buttons that
    result offers before anything is sent. The result names the button it was made with (``button``).
    A clear of a task whose button can only give the same result (:data:`SAME_RESULT_BUTTONS`: ``U1``–``U4``,
    ``Upscale (2x)``/``(4x)``, ``✉️``, ``❤️ Favorite``) returns its earlier result on Airflow 3.3+; any other
    button makes a new job.
    Map it to press several:
    ``ButtonOperator.partial(task_id="upscale", message=imagine.output).expand(button=["U1", "U2"])``.

    :param message: the finished result to press the button on (an upstream operator's output), or its
        button message id (then the button is checked by NextLeg only).
    :param button: the button, exactly as the result lists it (emoji included).
    :param prompt: ``Custom Zoom`` and ``🖌️ Vary (Region)`` only: a prompt replacing the original.
    :param zoom: ``Custom Zoom`` only, required there: the zoom factor, from 1 to 2.
    :param ar: ``Custom Zoom`` only: the aspect ratio, e.g. ``"1:1"``.
    :param mask: ``🖌️ Vary (Region)`` only, required there: the region to redraw, a PNG (white where to
        redraw), as bytes, a local path or an ``ObjectStoragePath`` (templated when a string).

    Through the load balancer or pay-per-use (the connection's ``mode``), the press goes to the account
    that made the upstream result, by the ``route_id`` the result carries.
    """

    template_fields: Sequence[str] = (
        *NextLegJobOperator.template_fields,
        "message",
        "button",
        "prompt",
        "zoom",
        "ar",
        "mask",
    )

    def __init__(
        self,
        *,
        message: dict[str, Any] | str,
        button: str,
        prompt: str | None = None,
        zoom: float | None = None,
        ar: str | None = None,
        mask: bytes | str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.button = button
        self.prompt = prompt
        self.zoom = zoom
        self.ar = ar
        self.mask = mask

    def build_call(self, ref: str, webhook_override: str | None) -> ApiCall[SubmitResult]:
        """The button call: the button must be one the upstream result offers; Custom Zoom's options must
        fit it."""
        button = validation.check_text(self.button, name="button")
        route_id = None
        if isinstance(self.message, str):
            button_message_id = self.message  # checked by the call, as NextLeg's handle
        else:
            upstream = read_result(self.message, name="message")
            button_message_id, route_id = self._offered_on(upstream, button), upstream.route_id
        return calls.button(
            button,
            button_message_id,
            ref,
            webhook_override,
            self.prompt,
            self.zoom,
            self.ar,
            mask=_mask_bytes(self.mask),
            route_id=route_id,
        )

    @staticmethod
    def _offered_on(upstream: JobResult, button: str) -> str:
        """The upstream result's button message id, if the result offers this operator's button."""
        if not upstream.button_message_id:
            raise NextLegInputError(
                f"the result {upstream.message_id} given as message has no button_message_id",
                advice="Pass the output of an operator that waited for its job (wait_for_completion=True), "
                "or a button message id. Nothing was sent to NextLeg.",
            )
        button_message_id = upstream.button_message_id
        if button != SEED_BUTTON and button not in upstream.buttons:
            raise NextLegInputError(
                f"button {button!r} is not offered by the result {button_message_id}",
                advice=f"Press one of its buttons: {', '.join(upstream.buttons) or 'none'} (or {SEED_BUTTON} "
                "for the seed). Nothing was sent to NextLeg.",
            )
        return button_message_id

    def map_index_label(self) -> str:
        """The button and what it is pressed on: ``U2 of <the upstream prompt>``, or of its message id."""
        return f"{self.button} of {links.result_label(self.message)}"

    def answers_quickly(self) -> bool:
        """``✉️`` and ``❤️ Favorite`` answer at once; the other buttons draw."""
        return self.button in QUICK_BUTTONS

    def pressed_button(self) -> str:
        """The button: the result names it, and so does the manifest of its saved images."""
        return self.button

    def repeats_its_result(self) -> bool:
        """The upscales, the seed and the favourite mark give the same result on the same message."""
        return self.button in SAME_RESULT_BUTTONS


def _mask_bytes(mask: bytes | str | ObjectStoragePath | None) -> bytes | None:
    """A mask given as bytes, a local path or an ``ObjectStoragePath``, read; the call checks it."""
    if mask is None or isinstance(mask, bytes | bytearray):
        return None if mask is None else bytes(mask)
    try:
        return (ObjectStoragePath(mask) if isinstance(mask, str) else mask).read_bytes()
    except (OSError, ValueError) as exc:
        raise NextLegInputError(
            f"mask {str(mask)!r:.120} cannot be read ({type(exc).__name__}: {exc})",
            advice="Pass mask as a PNG's bytes, or the path or ObjectStoragePath of a readable PNG. "
            "Nothing was sent to NextLeg.",
        ) from None


class DescribeOperator(NextLegJobOperator):
    """
    Get four prompts that describe an image (``POST /v2/describe``); the result's ``content`` lists them.

    :param url: the image's public http(s) URL (templated).
    """

    template_fields: Sequence[str] = (*NextLegJobOperator.template_fields, "url")

    def __init__(self, *, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url

    def build_call(self, ref: str, webhook_override: str | None) -> ApiCall[SubmitResult]:
        """The describe call: the URL must be http(s)."""
        return calls.describe(self.url, ref, webhook_override)

    def answers_quickly(self) -> bool:
        """A describe answers with text, in seconds."""
        return True


class BlendOperator(NextLegJobOperator):
    """
    Blend two to five images into a new grid (``POST /v2/blend``).

    :param urls: the images' public http(s) URLs (templated).
    """

    template_fields: Sequence[str] = (*NextLegJobOperator.template_fields, "urls")

    def __init__(self, *, urls: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = urls

    def build_call(self, ref: str, webhook_override: str | None) -> ApiCall[SubmitResult]:
        """The blend call: two to five http(s) URLs."""
        return calls.blend(self.urls, ref, webhook_override)


class SeedOperator(BaseOperator):
    """
    Read the seed of a finished job (``POST /v2/seed``): no job is started, the answer is immediate.

    Returns ``{"message_id", "seed"}``. (Pressing ``✉️`` with :class:`ButtonOperator` gets the seed the
    older way, as a job whose result carries ``seed``.)

    :param message: the finished result (an upstream operator's output) or its message id.
    :param nextleg_conn_id: the nextleg connection.
    """

    template_fields: Sequence[str] = ("message",)

    def __init__(
        self,
        *,
        message: dict[str, Any] | str,
        nextleg_conn_id: str = NextLegHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.nextleg_conn_id = nextleg_conn_id

    def execute(self, context: Context) -> dict[str, str]:
        """Ask for the seed."""
        if isinstance(self.message, str):
            message_id = self.message  # checked by the call
        else:
            message_id = read_result(self.message, name="message").message_id
        seed = NextLegHook(self.nextleg_conn_id).request(calls.seed(message_id))
        self.log.info("NextLeg job %s has seed %s.", message_id, seed)
        return {"message_id": message_id, "seed": seed}
