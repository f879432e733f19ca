"""The fleet simulator (fleetserve.simulate): checked against queueing theory (Erlang C, the
supermarket model of two choices, Little's law), against the router's own balancer (the same
picks from the same state and draws), and as a user runs it (scenarios, sweeps, the CLI)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fleetserve.fleet.balancer import POLICIES, Balancer, Choice, EndpointSpec
from fleetserve.simulate import core, scenario
from fleetserve.simulate.simulator import simulate, simulate_sweep
from fleetserve.simulate.theory import erlang_c, mmc_mean_wait, supermarket_tail
from fleetserve.simulate.traffic import ArrivalStream, Sizes
from fleetserve.loadtest.profile import parse_profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the event loop compiles (about 30 s, then cached) and runs millions of requests


def run(data: dict) -> dict:
    return simulate(scenario.from_dict(data))


def assert_littles_law(result: dict) -> None:
    little = result["littles_law"]
    assert little["ratio"] == pytest.approx(1.0, abs=0.01), little


# --- against theory ------------------------------------------------------------------------------
def test_erlang_c_formula_on_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert mmc_mean_wait(0.9, 1.0, 1) == pytest.approx(9.0)  # M/M/1: rho / (mu - lambda)


@pytest.mark.parametrize("slots,load,seconds", [(8, 0.8, 10_000), (2, 0.85, 40_000)])
def test_an_mmc_pod_waits_as_erlang_c_says(slots, load, seconds):
    rate = load * slots * 50  # 20 ms mean service: 50 per second per slot
    result = run({"traffic": {"profile": f"constant:{rate}@{seconds}s"},
                  "pods": {"model": "mmc", "slots": slots, "service_ms": 20, "count": 1},
                  "routers": {"max_inflight_per_endpoint": 0}, "interval": 10, "window": 1000, "warmup": 1000,
                  "seed": 1})
    expected = mmc_mean_wait(rate, 50.0, slots) * 1e3
    assert result["overall"]["queue_mean_ms"] == pytest.approx(expected, rel=0.03)
    assert result["overall"]["availability"] == 1.0
    assert_littles_law(result)


@pytest.mark.parametrize("policy,choices", [("random", 1), ("p2c", 2)])
def test_250_pods_fill_as_the_supermarket_model_says(policy, choices):
    """One-slot pods, exponential service, load 0.9: the fraction of pods holding at least i
    requests is load^i for random assignment, load^(2^i - 1) for two choices (Mitzenmacher)."""
    result = run({"traffic": {"profile": "constant:225@12000s"},
                  "pods": {"model": "mmc", "slots": 1, "service_ms": 1000, "count": 250},
                  "routers": {"policy": policy, "max_inflight_per_endpoint": 0}, "interval": 10, "window": 1000,
                  "warmup": 2000, "seed": 3})
    for i in range(1, 5):
        assert result["occupancy_tail"][str(i)] == pytest.approx(supermarket_tail(0.9, i, choices), abs=0.02), i
    assert_littles_law(result)


def test_littles_law_holds_for_a_run_cut_short_with_requests_still_in_flight():
    result = run({"traffic": {"profile": "constant:2000@20s"},
                  "pods": {"model": "batching", "slots": 16, "count": 4, "step_base_ms": 20},
                  "drain": False, "interval": 1})
    assert result["overall"]["completed"] < result["requests"]  # overloaded: much still held at the end
    assert_littles_law(result)


# --- the same picks as the router --------------------------------------------------------------
class Draws:
    """A random stream for the balancer: the values given, in order."""

    def __init__(self, values):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_simulator_picks_as_the_router_balancer_does(policy):
    gen = random.Random(7)
    for trial in range(150):
        n = gen.randint(1, 9)
        cap = gen.choice([0, 2, 4])
        weights = [gen.choice([1.0, 1.0, 2.0, 0.5]) for _ in range(n)]
        b = Balancer(policy, max_inflight=cap or None)
        b.update([EndpointSpec(f"p{i}", weight=w) for i, w in enumerate(weights)])
        eps = list(b.endpoints.values())
        usable = np.arange(n, dtype=np.int64)
        inflight = np.zeros(n, np.int64)
        current = np.zeros(n)
        for step in range(30):
            if gen.random() < 0.4:  # some requests end
                for i in range(n):
                    if inflight[i] and gen.random() < 0.5:
                        inflight[i] -= 1
                        b.finish(eps[i])
            u = [gen.random() for _ in range(4)]
            b.rng = Draws(u)
            got = b.pick()
            sim = core.pick(core.POLICY_IDS[policy], cap, usable, n, inflight, np.array(weights), current, *u)
            if got is None:
                assert sim == {Choice.ALL_AT_CAP: -core.ERR_AT_CAP - 1}[b.last_failure], (trial, step)
                continue
            assert sim == eps.index(got), (trial, step, policy)
            b.start(got)
            inflight[sim] += 1


# --- as a user runs it -----------------------------------------------------------------------------
def test_scenario_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown key.*slotz"):
        scenario.from_dict({"traffic": {"profile": "constant:10@1s"}, "pods": {"slotz": 4}})
    with pytest.raises(ValueError, match="pods.slots: expected an integer"):
        scenario.from_dict({"traffic": {"profile": "constant:10@1s"}, "pods": {"slots": "many"}})
    with pytest.raises(ValueError, match="routers.policy 'fastest'"):
        scenario.from_dict({"traffic": {"profile": "constant:10@1s"}, "routers": {"policy": "fastest"}})
    with pytest.raises(ValueError, match="needs a traffic section"):
        scenario.from_dict({"pods": {}})
    with pytest.raises(ValueError, match="target_per_pod must be positive"):
        scenario.from_dict({"traffic": {"profile": "constant:10@1s"}, "autoscaler": {"target_per_pod": 0}})


def test_poisson_and_gamma_arrivals_follow_the_profile():
    profile = parse_profile("ramp:0..2000@20s+constant:2000@20s")
    for kind, cv in (("poisson", 1.0), ("gamma", 3.0)):
        stream = ArrivalStream(profile, kind, cv, seed=5)
        times = np.concatenate([stream.until(t) for t in np.arange(0.5, 41, 0.5)])
        assert np.all(np.diff(times) >= 0) and times[-1] <= 40.0
        assert len(times) == pytest.approx(profile.expected_requests(), rel=0.05 if kind == "gamma" else 0.02)
        gaps = np.diff(times[times > 20.0])  # the constant part: gaps' coefficient of variation
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.15)


def test_arrival_times_from_a_file_are_replayed_exactly(tmp_path):
    times = tmp_path / "sent.txt"
    times.write_text("# a load test's send times\n0.5\n0.25\n\n3.0\n7.5\n12.0\n")
    result = run({"traffic": {"profile": "constant:1000@10s", "arrival_times_file": str(times)}, "window": 5,
                  "pods": {"count": 1, "slots": 4, "step_base_ms": 5, "step_per_seq_ms": 0.0}})
    # the profile sets the run's length (10 s): the time past it is not sent; its rate is not used
    assert [w["arrived"] for w in result["windows"]] == [3, 1]
    assert result["overall"]["p50_ms"] == pytest.approx(250, rel=0.02)  # 50 steps of 5 ms, never batched
    for text, error in (("1.0\nsoon\n", "is not a time"), ("-1\n", "is not a time >= 0")):
        times.write_text(text)
        with pytest.raises(ValueError, match=error):
            run({"traffic": {"profile": "constant:1@2s", "arrival_times_file": str(times)}})
    with pytest.raises(ValueError, match="does not exist"):
        run({"traffic": {"profile": "constant:1@2s", "arrival_times_file": str(tmp_path / "none")}})


def test_request_sizes_from_a_file_keep_prompt_and_output_together(tmp_path):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("# prompt output\n10 3\n40 30\n")
    assert Sizes("50", 0, str(sizes)).values.tolist() == [10.0, 40.0]
    with pytest.raises(ValueError, match="uniform:A..B"):
        Sizes("lots")
    result = run({"traffic": {"profile": "constant:500@10s", "sizes_file": str(sizes)},
                  "pods": {"count": 2, "slots": 32, "step_base_ms": 5, "step_per_seq_ms": 0.0}})
    # 3 or 30 output tokens at 5 ms a step: service times of about 15 or 150 ms, nothing in between
    assert result["overall"]["service_p50_ms"] in (pytest.approx(15, rel=0.05), pytest.approx(150, rel=0.05))


def test_the_autoscaler_scales_up_on_a_ramp_and_down_after_it():
    result = run({"traffic": {"profile": "constant:200@30s+constant:2000@60s+constant:100@150s"},
                  "pods": {"count": 2, "slots": 64, "step_base_ms": 10, "step_per_seq_ms": 0.1, "cold_start": "5s",
                           "step_per_prompt_token_ms": 0.0},
                  "autoscaler": {"target_per_pod": 60, "min_replicas": 1, "max_replicas": 60,
                                 "scale_down_window": "30s", "scale_down_period": "2s"},
                  "interval": 1, "window": 5})
    tl = result["timeline"]
    at = {row["t"]: row for row in tl}
    before = at[29.0]["ready"]
    decided = next(row["t"] for row in tl if row["t"] > 30 and row["desired"] > before)
    assert decided <= 31.0 + 10  # within the scale-up window of the step
    ready_more = next(row["t"] for row in tl if row["t"] > 30 and row["ready"] > before)
    assert ready_more <= decided + 5 + 1  # the cold start, plus one decision interval
    assert max(row["ready"] for row in tl) > 3 * before
    assert tl[-1]["ready"] < max(row["ready"] for row in tl) / 2  # back down once the peak has passed
    assert result["pods"]["started"] > 2
    assert_littles_law(result)


def test_failed_pods_lose_requests_unless_the_router_retries():
    base = {"traffic": {"profile": "constant:2000@60s"},
            "pods": {"count": 10, "slots": 64, "step_base_ms": 10, "step_per_seq_ms": 0.1, "cold_start": "2s",
                     "failures_per_hour": 300},
            "routers": {"replicas": 2}, "seed": 4}
    off = run(base | {"routers": {"replicas": 2, "retry": False}})
    on = run(base)
    assert off["overall"]["error_kinds"].get("pod failed (502)", 0) > 0
    assert on["pods"]["retries"] > 0
    assert on["overall"]["availability"] > off["overall"]["availability"]
    assert_littles_law(on)


def test_a_slow_pod_hurts_round_robin_far_more_than_p2c():
    """The router benchmark's setup (BENCHMARKS.md, router section): 4 pods of 4 slots, exponential
    service of 20 ms and one pod at 60 ms, 85% of the capacity offered for 20 s."""
    data = {"traffic": {"profile": "constant:566.7@20s"},
            "pods": {"model": "mmc", "count": 4, "slots": 4, "service_ms": 20, "slow_pods": 1, "slow_factor": 3},
            "routers": {"max_inflight_per_endpoint": 0}, "interval": 1, "window": 20, "seed": 2}
    p99 = {policy: run(data | {"routers": {"policy": policy, "max_inflight_per_endpoint": 0}})["overall"]["p99_ms"]
           for policy in ("p2c", "round_robin")}
    assert p99["p2c"] < 0.1 * p99["round_robin"], p99


def test_pods_sharing_a_hosts_cores_step_slower_when_more_are_busy_than_cores():
    data = {"traffic": {"profile": "constant:300@30s"},
            "pods": {"count": 4, "slots": 32, "step_base_ms": 5, "step_per_seq_ms": 0.2}, "window": 30}
    own = run(data)
    shared = run(data | {"pods": data["pods"] | {"host_cores": 2}})
    assert shared["overall"]["service_p50_ms"] > 1.5 * own["overall"]["service_p50_ms"]
    assert_littles_law(shared)


def test_starting_pods_take_cores_from_the_serving_ones_on_a_shared_host():
    """One core, one pod serving, a second pod asked for in the first seconds with a 60 s cold
    start: with start_cores 1 the serving pod's steps take twice as long from then on."""
    from fleetserve.simulate.simulator import Run

    data = {"traffic": {"profile": "constant:100@15s"}, "window": 15, "interval": 1,
            "pods": {"count": 1, "slots": 64, "step_base_ms": 5, "step_per_seq_ms": 0.0, "cold_start": "60s",
                     "host_cores": 1},
            "autoscaler": {"target_per_pod": 1, "min_replicas": 1, "max_replicas": 2, "scale_up_window": 1}}
    alone = run(data)
    r = Run(scenario.from_dict(data | {"pods": data["pods"] | {"start_cores": 1}}))
    shared = r.run()
    assert shared["overall"]["service_p50_ms"] == pytest.approx(2 * alone["overall"]["service_p50_ms"], rel=0.1)
    assert r.state.si[core.SI_STARTING] == 1  # the second pod, still starting; never counted below zero
    assert_littles_law(shared)
    with pytest.raises(ValueError, match="pods.start_cores"):
        scenario.from_dict({"traffic": {"profile": "constant:1@1s"}, "pods": {"start_cores": -1}})


