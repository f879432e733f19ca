"""One simulated run: traffic in chunks of one control interval, the compiled event loop over
each chunk, and between chunks what the real fleet does every interval: the autoscaler (the
real policy, fleetserve.fleet.autoscaler) observes the ready pods' in-flight counts and decides,
and pods start (after a cold start) or drain. Returns every figure as a dict (report.py writes it).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fleetserve.fleet.autoscaler import Autoscaler
from fleetserve.simulate import core
from fleetserve.simulate.core import State
from fleetserve.simulate.scenario import Scenario, expand, step_table, to_dict
from fleetserve.simulate.stats import BIN_LO, BIN_RATIO, BINS, percentiles
from fleetserve.simulate.traffic import ArrivalStream, Sizes

DRAIN_LIMIT = 600.0  # seconds simulated after the traffic ends, at most, to answer what is left


class Run:
    def __init__(self, sc: Scenario):
        self.sc = sc
        p, r = sc.pods, sc.routers
        self.places = max(2 * sc.max_pods + 8, p.count + 8)
        horizon = sc.run_seconds + (DRAIN_LIMIT if sc.drain else 0.0)
        self.state = State(self.places, p.slots, p.max_queue, r.replicas, int(math.ceil(horizon / sc.window)) + 1, BINS)
        self.st = self.state.arrays()
        listed = p.cold_start_list()
        pr = self.pr = np.zeros(core.PR_N + p.slots + 1 + len(listed))
        pr[core.PR_N:core.PR_N + p.slots + 1] = step_table(p)
        pr[core.PR_N + p.slots + 1:] = listed
        pr[core.PR_COLD_N] = len(listed)
        pr[core.PR_MODEL] = core.MMC if p.model == "mmc" else core.BATCHING
        pr[core.PR_POLICY] = core.POLICY_IDS[r.policy]
        pr[core.PR_CAP] = r.max_inflight_per_endpoint
        pr[core.PR_RETRY] = 1.0 if r.retry else 0.0
        pr[core.PR_PER_TOKEN] = p.step_per_prompt_token_ms / 1e3
        pr[core.PR_DELAY] = sc.discovery_delay
        pr[core.PR_FAIL_RATE] = p.failures_per_hour / 3600.0
        pr[core.PR_COLD_LO], pr[core.PR_COLD_HI] = p.cold_start_range()
        pr[core.PR_WINDOW] = sc.window
        pr[core.PR_HOST_CORES] = p.host_cores
        pr[core.PR_START_CORES] = p.start_cores
        pr[core.PR_BIN_LO] = BIN_LO
        pr[core.PR_BIN_LOG_RATIO] = math.log(BIN_RATIO)
        core.seed(sc.seed)
        self.rng = np.random.default_rng([sc.seed, 1])
        self.arrivals = ArrivalStream(sc.profile, sc.traffic.arrivals, sc.traffic.cv, seed=[sc.seed, 2],
                                      times_file=sc.traffic.arrival_times_file)
        t = sc.traffic
        self.prompt = Sizes(t.prompt_tokens, 0, t.sizes_file)
        self.output = Sizes(t.output_tokens, 1, t.sizes_file)
        self.autoscaler = Autoscaler(sc.autoscaler) if sc.autoscaler else None
        self.timeline: list[dict[str, Any]] = []
        self.commands: list[tuple[int, int]] = []  # for the next run_until
        self.arrived = 0
        self.started = 0
        self.no_place = 0

    # --- pods -----------------------------------------------------------------------------------
    def _start(self, t: float, warm: bool, slow: bool = False) -> bool:
        free = np.flatnonzero(self.state.pstate == core.FREE)
        if not len(free):
            self.no_place += 1
            return False
        i = int(free[0])
        slow = slow or self.rng.random() < self.sc.pods.slow_fraction
        self.state.speed[i] = self.sc.pods.slow_factor if slow else 1.0
        self.state.pstate[i] = core.STARTING  # the place is taken; the next run_until starts it
        self.commands.append((core.CMD_START_WARM if warm else core.CMD_START, i))
        self.started += 1
        return True

    def _active(self) -> np.ndarray:
        s = self.state.pstate
        return np.flatnonzero((s == core.STARTING) | (s == core.READY) | (s == core.RESTARTING))

    def _scale(self, t: float, desired: int) -> None:
        active = self._active()
        if desired > len(active):
            for _ in range(desired - len(active)):
                self._start(t, warm=False)
        elif desired < len(active):
            s = self.state
            # as the local supervisor does: starting pods first, then the least loaded
            order = sorted(active, key=lambda i: (s.pstate[i] == core.READY, s.nrun[i] + s.nq[i]))
            self.commands += [(core.CMD_DRAIN, int(i)) for i in order[:len(active) - desired]]

    # --- traffic ------------------------------------------------------------------------------------
    def _chunk(self, t_end: float) -> tuple[np.ndarray, ...]:
        sc = self.sc
        at = self.arrivals.until(min(t_end, sc.run_seconds))
        n = len(at)
        rng = self.rng
        rt = rng.integers(sc.routers.replicas, size=n) if sc.routers.replicas > 1 else np.zeros(n, np.int64)
        if sc.traffic.sizes_file:  # keep each request's prompt and output together
            rows = rng.integers(len(self.prompt.values), size=n)
            tok, out = self.prompt.values[rows], self.output.values[rows]
        else:
            tok, out = self.prompt.draw(rng, n), self.output.draw(rng, n)
        if sc.pods.model == "mmc":
            work = rng.exponential(sc.pods.service_ms / 1e3, n)
        else:
            work = 1.0 + np.ceil((out - 1.0) / sc.pods.tokens_per_step)
            sigma = sc.pods.service_spread
            if sigma > 0.0:
                work = work * rng.lognormal(-sigma * sigma / 2, sigma, n)
        u = rng.random((n, 4))
        return at, rt.astype(np.int64), work, tok.astype(float), u

    # --- the run ------------------------------------------------------------------------------------
    def run(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        sc, s, st = self.sc, self.state, self.st
        wall0 = shown = time.perf_counter()
        count = sc.pods.count
        if self.autoscaler:
            count = min(max(count, sc.autoscaler.min_replicas), sc.autoscaler.max_replicas)
        for i in range(count):
            self._start(0.0, warm=True, slow=i < sc.pods.slow_pods)
        t, warm_reset = 0.0, sc.warmup <= 0
        while True:
            t_next = t + sc.interval
            at, rt, work, tok, u = self._chunk(t_next)  # empty once the traffic has ended
            self.arrived += len(at)
            np.add.at(s.arrived, np.minimum((at / sc.window).astype(np.int64), s.W - 1), 1)
            commands = np.array(self.commands, np.int64).reshape(-1, 2)
            self.commands = []
            core.run_until(st, self.pr, commands, t_next, at, rt, work, tok, u)
            t = t_next
            if not warm_reset and t >= sc.warmup:
                s.occupancy[:] = 0.0
                s.last_change[:] = t
                warm_reset = True
            self._control(t, len(at))
            now = time.perf_counter()
            if progress and now - shown >= 5.0:
                shown = now
                progress(f"simulated {t:,.0f}/{sc.run_seconds:,.0f} s, {self.arrived:,} requests, "
                         f"{self.arrived / (now - wall0):,.0f} simulated requests/s, "
                         f"{int((s.pstate == core.READY).sum())} pods ready")
            if t >= sc.run_seconds and (not sc.drain or s.si[core.SI_IN_SYSTEM] == 0
                                     or t >= sc.run_seconds + DRAIN_LIMIT):
                break
        return self._result(t, time.perf_counter() - wall0)

    def _control(self, t: float, arrived: int) -> None:
        s = self.state
        ready = np.flatnonzero(s.pstate == core.READY)
        row = {"t": round(t, 3), "rate": arrived / self.sc.interval, "ready": len(ready),
               "starting": int(((s.pstate == core.STARTING) | (s.pstate == core.RESTARTING)).sum()),
               "draining": int((s.pstate == core.DRAINING).sum()), "in_system": int(s.si[core.SI_IN_SYSTEM])}
        if self.autoscaler is not None:
            self.autoscaler.observe(t, [float(s.nrun[i] + s.nq[i]) for i in ready])
            active = len(self._active())
            d = self.autoscaler.decide(t, active, len(ready))
            if d.desired != active:
                self._scale(t, d.desired)
            row |= {"desired": d.desired, "load": round(d.load, 2), "panic": d.panic}
        self.timeline.append(row)

    # --- figures ------------------------------------------------------------------------------------
    def _result(self, t_end: float, wall: float) -> dict[str, Any]:
        sc, s = self.sc, self.state
        alive = np.flatnonzero(s.pstate != core.FREE)  # credit each pod's time at its last count
        counts = np.minimum(s.nrun[alive] + s.nq[alive], len(s.occupancy) - 1)
        np.add.at(s.occupancy, counts, t_end - s.last_change[alive])
        windows = []
        used = min(s.W, int(math.ceil(t_end / sc.window)))
        for w in range(used):
            start = w * sc.window
            if start >= sc.run_seconds:
                break
            windows.append(self._window_figures(slice(w, w + 1), start, min(start + sc.window, sc.run_seconds)))
        first = int(math.ceil(sc.warmup / sc.window - 1e-9))
        last = max(first + 1, int(math.ceil(sc.run_seconds / sc.window - 1e-9)))
        overall = self._window_figures(slice(first, last), first * sc.window, sc.run_seconds)
        sf, si = s.sf, s.si
        departed = int(si[core.SI_DEPARTED])
        residual = float(((t_end - s.s_arr) * s.s_busy).sum())
        for p in np.flatnonzero(s.nq):
            idx = (s.qhead[p] + np.arange(s.nq[p])) % s.Q
            residual += float((t_end - s.q_arr[p, idx]).sum())
        held = int(si[core.SI_IN_SYSTEM])
        mean_in_system = float(sf[core.SF_AREA_SYSTEM]) / t_end
        throughput = (departed + held) / t_end
        mean_time = float(sf[core.SF_SOJOURN] + residual) / max(departed + held, 1)
        occ = s.occupancy
        tails = {str(i): round(float(occ[i:].sum() / occ.sum()), 5) for i in range(1, 9)} if occ.sum() else {}
        pod_seconds = float(sf[core.SF_AREA_ALIVE])
        return {
            "scenario": sc.name,
            "settings": to_dict(sc),
            "simulated_seconds": round(t_end, 3),
            "requests": self.arrived,
            "wall_seconds": round(wall, 3),
            "simulated_requests_per_s": round(self.arrived / wall, 1) if wall > 0 else None,
            "overall": overall,
            "slo_met": overall["p99_ms"] is not None and overall["p99_ms"] <= sc.slo_p99_ms,
            "windows": windows,
            "timeline": self.timeline,
            "pods": {"pod_hours": round(pod_seconds / 3600.0, 3),
                     "mean_pods": round(pod_seconds / t_end, 3),
                     "mean_ready": round(float(sf[core.SF_AREA_READY]) / t_end, 3),
                     "slot_utilisation": round(float(sf[core.SF_AREA_RUNNING]) / max(pod_seconds * sc.pods.slots, 1e-12),
                                               4),
                     "started": self.started, "retries": int(si[core.SI_RETRIES]),
                     "not_started_no_place": self.no_place},
            "occupancy_tail": tails,  # fraction of pod-time holding at least i requests
            "littles_law": {"mean_in_system": round(mean_in_system, 4), "throughput": round(throughput, 4),
                            "mean_time_in_system_s": round(mean_time, 6),
                            "ratio": round(mean_in_system / (throughput * mean_time), 6) if mean_time > 0 else None},
        }

    def _window_figures(self, w: slice, start: float, end: float) -> dict[str, Any]:
        s = self.state
        e2e = s.hist_e2e[w].sum(axis=0)
        done = int(s.completed[w].sum())
        errors = s.errors[w].sum(axis=0)
        failed = int(errors.sum())
        seconds = max(end - start, 1e-9)
        lat = percentiles(e2e, (50, 90, 99, 99.9))
        out = {"start_s": round(start, 3), "end_s": round(end, 3), "arrived": int(s.arrived[w].sum()),
               "completed": done, "errors": failed,
               "error_kinds": {k: int(v) for k, v in zip(core.ERROR_KINDS, errors) if v},
               "throughput": round(done / seconds, 2),
               "availability": round(done / (done + failed), 6) if done + failed else None,
               "mean_ms": round(float(s.sum_e2e[w].sum()) / done * 1e3, 4) if done else None,
               "queue_mean_ms": round(float(s.sum_queue[w].sum()) / done * 1e3, 4) if done else None,
               "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "p99_9_ms": lat["p99_9"]}
        q, sv = percentiles(s.hist_queue[w].sum(axis=0), (50, 99)), percentiles(s.hist_service[w].sum(axis=0), (50, 99))
        out |= {"queue_p50_ms": q["p50"], "queue_p99_ms": q["p99"], "service_p50_ms": sv["p50"],
                "service_p99_ms": sv["p99"]}
        return out


def simulate(sc: Scenario, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one scenario, its sweep ignored; every figure of it (see Run._result)."""
    return Run(sc).run(progress)


def simulate_sweep(sc: Scenario, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a scenario, or each run of its sweep: {"scenario", "sweep": [{"label", "result"}]}."""
    runs = expand(sc)
    if len(runs) == 1 and not sc.sweep:
        return simulate(sc, progress)
    out = []
    for n, (label, run) in enumerate(runs, 1):
        if progress:
            progress(f"run {n}/{len(runs)}: {label}")
        out.append({"label": label, "result": simulate(run, progress)})
    return {"scenario": sc.name, "sweep": out}


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
