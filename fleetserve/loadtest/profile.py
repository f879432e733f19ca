"""Load profiles: how the offered request rate changes over a run, and the
arrival times that follow from it.

A profile is a sequence of segments joined with `+`:

    constant:RATE@DURATION          e.g. constant:200@30s
    ramp:FROM..TO@DURATION          e.g. ramp:10..400@2m
    step:R1@D1,R2@D2,...            e.g. step:50@10s,100@10s,200@10s
    diurnal:MIN..MAX@PERIOD         one smooth day (min at the ends, max halfway) in PERIOD

Arrival times come from the time-rescaling theorem: with Λ(t) the expected
number of arrivals up to t, a Poisson process puts arrivals where Λ crosses the
running sum of unit exponentials, constant spacing where it crosses k + ½. One
mechanism then serves every profile shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, allow_zero: bool = False) -> float:
    """'500ms', '30s', '2m', '1h' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h)?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 30s, 2m, 1h)")
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{text!r}: a duration must be positive")
    return value


def parse_rate(text: str) -> float:
    """'200', '1.5k' -> requests per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(k)?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a rate in requests/s (examples: 200, 1.5k)")
    return float(m.group(1)) * (1000.0 if m.group(2) else 1.0)


@dataclass(frozen=True)
class Segment:
    start_rate: float
    end_rate: float
    duration: float
    shape: str = "linear"  # "linear" (constant when start == end) or "diurnal"

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        """Rate at times `t` measured from the start of this segment."""
        x = np.clip(t / self.duration, 0.0, 1.0)
        if self.shape == "diurnal":
            x = (1 - np.cos(2 * np.pi * x)) / 2
        return self.start_rate + (self.end_rate - self.start_rate) * x


@dataclass(frozen=True)
class Profile:
    spec: str
    segments: tuple[Segment, ...]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def peak_rate(self) -> float:
        return max(max(s.start_rate, s.end_rate) for s in self.segments)

    def rate_at(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        out = np.zeros_like(t)
        start = 0.0
        for seg in self.segments:
            inside = (t >= start) & (t < start + seg.duration)
            out[inside] = seg.rate_at(t[inside] - start)
            start += seg.duration
        return out

    def expected_requests(self) -> float:
        grid, cum = self.cumulative()
        return float(cum[-1])

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """A fine time grid and Λ on it (trapezoid rule; exact for linear segments)."""
        step = max(self.duration / 2_000_000, min(1e-3, self.duration / 1000))  # 1 ms; coarser for long runs
        n = max(2, int(math.ceil(self.duration / step)) + 1)
        grid = np.linspace(0.0, self.duration, n)
        rate = self.rate_at(grid[:-1] + 1e-12)  # left limits: step boundaries belong to the later step
        rate_right = self.rate_at(np.maximum(grid[1:] - 1e-12, 0.0))
        cum = np.concatenate([[0.0], np.cumsum((rate + rate_right) / 2 * np.diff(grid))])
        return grid, cum

    def arrivals(self, spacing: str = "poisson", seed: int = 0) -> np.ndarray:
        """Sorted send times in seconds from the start of the run."""
        grid, cum = self.cumulative()
        total = cum[-1]
        if spacing == "constant":
            marks = np.arange(int(math.floor(total + 1e-6))) + 0.5
        elif spacing == "poisson":
            rng = np.random.default_rng(seed)
            n = int(total + 10 * math.sqrt(total) + 10)
            marks = np.cumsum(rng.exponential(1.0, n))
            marks = marks[marks < total]
        else:
            raise ValueError(f"arrival spacing {spacing!r}: choose poisson or constant")
        return np.interp(marks, cum, grid)


def _range(text: str, what: str) -> tuple[float, float]:
    if ".." not in text:
        raise ValueError(f"{text!r} is not a FROM..TO range")
    a, b = text.split("..", 1)
    return parse_rate(a), parse_rate(b)


_USAGE = {"constant": "constant:RATE@DURATION", "ramp": "ramp:FROM..TO@DURATION", "step": "step:R1@D1,R2@D2,...",
          "diurnal": "diurnal:MIN..MAX@PERIOD"}


def _segments(part: str) -> list[Segment]:
    kind, _, rest = part.partition(":")
    kind = kind.strip()
    if kind not in _USAGE:
        raise ValueError(f"unknown profile kind {kind!r} in {part!r}: use {', '.join(_USAGE.values())}")
    try:
        return _parse_segments(kind, rest)
    except ValueError as e:
        raise ValueError(f"profile {part!r}: {e} (expected {_USAGE[kind]})") from None


def _parse_segments(kind: str, rest: str) -> list[Segment]:
    if not rest:
        raise ValueError("no arguments")
    if kind == "step":
        out = []
        for item in rest.split(","):
            rate, at, dur = item.partition("@")
            if not at:
                raise ValueError(f"step {item!r} has no @DURATION")
            r = parse_rate(rate)
            out.append(Segment(r, r, parse_duration(dur)))
        return out
    args, at, dur = rest.rpartition("@")
    if not at:
        raise ValueError("no @DURATION")
    duration = parse_duration(dur)
    if kind == "constant":
        r = parse_rate(args)
        return [Segment(r, r, duration)]
    if kind == "ramp":
        lo, hi = _range(args, "ramp")
        return [Segment(lo, hi, duration)]
    lo, hi = _range(args, "diurnal")
    return [Segment(lo, hi, duration, "diurnal")]


def parse_profile(spec: str) -> Profile:
    """Parse a profile such as 'ramp:0..500@60s+constant:500@30s'."""
    segments = [seg for part in spec.split("+") for seg in _segments(part)]
    if not segments:
        raise ValueError("empty load profile")
    profile = Profile(spec, tuple(segments))
    if profile.peak_rate <= 0:
        raise ValueError(f"{spec!r}: the profile never sends a request (all rates are 0)")
    return profile