def test_a_service_spread_widens_the_tail_keeps_the_mean_and_littles_law():
    data = {"traffic": {"profile": "constant:200@60s"}, "window": 60,
            "pods": {"count": 4, "slots": 32, "step_base_ms": 5, "step_per_seq_ms": 0.1}}
    exact = run(data)["overall"]
    spread = run(data | {"pods": data["pods"] | {"service_spread": 0.3}})
    assert spread["overall"]["mean_ms"] == pytest.approx(exact["mean_ms"], rel=0.05)
    assert spread["overall"]["p99_ms"] > 1.3 * exact["p99_ms"]
    assert spread["overall"]["p90_ms"] > exact["p90_ms"]
    assert_littles_law(spread)
    with pytest.raises(ValueError, match="pods.service_spread"):
        scenario.from_dict({"traffic": {"profile": "constant:1@1s"}, "pods": {"service_spread": -0.1}})


def test_the_spread_fit_recovers_a_known_spread():
    """Rows as `simulate calibrate` measures them, made by simulating a pod whose requests spread
    with sigma 0.2 (the measured pod here is a simulated one): the fit finds that sigma again, and
    no spread for a pod whose requests have none."""
    from fleetserve.simulate.calibrate import fit_spread

    pods = {"model": "batching", "slots": 16, "step_points_ms": [[1, 5.0], [4, 6.0], [12, 10.0]]}

    def rows(sigma: float) -> list[dict]:
        out = []
        for rate in (2, 6, 10):
            o = run({"traffic": {"profile": f"constant:{rate}@300s"}, "window": 300, "seed": 7,
                     "pods": pods | {"service_spread": sigma}})["overall"]
            out.append({"rate": rate, "achieved": o["throughput"], "seconds": 300, "errors": 0, "slots": 16,
                        "batch": 3.0, "mean_e2el_ms": o["mean_ms"], "p90_e2el_ms": o["p90_ms"], "output_tokens": 50})
        return out

    assert fit_spread(pods, rows(0.2), seconds=300)["service_spread"] == pytest.approx(0.2, abs=0.04)
    assert fit_spread(pods, rows(0.0), seconds=300)["service_spread"] <= 0.04


