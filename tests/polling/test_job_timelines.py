"""The emulator's admin view of job timelines, which detection latencies are measured from."""

from __future__ import annotations

import time

from airflow_provider_nextleg.emulator import EmulatorServer
from airflow_provider_nextleg.hooks.nextleg import NextLegHook


def test_jobs_show_when_they_left_the_queue_and_finished(nextleg_emulator: EmulatorServer):
    nextleg_emulator.configure(concurrency=1)
    before = time.time()
    hook = NextLegHook()
    first, second = hook.imagine("first in line").message_id, hook.imagine("second in line").message_id

    jobs = nextleg_emulator.jobs()

    assert [job["messageId"] for job in jobs] == [first, second]
    assert all(job["type"] == "imagine" and job["error"] is None and not job["stalled"] for job in jobs)
    assert all(before <= job["created"] <= job["started"] < job["finished"] for job in jobs)
    assert jobs[1]["started"] >= jobs[0]["finished"]  # one at a time: the second waited for the first
