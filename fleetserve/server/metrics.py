"""A minimal Prometheus text-format registry (counters, gauges, histograms).

Hand-rolled because it is ~60 lines and the engine's gauges are read at scrape
time from live objects rather than pushed on every change.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, *label_values: str) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for lv, v in sorted(self.values.items()) or [((), 0.0)]:
            labels = ",".join(f'{k}="{x}"' for k, x in zip(self.labels, lv))
            out.append(f"{self.name}{{{labels}}} {_fmt(v)}" if labels else f"{self.name} {_fmt(v)}")
        return out


class Gauge:
    """Read from `fn` at scrape time, so it can never drift from the truth. With
    kind="counter" it exposes a monotonic count kept elsewhere (the engine's)."""

    def __init__(self, name: str, help: str, fn: Callable[[], float], kind: str = "gauge"):
        self.name, self.help, self.fn, self.kind = name, help, fn, kind

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", f"{self.name} {_fmt(self.fn())}"]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, count in zip(self.buckets, self.counts):
            total += count
            out.append(f'{self.name}_bucket{{le="{bound}"}} {total}')
        total += self.counts[-1]
        out += [f'{self.name}_bucket{{le="+Inf"}} {total}', f"{self.name}_sum {_fmt(self.sum)}",
                f"{self.name}_count {total}"]
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"
