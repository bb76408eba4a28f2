"""Job life in simulated time: concurrency and the queue, job modes, fast hours, reproducible runs."""

from __future__ import annotations

import pytest

from airflow_provider_nextleg.emulator import EmulatorServer

from .support import Api, wait_until


class TestConcurrencyAndQueue:
    def test_three_jobs_run_at_once_by_default(self, api: Api, emu: EmulatorServer) -> None:
        emu.configure(time_scale=0.005)
        ids = [api.submit("/v2/imagine", msg=f"job {n}") for n in range(4)]
        assert ["response" in api.message(message_id) for message_id in ids] == [False, False, False, True]

    @pytest.fixture
    def one_slot(self, emu: EmulatorServer) -> EmulatorServer:
        """One job at a time, two may wait, and jobs slow enough (0.15 to 0.37 s) to watch them queue."""
        emu.configure(concurrency=1, queue_length=2, time_scale=0.005)
        return emu

    def test_jobs_past_the_concurrency_wait_as_job_queued(self, api: Api, one_slot: EmulatorServer) -> None:
        first, second, third = (api.submit("/v2/imagine", msg=f"job {n}") for n in range(3))
        assert api.message(second) == {
            "progress": 0,
            "progressImageUrl": None,
            "response": {"content": "JOB_QUEUED", "originatingMessageId": second},
        }
        # The second job leaves the queue only when the first is done (one slot, first in first out).
        wait_until(lambda: "response" not in api.message(second))
        assert api.message(first)["progress"] == 100
        assert api.message(third)["response"]["content"] == "JOB_QUEUED"
        assert api.wait(third)["response"]["content"] == "job 2"

    def test_past_the_queue_length_jobs_end_with_queue_full(self, api: Api, one_slot: EmulatorServer) -> None:
        accepted = [api.submit("/v2/imagine", msg=f"job {n}") for n in range(3)]
        refused = api.wait(api.submit("/v2/imagine", msg="one too many"))["response"]
        assert refused["content"] == "QUEUE_FULL"
        assert "imageUrl" not in refused
        assert all("imageUrl" in api.wait(message_id)["response"] for message_id in accepted)

    def test_errors_and_text_answers_take_no_slot(self, api: Api, one_slot: EmulatorServer) -> None:
        running = api.submit("/v2/imagine", msg="the only running job")
        assert api.imagine("a cat --foo")["content"] == "INVALID_PARAMETER"
        assert api.result("/v2/describe", url="https://example.com/a.png")["type"] == "describe"
        assert api.message(running)["progress"] != 100

    def test_info_reports_the_queue(self, api: Api, one_slot: EmulatorServer) -> None:
        for n in range(3):
            api.submit("/v2/imagine", msg=f"job {n}")
        info = api.result("/v2/info")["content"]
        assert info["Queued Jobs (fast)"] == "2"
        assert info["Queued Jobs (relax)"] == "0"
        assert info["Lifetime Usage"].startswith("3 images")

    def test_raising_the_concurrency_at_run_time_starts_waiting_jobs_sooner(
        self, api: Api, one_slot: EmulatorServer
    ) -> None:
        api.submit("/v2/imagine", msg="first")
        one_slot.configure(concurrency=2)
        second = api.submit("/v2/imagine", msg="second")
        assert "response" not in api.message(second)


class TestModes:
    @pytest.fixture
    def fixed_durations(self, emu: EmulatorServer) -> EmulatorServer:
        emu.configure(min_duration=40, max_duration=40, relax_factor=3, time_scale=0.002)
        return emu

    def test_relax_mode_jobs_take_longer(self, api: Api, fixed_durations: EmulatorServer) -> None:
        api.result("/v2/slash-commands", cmd="relax")
        relaxed = api.submit("/v2/imagine", msg="started first, in relax mode")
        api.result("/v2/slash-commands", cmd="fast")
        fast = api.submit("/v2/imagine", msg="started second, in fast mode")
        api.wait(fast)
        assert api.message(relaxed)["progress"] != 100
        assert api.wait(relaxed)["progress"] == 100

    def test_a_relax_flag_in_the_prompt_overrides_the_mode(
        self, api: Api, fixed_durations: EmulatorServer
    ) -> None:
        relaxed = api.submit("/v2/imagine", msg="a cat --relax")
        fast = api.submit("/v2/imagine", msg="a cat")
        api.wait(fast)
        assert api.message(relaxed)["progress"] != 100

    def test_used_up_fast_hours_end_fast_jobs_but_not_relaxed_ones(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.configure(fast_hours=0.001)
        assert "imageUrl" in api.imagine("uses up the fast hours")
        assert api.imagine("one more")["content"] == "NO_FAST_HOURS"
        assert "imageUrl" in api.imagine("one more --relax")
        assert api.result("/v2/info")["content"]["Fast Time Remaining"].startswith("0.00/0.0 hours")


class TestReproducibility:
    def seeds(self, api: Api) -> tuple[list[str], list[str]]:
        """The seeds and ids of a small fixed run."""
        results = [api.imagine("a fox"), api.imagine("an owl")]
        results.append(api.press(results[0], "V2"))
        seeds = [api.press(result, "✉️")["seed"] for result in results]
        return seeds, [result["originatingMessageId"] for result in results]

    def test_the_same_seed_replays_the_same_run_with_new_message_ids(
        self, api: Api, emu: EmulatorServer
    ) -> None:
        emu.configure(seed=7)
        emu.reset()
        seeds, ids = self.seeds(api)
        emu.reset()
        again, new_ids = self.seeds(api)
        assert again == seeds
        assert not set(ids) & set(new_ids)
        emu.configure(seed=8)
        emu.reset()
        assert self.seeds(api)[0] != seeds
