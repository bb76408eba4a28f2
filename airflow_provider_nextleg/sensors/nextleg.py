"""The sensor that waits for a NextLeg message (a job submitted elsewhere) to finish."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    conf,
)
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_nextleg import validation
from airflow_provider_nextleg.exceptions import NextLegWaitTimeoutError
from airflow_provider_nextleg.hooks.nextleg import NextLegHook
from airflow_provider_nextleg.models import Message
from airflow_provider_nextleg.triggers.nextleg import (
    TRANSIENT_ERRORS,
    NextLegMessageTrigger,
    Progress,
    job_result,
    log_progress,
    read_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class MessageSensor(BaseSensorOperator):
    """
    Wait until a NextLeg message reaches progress 100, and return its result.

    Deferrable, it hands the wait to the triggerer (no worker slot held): the sensor's ``timeout``
    becomes an absolute deadline kept inside the trigger, so a restarted triggerer does not restart the
    clock. Otherwise it pokes on the worker (``mode="reschedule"`` frees the slot between pokes). Either
    way a finished result is returned as the task's XCom; a job that failed fails the task (terminal
    codes without retries), and so does a timeout; ``soft_fail=True`` skips instead, as for any Airflow
    sensor. 429s, 5xx and dropped connections only delay the wait.

    :param message_id: the message id to wait for (templated).
    :param nextleg_conn_id: the nextleg connection.
    :param deferrable: wait in the triggerer; the default comes from ``[operators] default_deferrable``.
    :param expire_mins: minutes after which NextLeg reports an unfinished job incomplete; ``None``
        takes the connection's.
    :param route_id: in mode ``load_balancer`` or ``pay_per_use``, the submission's ``route_id`` (its
        ``loadBalanceId`` or ``ppuId``; templated), which its polls need.
    """

    template_fields: Sequence[str] = ("message_id", "route_id")
    ui_color = "#f2e6ff"

    def __init__(
        self,
        *,
        message_id: str,
        nextleg_conn_id: str = NextLegHook.default_conn_name,
        deferrable: bool | None = None,
        expire_mins: int | None = None,
        route_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        kwargs.setdefault("timeout", timedelta(hours=1))
        super().__init__(**kwargs)
        self.message_id = message_id
        self.nextleg_conn_id = nextleg_conn_id
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable
        self.expire_mins = None if expire_mins is None else validation.check_expire_mins(expire_mins)
        self.route_id = route_id
        self._shown: Progress | None = None  # what the last poke logged

    @cached_property
    def hook(self) -> NextLegHook:
        """The hook of this task's connection."""
        return NextLegHook(self.nextleg_conn_id)

    def execute(self, context: Context) -> Any:
        """
        Check the arguments, then poke on the worker, or look once and defer to the triggerer.

        A job that has already ended needs no trigger; and a trigger that fires within seconds of the
        deferral is what Airflow's scheduler can get wrong (see the README).
        """
        self.message_id = validation.check_message_id(self.message_id)
        if not self.deferrable:
            return super().execute(context)
        message = self._poll()
        if message is not None and message.status.is_terminal:
            with self._failures():
                result = job_result(message)
            return result.to_xcom()
        self.log.info("Waiting for NextLeg job %s in the triggerer.", self.message_id)
        self.defer(
            trigger=NextLegMessageTrigger(
                message_id=self.message_id,
                nextleg_conn_id=self.nextleg_conn_id,
                deadline=time.time() + self.timeout,
                poll_interval=self.poke_interval,
                expire_mins=self.expire_mins,
                route_id=self.route_id,
            ),
            method_name="execute_complete",
        )

    def _poll(self) -> Message | None:
        """The message as the API has it now; ``None`` when the poll failed for a passing reason."""
        try:
            return self.hook.get_message(
                self.message_id, expire_mins=self.expire_mins, route_id=self.route_id
            )
        except TRANSIENT_ERRORS as exc:
            self.log.warning("NextLeg job %s: could not poll (%s); waiting on.", self.message_id, exc)
            return None

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """One poll: done returns the result, a failure raises, anything else waits on (logged when the
        job's progress changed, not at every poke)."""
        message = self._poll()
        if message is None:
            return False
        if not message.status.is_terminal:
            self._shown = log_progress(self.log, message, self._shown)
            return False
        with self._failures():
            result = job_result(message)
        return PokeReturnValue(is_done=True, xcom_value=result.to_xcom())

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The trigger's event: the result, or the job's failure, or a sensor timeout."""
        with self._failures():
            result = read_event(event)
        return result.to_xcom()

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """
        The wait's failures as a sensor's: a passed deadline is a sensor timeout, and, as with every
        Airflow sensor, ``soft_fail=True`` turns any failure into a skip (Airflow does it itself only for
        some exceptions, and 3.1 not for deferred sensors).
        """
        try:
            yield
        except AirflowException as exc:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping as soft_fail is set: {exc}") from exc
            if isinstance(exc, NextLegWaitTimeoutError):
                raise AirflowSensorTimeout(str(exc)) from exc
            raise