def test_measured_step_points_are_interpolated_and_a_line_of_points_runs_as_the_line():
    pods = scenario.Pods(slots=8, step_points_ms=[[6.0, 14.0], [2.0, 6.0], [4.0, 6.0]])
    # flat below the first point, interpolated between points, the last two's slope beyond the last
    assert scenario.step_table(pods) == pytest.approx([0.006, 0.006, 0.006, 0.006, 0.006, 0.010, 0.014, 0.018, 0.022])
    line = {"traffic": {"profile": "constant:300@20s"}, "pods": {"count": 2, "slots": 16, "step_base_ms": 5,
                                                                 "step_per_seq_ms": 0.4}, "window": 20}
    points = line | {"pods": {"count": 2, "slots": 16, "step_points_ms": [[1, 5.4], [16, 11.4]]}}
    assert run(points)["overall"] == run(line)["overall"]
    for bad in ([], [[0, 5]], [[1, -1]], [[1, 5], [1, 6]], "fast", [[1]]):
        with pytest.raises(ValueError, match="pods.step_points_ms"):
            scenario.from_dict({"traffic": {"profile": "constant:1@1s"}, "pods": {"step_points_ms": bad}})


def test_calibrated_points_are_made_monotone():
    from fleetserve.simulate.calibrate import monotone_points

    assert monotone_points([(3.0, 7.6), (1.3, 7.2), (1.9, 7.64), (6.4, 11.8)]) == \
        [[1.3, 7.2], [1.9, 7.62], [3.0, 7.62], [6.4, 11.8]]
    assert monotone_points([(1, 5), (2, 4), (3, 3), (4, 6)]) == [[1, 4.0], [2, 4.0], [3, 4.0], [4, 6.0]]


