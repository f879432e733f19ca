"""A pod with several engine cores: which core a request goes to, the pod's stats from the
cores', and how many cores a pod runs by default (pure functions; the processes themselves
are started in test_pod.py and test_liveness.py)."""

from __future__ import annotations

import pytest

from fleetserve.benchmarks.correct import layout_args
from fleetserve.engine.core_pool import fewest_in_flight
from fleetserve.engine.outputs import EngineStats, combined_stats
from fleetserve.server import pod


def test_a_request_goes_to_the_ready_core_with_the_fewest_in_flight():
    assert fewest_in_flight([3, 1, 2], [True, True, True], start=0) == 1
    assert fewest_in_flight([3, 1, 2], [True, False, True], start=0) == 2  # a stalled core gets none
    assert fewest_in_flight([3, 1, 2], [False, False, False], start=0) == 1  # unless all are stalled


def test_idle_cores_take_turns():
    assert [fewest_in_flight([0, 0, 0], [True] * 3, start=s) for s in range(4)] == [0, 1, 2, 0]
    assert fewest_in_flight([1, 0, 0], [True] * 3, start=0) == 1


def test_the_pods_stats_add_the_cores_up_but_the_latest_step_and_clock():
    a = EngineStats(waiting=1, running=2, steps=10, last_step_s=0.5, last_batch_size=3, inflight_seconds=4.0,
                    clock=100.0, accepted_tokens=7)
    b = EngineStats(waiting=0, running=5, steps=4, last_step_s=0.2, last_batch_size=5, inflight_seconds=1.5,
                    clock=100.2, accepted_tokens=1)
    c = combined_stats([a, b])
    assert (c.waiting, c.running, c.steps, c.last_batch_size, c.accepted_tokens) == (1, 7, 14, 8, 8)
    assert (c.last_step_s, c.clock, c.inflight_seconds) == (0.5, 100.2, 5.5)
    assert combined_stats([a]) is a


def test_a_small_model_on_a_cpu_gets_one_single_thread_core_per_host_core(monkeypatch):
    monkeypatch.setattr(pod.os, "sched_getaffinity", lambda _: set(range(2)))
    assert pod.default_engines(6_200_000, "cpu", None) == 2
    assert pod.default_threads(2) == 1
    assert pod.default_engines(494_000_000, "cpu", None) == 1  # the 0.5B shape: its weights read once
    assert pod.default_threads(1) == 2
    assert pod.default_engines(6_200_000, "cuda", None) == 1
    assert pod.default_engines(6_200_000, "cpu", 2) == 1  # --threads given: one core with them
    monkeypatch.setattr(pod.os, "sched_getaffinity", lambda _: set(range(32)))
    assert pod.default_engines(6_200_000, "cpu", None) == pod.MAX_ENGINES
    assert pod.default_threads(pod.MAX_ENGINES) == 32 // pod.MAX_ENGINES
    monkeypatch.setattr(pod.os, "sched_getaffinity", lambda _: {0})
    assert pod.default_engines(6_200_000, "cpu", None) == 1


def test_bench_correct_layouts_name_frontends_and_optionally_engine_cores():
    assert layout_args("0") == ["--frontends", "0"]
    assert layout_args("1/2") == ["--frontends", "1", "--engines", "2"]
    for bad in ("", "x", "1/", "1/a", "-1"):
        with pytest.raises(ValueError, match="FRONTENDS/ENGINES"):
            layout_args(bad)


def test_the_pools_stats_follow_each_new_heartbeat_of_a_member():
    """The pool keeps the sum between heartbeats (every request reads it) and redoes it
    when a member's stats change (clients not started: their stats set by hand, as a
    heartbeat sets them)."""
    from fleetserve.engine.core_client import CoreClient
    from fleetserve.engine.core_pool import CorePool
    from fleetserve.engine.ipc import Welcome

    clients = [CoreClient(f"ipc:///nonexistent/core{i}", Welcome(256, 4, 100)) for i in range(2)]
    clients[0].stats, clients[1].stats = EngineStats(running=2), EngineStats(running=3)
    pool = CorePool(clients)
    assert pool.snapshot().running == 5 and pool.snapshot() is pool.snapshot()
    clients[1].stats = EngineStats(running=1, waiting=4)
    assert (pool.snapshot().running, pool.snapshot().waiting) == (1 + 2, 4)
    assert pool.max_num_seqs == 8
