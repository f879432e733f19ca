import pytest
"""`fleetserve bench-router` end to end, short: real proxies and stub servers as processes
(HAProxy left out here: installing it is the benchmark's job, not the test suite's)."""

from fleetserve.benchmarks.router import haproxy_config, run_router_bench

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)


def test_bench_router_runs_and_reports_every_figure():
    out = run_router_bench(["fleetserve", "aiohttp"], seconds=0.6, concurrency=16, tail_seconds=2.0,
                           latency_shares=(0.05,), latency_rounds=1, cpu_cap=0.5, quiet=True)
    t = out["throughput"]
    for stack in ("fleetserve", "aiohttp"):
        assert t[stack]["requests_per_s"] > 100 and t[stack]["errors"] == 0
        assert 0 < t[stack]["proxy_cpu_util"] <= 1.1
    point = out["latency"][0]
    assert point["fleetserve"]["errors"] == 0 and "added_p99_ms" in point["fleetserve"]
    tail = out["tail"]
    assert tail["round_robin"]["share_to_slow"] > tail["p2c"]["share_to_slow"]
    assert tail["p2c_p99_over_round_robin_p99"] > 0


def test_haproxy_config_balances_with_two_random_choices():
    cfg = haproxy_config(9000, ["http://127.0.0.1:8101", "http://127.0.0.1:8102"])
    assert "balance random(2)" in cfg and "nbthread 1" in cfg
    assert "server s1 127.0.0.1:8102" in cfg and "bind 127.0.0.1:9000" in cfg