def test_a_full_event_heap_is_an_error_not_a_write_past_the_arrays():
    from fleetserve.simulate.simulator import Run

    r = Run(scenario.from_dict({"traffic": {"profile": "constant:1000@2s"}, "pods": {"count": 4}}))
    s = r.state
    s.hk, s.hkind, s.ha, s.hb, s.hgen = np.zeros(2), *(np.zeros(2, np.int64) for _ in range(4))
    r.st = s.arrays()
    with pytest.raises(ValueError, match="event heap is full"):
        r.run()


def test_a_sweep_runs_each_setting():
    sc = scenario.from_dict({"traffic": {"profile": "constant:1000@10s"}, "pods": {"count": 4},
                             "sweep": {"routers.policy": ["p2c", "random"], "pods.count": [4, 8]}})
    result = simulate_sweep(sc)
    labels = [r["label"] for r in result["sweep"]]
    assert labels == ["routers.policy=p2c, pods.count=4", "routers.policy=p2c, pods.count=8",
                      "routers.policy=random, pods.count=4", "routers.policy=random, pods.count=8"]
    assert [r["result"]["settings"]["pods"]["count"] for r in result["sweep"]] == [4, 8, 4, 8]


def test_every_shipped_scenario_loads():
    paths = sorted((ROOT / "deploy" / "scenarios").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"fleet-200k", "balancer-policies", "router-replicas", "spike-cold-start",
                                       "availability-target"}
    for path in paths:
        sc = scenario.load(path)
        assert sc.run_seconds > 0


