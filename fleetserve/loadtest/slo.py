"""Service-level objectives: parse `p99_e2el<1s,error_rate<0.0001`, check them
against a run's figures overall and in every window, and say what failed where.

Latency objectives are STAT_METRIC with STAT one of mean, median (p50), p90,
p99, p99.9 and METRIC one of ttft, tpot, itl, e2el (e2e is accepted for e2el);
their threshold takes a unit (ms, s). Rate objectives: error_rate,
availability, client_lag (the share of requests the client sent late),
request_throughput, request_goodput. A latency objective also defines a good
request for goodput: one that succeeded with METRIC under the threshold.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from fleetserve.loadtest.metrics import LATENCIES
from fleetserve.loadtest.profile import parse_duration

_STATS = {"mean": "mean", "median": "median", "p50": "median", "p90": "p90", "p99": "p99",
          "p99.9": "p99.9", "p999": "p99.9"}
_ALIASES = {"e2e": "e2el", "latency": "e2el"}
_RATES = {"error_rate": ("error_rate",), "availability": ("availability",),
          "client_lag": ("client_lag", "late_share"), "request_throughput": ("request_throughput",),
          "request_goodput": ("request_goodput",), "goodput": ("request_goodput",)}
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Objective:
    text: str
    path: tuple[str, ...]  # where the figure sits in a summary block
    op: str
    threshold: float  # seconds for latencies
    latency: str | None = None  # the per-request metric, for latency objectives

    def value(self, block: dict[str, Any]) -> float | None:
        v: Any = block
        for key in self.path:
            if v is None:
                return None
            v = v.get(key)
        if v is None:
            return None
        return v / 1e3 if self.latency else float(v)  # summaries hold latencies in ms

    def met(self, block: dict[str, Any]) -> bool | None:
        v = self.value(block)
        return None if v is None else _OPS[self.op](v, self.threshold)


def parse_slo(spec: str) -> list[Objective]:
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(<=|>=|<|>)\s*(\S+)", part)
        if not m:
            raise ValueError(f"SLO {part!r}: expected NAME<VALUE, e.g. p99_e2el<1s or error_rate<0.001")
        name, op, value = m.groups()
        if name in _RATES:
            try:
                threshold = float(value)
            except ValueError:
                raise ValueError(f"SLO {part!r}: {value!r} is not a number") from None
            out.append(Objective(part, _RATES[name], op, threshold))
            continue
        stat, _, metric = name.partition("_")
        metric = _ALIASES.get(metric, metric)
        if stat not in _STATS or metric not in LATENCIES:
            raise ValueError(f"SLO {part!r}: unknown objective {name!r}; use STAT_METRIC with STAT in "
                             f"mean, median, p90, p99, p99.9 and METRIC in {', '.join(LATENCIES)}, or one of "
                             f"{', '.join(_RATES)}")
        threshold = parse_duration(value, allow_zero=True)
        out.append(Objective(part, (metric, _STATS[stat]), op, threshold, latency=metric))
    return out


def goodput_thresholds(objectives: list[Objective]) -> dict[str, float]:
    """Per-request limits implied by the latency objectives (the tightest per metric);
    itl has no single per-request value and is left out."""
    out: dict[str, float] = {}
    for o in objectives:
        if o.latency and o.latency != "itl" and o.op in ("<", "<="):
            out[o.latency] = min(out.get(o.latency, float("inf")), o.threshold)
    return out


@dataclass(frozen=True)
class Failure:
    objective: Objective
    where: str  # "overall" or "window 30-35s"
    value: float

    def __str__(self) -> str:
        v = f"{self.value * 1e3:.1f} ms" if self.objective.latency else f"{self.value:g}"
        return f"SLO {self.objective.text} failed {self.where}: {v}"


def check(objectives: list[Objective], summary: dict[str, Any], min_requests: int = 1) -> list[Failure]:
    """Every objective missed overall or in a window with at least `min_requests` sent."""
    failures = []
    blocks = [("overall", summary["overall"])]
    blocks += [(f"in window {w['start_s']:g}-{w['end_s']:g}s", w) for w in summary["windows"]
               if w["sent_requests"] >= min_requests]
    for o in objectives:
        for where, block in blocks:
            if o.met(block) is False:
                failures.append(Failure(o, where, o.value(block)))
    return failures
