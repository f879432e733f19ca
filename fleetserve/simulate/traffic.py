"""Simulated traffic: arrival times that follow a load profile (the load tester's own, so a
simulated run and a real one offer the same load), and request sizes.

Arrivals come in chunks (one per control interval) so that a run of 120M requests never holds
them all: marks on the profile's cumulative-rate axis (unit exponential gaps for Poisson, gamma
gaps of a chosen coefficient of variation for bursty traffic) mapped back to time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fleetserve.loadtest.profile import Profile

ARRIVALS = ("poisson", "gamma")


class ArrivalStream:
    def __init__(self, profile: Profile, kind: str = "poisson", cv: float = 1.0, seed: int | list[int] = 0,
                 times_file: str | None = None):
        """`times_file`: given send times replayed (see _read_times) instead of drawn ones."""
        self.times = _read_times(Path(times_file)) if times_file else None
        self.taken = 0
        if kind not in ARRIVALS:
            raise ValueError(f"arrivals {kind!r}: choose one of {', '.join(ARRIVALS)}")
        if not cv > 0:
            raise ValueError(f"cv must be positive, got {cv}")
        self.grid, self.cum = profile.cumulative()
        self.kind, self.cv = kind, cv
        self.rng = np.random.default_rng(seed)
        self.mark = self._gaps(1)[0] if kind == "poisson" else self.rng.random() * self._gaps(1)[0]  # stationary start

    def _gaps(self, n: int) -> np.ndarray:
        if self.kind == "poisson" or self.cv == 1.0:
            return self.rng.exponential(1.0, n)
        shape = 1.0 / self.cv ** 2
        return self.rng.gamma(shape, 1.0 / shape, n)

    def until(self, t_end: float) -> np.ndarray:
        """Arrival times from where the last call stopped up to t_end (sorted)."""
        if self.times is not None:
            end = int(np.searchsorted(self.times, t_end, side="left"))
            out, self.taken = self.times[self.taken:end], max(end, self.taken)
            return out
        limit = float(np.interp(t_end, self.grid, self.cum))  # the whole profile's total beyond its end
        parts = []
        while self.mark < limit:
            expected = limit - self.mark
            n = int(expected + 5 * np.sqrt(expected) + 16)
            marks = self.mark + np.cumsum(self._gaps(n))
            inside = marks[marks < limit]
            parts.append(inside)
            if len(inside) < n:
                self.mark = float(marks[len(inside)])
                break
            self.mark = float(marks[-1])
        if not parts:
            return np.empty(0)
        marks = np.concatenate(parts)
        return np.interp(marks, self.cum, self.grid)


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a numbers file's lines, blank ones and # comments skipped."""
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            yield n, line


def _read_times(path: Path) -> np.ndarray:
    """Send times in seconds, one a line, sorted on reading."""
    values = []
    for n, line in _lines(path, "traffic.arrival_times_file:"):
        try:
            t = float(line)
        except ValueError:
            raise ValueError(f"traffic.arrival_times_file: {path}:{n}: {line!r} is not a time in seconds") from None
        if not t >= 0 or t == float("inf"):
            raise ValueError(f"traffic.arrival_times_file: {path}:{n}: {line!r} is not a time >= 0")
        values.append(t)
    return np.sort(np.array(values, dtype=float))


class Sizes:
    """Token counts per request: `50`, `uniform:20..80`, `exponential:50` (at least 1) or
    `lognormal:MEAN,CV`; or a file of lines `PROMPT OUTPUT` sampled with replacement."""

    def __init__(self, spec: str | int, column: int = 0, path: str | None = None):
        self.spec = str(spec)
        self.values = None
        if path is not None:
            self.values = _read_sizes(Path(path), column)
            return
        s = self.spec.strip()
        if re.fullmatch(r"\d+", s):
            self.kind, self.args = "constant", (int(s),)
        elif m := re.fullmatch(r"uniform:(\d+)\.\.(\d+)", s):
            self.kind, self.args = "uniform", (int(m[1]), int(m[2]))
            if self.args[0] > self.args[1]:
                raise ValueError(f"sizes {s!r}: empty range")
        elif m := re.fullmatch(r"exponential:([0-9.]+)", s):
            self.kind, self.args = "exponential", (float(m[1]),)
        elif m := re.fullmatch(r"lognormal:([0-9.]+),([0-9.]+)", s):
            self.kind, self.args = "lognormal", (float(m[1]), float(m[2]))
        else:
            raise ValueError(f"sizes {s!r}: use N, uniform:A..B, exponential:MEAN or lognormal:MEAN,CV")
        if min(self.args) <= 0 and self.kind != "uniform":
            raise ValueError(f"sizes {s!r}: must be positive")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values is not None:
            return self.values[rng.integers(len(self.values), size=n)]
        if self.kind == "constant":
            return np.full(n, float(self.args[0]))
        if self.kind == "uniform":
            return rng.integers(self.args[0], self.args[1] + 1, size=n).astype(float)
        if self.kind == "exponential":
            return np.maximum(1.0, np.round(rng.exponential(self.args[0], n)))
        mean, cv = self.args
        sigma2 = np.log(1 + cv * cv)
        return np.maximum(1.0, np.round(rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n)))


def _read_sizes(path: Path, column: int) -> np.ndarray:
    values = []
    for n, line in _lines(path, "sizes file"):
        parts = line.split()
        try:
            values.append(float(parts[column]))
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{n}: expected 'PROMPT_TOKENS OUTPUT_TOKENS', got {line!r}") from None
    if not values:
        raise ValueError(f"sizes file {path} has no sizes")
    return np.maximum(1.0, np.array(values))
