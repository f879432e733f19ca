"""The autoscaler's policy: how many pods the fleet should have.

Pure code, no I/O, no clock (callers pass `now`), so every rule is table-tested
and the same policy drives local processes and a Kubernetes Deployment.

desired = ceil(average in-flight requests across the fleet / target_per_pod),
where the target is the per-pod concurrency at which one pod still meets the
latency SLO (measured by `fleetserve bench-slo`). Asymmetric, as the public
system was, and as Knative and the Kubernetes HPA are:

- Up fast: the recommendation is computed over a short window and applied at
  once when it is above the current count.
- Panic: when the short-window load exceeds `panic_threshold` times what the
  ready pods can take, the fleet scales up at once and never scales down until
  the load has stayed below the threshold for a whole scale-down window.
- Down slowly: a scale-down applies the highest recommendation seen over the
  long stabilization window (so a dip does not remove pods a returning peak
  needs), at most `max_scale_down_step` pods per `scale_down_period`.
- Always within [min_replicas, max_replicas]. A freshly started autoscaler does
  not scale down before it has seen one whole stabilization window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class AutoscalerConfig:
    target_per_pod: float  # in-flight requests one pod serves within the SLO
    min_replicas: int = 1
    max_replicas: int = 10
    scale_up_window: float = 10.0  # seconds of load averaged for the recommendation
    scale_down_window: float = 120.0  # stabilization: the highest recommendation over this long
    panic_threshold: float = 2.0  # short-window load / ready capacity that starts panic mode
    max_scale_down_step: int = 1
    scale_down_period: float = 30.0  # at most one scale-down step per this long

    def __post_init__(self) -> None:
        if not self.target_per_pod > 0:
            raise ValueError("target_per_pod must be positive (measure it with fleetserve bench-slo)")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}) and max >= 1")
        if self.scale_up_window <= 0 or self.scale_down_window < self.scale_up_window:
            raise ValueError("need 0 < scale_up_window <= scale_down_window")
        if self.panic_threshold <= 1:
            raise ValueError("panic_threshold must be above 1 (a share of ready capacity)")
        if self.max_scale_down_step < 1 or self.scale_down_period < 0:
            raise ValueError("max_scale_down_step must be >= 1 and scale_down_period >= 0")


@dataclass(frozen=True)
class Decision:
    desired: int
    recommendation: int  # ceil(short-window load / target), before bounds and stabilization
    load: float  # short-window average of total in-flight requests
    panic: bool
    reason: str


class Autoscaler:
    def __init__(self, cfg: AutoscalerConfig):
        self.cfg = cfg
        self._load: deque[tuple[float, float]] = deque()  # (time, total in-flight)
        self._recs: deque[tuple[float, int]] = deque()  # (time, recommendation)
        self._panic_until = -math.inf
        self._last_down = -math.inf
        self._since: float | None = None  # first decision: no scale-down before a full window of history

    def observe(self, now: float, inflight_per_pod: list[float]) -> None:
        """One sample: the in-flight requests of every ready pod."""
        self._load.append((now, float(sum(inflight_per_pod))))
        while self._load and self._load[0][0] < now - self.cfg.scale_up_window:
            self._load.popleft()

    def decide(self, now: float, current: int, ready: int) -> Decision:
        """The replica count to have, given `current` pods (starting ones too) of which `ready` serve."""
        cfg = self.cfg
        if self._since is None:
            self._since = now
        load = sum(v for _, v in self._load) / len(self._load) if self._load else 0.0
        rec = math.ceil(load / cfg.target_per_pod - 1e-9) if load > 0 else 0
        rec = min(max(rec, cfg.min_replicas), cfg.max_replicas)
        self._recs.append((now, rec))
        while self._recs and self._recs[0][0] < now - cfg.scale_down_window:
            self._recs.popleft()
        capacity = max(ready, 1) * cfg.target_per_pod
        if load >= cfg.panic_threshold * capacity:
            self._panic_until = now + cfg.scale_down_window
        panic = now < self._panic_until
        bounded = min(max(current, cfg.min_replicas), cfg.max_replicas)
        if bounded != current:
            return Decision(bounded, rec, load, panic, "bounds")
        if rec > current:
            return Decision(rec, rec, load, panic, "panic: scale up at once" if panic else "scale up")
        if panic:
            return Decision(current, rec, load, panic, "panic: no scale-down")
        stable = max(r for _, r in self._recs)
        if now - self._since < cfg.scale_down_window:
            # a fresh autoscaler has not seen a whole window: what it missed may need these pods
            return Decision(current, rec, load, panic, "warming up: no scale-down yet")
        if stable >= current:
            return Decision(current, rec, load, panic, "steady" if rec == current else "stabilizing")
        if now - self._last_down < cfg.scale_down_period:
            return Decision(current, rec, load, panic, "scale-down step waits")
        self._last_down = now
        return Decision(max(stable, current - cfg.max_scale_down_step), rec, load, panic, "scale down")