def test_the_cli_writes_the_report_and_applies_overrides(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "fleetserve", "simulate", str(ROOT / "deploy/scenarios/fleet-200k.yaml"),
                           "--set", "traffic.profile=diurnal:4k..20k@30s", "--set", "pods.count=25",
                           "--set", "autoscaler.min_replicas=6", "--set", "autoscaler.max_replicas=32",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "fleet-200k" in proc.stdout and "p99 ms" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["traffic"]["profile"] == "diurnal:4k..20k@30s"
    assert report["simulated_seconds"] >= 30 and report["requests"] > 300_000
    assert (out / "report.png").stat().st_size > 10_000
    assert "<svg" in (out / "report.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "fleetserve", "simulate", str(ROOT / "deploy/scenarios/fleet-200k.yaml"),
                          "--set", "routers.polcy=p2c", "--quiet"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown key(s) polcy" in bad.stderr


# --- calibration from a real pod ------------------------------------------------------------------
def test_the_fit_recovers_a_known_step_model_and_says_when_terms_are_collinear():
    from fleetserve.simulate.calibrate import fit

    rows = [{"batch": b, "prompt_tokens_per_step": p, "step_ms": 5 + 0.3 * b + 0.02 * p}
            for b, p in ((1, 40), (4, 10), (8, 200), (16, 30), (32, 500))]
    f = fit(rows)
    assert not f["collinear"] and f["r2"] == pytest.approx(1.0)
    assert f["params"] == {"step_base_ms": pytest.approx(5), "step_per_seq_ms": pytest.approx(0.3),
                           "step_per_prompt_token_ms": pytest.approx(0.02)}
    same_sizes = [{"batch": b, "prompt_tokens_per_step": b, "step_ms": 4 + 0.5 * b} for b in (1, 2, 4, 8, 16)]
    f = fit(same_sizes)
    assert f["collinear"] and f["params"]["step_per_seq_ms"] == pytest.approx(0.5)
    assert f["params"]["step_per_prompt_token_ms"] == 0.0


def test_calibrating_a_real_pod_gives_a_model_the_simulator_answers_like_it(tmp_path):
    from serving import running_server

    with running_server(ROOT / "models" / "correct-6m", "--frontends", "0") as url:
        out = tmp_path / "calib.json"
        # Rates far apart: the per-sequence term (about 0.5 ms a sequence here) has to stand out from a busy
        # host's step-time noise, which at 4, 8 and 16 req/s once fitted it to nothing (CI)
        proc = subprocess.run([sys.executable, "-m", "fleetserve", "simulate", "calibrate", url, "--rates", "4,12,24",
                               "--seconds", "8", "--json", str(out)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        missing = subprocess.run([sys.executable, "-m", "fleetserve", "simulate", "calibrate"], capture_output=True,
                                 text=True, timeout=60)
        assert missing.returncode == 2 and "give the pod's URL" in missing.stderr
    measured = json.loads(out.read_text())
    pods = measured["pods"]
    assert pods["slots"] == 64 and pods["step_base_ms"] > 0 and pods["step_per_seq_ms"] > 0
    assert [b for b, _ in pods["step_points_ms"]] == sorted(round(r["batch"], 3) for r in measured["steps"])
    assert measured["fit"]["r2"] > 0.8
    # 12 req/s, well below the capacity the fit implies: the simulated pod's steps last as the measured ones
    # did (near that capacity the simulated queue, and so its batch, grows with any error in the slope)
    step = measured["steps"][1]
    sim = run({"traffic": {"profile": f"constant:{step['rate']}@60s"}, "pods": {"calibration": str(out)},
               "window": 60})
    batch = sim["littles_law"]["mean_in_system"]
    predicted = float(np.interp(batch, *zip(*pods["step_points_ms"])))
    assert predicted == pytest.approx(step["step_ms"], rel=0.5)
    assert sim["overall"]["p50_ms"] == pytest.approx(50 * step["step_ms"], rel=0.5)
    with pytest.raises(ValueError, match="does not exist"):
        scenario.from_dict({"traffic": {"profile": "constant:1@1s"}, "pods": {"calibration": str(tmp_path / "no")}})


def test_bench_simulate_compares_a_finished_fleet_run_with_its_simulation(tmp_path):
    """The comparison half of `fleetserve bench-simulate --from DIR` on a FAKE demo-fleet folder (its
    files written here, shaped as demo-fleet writes them; the real run is the benchmark's own job)."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text(json.dumps({
        "target_per_pod": 1.7, "autoscaler": {"min_replicas": 1, "max_replicas": 3, "scale_up_window": 10.0,
                                              "scale_down_window": 30.0, "scale_down_period": 10.0}, "scale_ups_at_s": [21.0, 50.0], "scale_downs_at_s": [128.0, 138.0], "load_t0": 3.0}))
    events = [{"t": 3.0 + t, "ready": 1 + (t >= 25) + (t >= 54) - (t >= 128) - (t >= 138),
               "desired": 1 + (t >= 21) + (t >= 50) - (t >= 128) - (t >= 138)} for t in range(0, 180)]
    (demo / "fleet-events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    windows = [{"e2el": {"p99": 300.0}} for _ in range(36)]
    ramp = "ramp:2..18@60s+constant:18@30s+constant:2@90s"
    sent = parse_profile(ramp).arrivals("poisson", 3)
    (demo / "report.json").write_text(json.dumps({
        "profile": ramp, "arrival": "poisson", "seed": 3,
        "summary": {"windows": windows, "overall": {"e2el": {"p99": 400.0}, "sent_requests": len(sent)}}}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration.json").write_text(json.dumps({"pods": {"model": "batching", "slots": 16, "step_base_ms": 4.0,
                                                               "step_per_seq_ms": 0.5}, "fit": {"r2": 1.0}}))
    proc = subprocess.run([sys.executable, "-m", "fleetserve", "bench-simulate", "--out", str(out), "--from", str(demo),
                           "--seeds", "3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "sim-vs-fleet.json").read_text())
    assert result["measured_cold_starts_s"] == [4.0, 4.0]
    assert result["scale_ups_at_s"]["measured"] == [21.0, 50.0]
    assert result["scale_ups_at_s"]["simulated"]  # the simulated fleet scaled up on the ramp too
    assert result["seeds"] == 3 and result["bound_s"] == 5.0  # one decision interval + the longest cold start
    for lo_hi, median in zip(result["scale_ups_at_s"]["simulated_range"], result["scale_ups_at_s"]["simulated"]):
        assert lo_hi[0] <= median <= lo_hi[1]
    assert result["windows_compared"] == 36
    assert all(r["measured_p99_ms"] == 300.0 for r in result["p99_per_window"])
    # the load test's own send times (its seed's draw), replayed after the simulated lead of one window
    assert result["arrivals_replayed"]
    replayed = np.loadtxt(out / "arrivals.txt")
    assert replayed == pytest.approx(sent + 5.0, abs=1e-5)
    assert result["simulation"]["overall"]["arrived"] == len(sent)


def test_scale_moments_count_each_level_so_a_jump_lines_up_with_single_steps():
    from fleetserve.benchmarks.sim_vs_fleet import _moments

    rows = [{"t": t, "n": n} for t, n in enumerate([1, 1, 3, 3, 3, 2, 2, 1, 1])]
    assert _moments(rows, "n", 0) == ([2, 2], [5, 7])
    steps = [{"t": t, "n": n} for t, n in enumerate([1, 2, 3, 3, 2, 1])]
    assert _moments(steps, "n", 0.5) == ([0.5, 1.5], [3.5, 4.5])


def test_listed_cold_starts_are_taken_in_turn():
    """A real run's measured starts replayed: the first pod started takes the first."""
    data = {"traffic": {"profile": "constant:2000@20s"}, "window": 20,
            "pods": {"count": 1, "slots": 16, "step_base_ms": 5, "step_per_seq_ms": 0.3, "cold_start": "2s,6s,"},
            "autoscaler": {"target_per_pod": 4, "max_replicas": 3}}
    timeline = run(data)["timeline"]
    assert timeline[0]["desired"] == 3
    ready_at = [next(r["t"] for r in timeline if r["ready"] >= k) for k in (2, 3)]
    assert 3 <= ready_at[0] <= 4 and 7 <= ready_at[1] <= 8, ready_at
    assert scenario.Pods(cold_start="2s,6s,").cold_start_range() == (2.0, 6.0)
    with pytest.raises(ValueError):
        scenario.from_dict(data | {"pods": data["pods"] | {"cold_start": "2s,soon"}})
