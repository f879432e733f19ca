"""How many intra-op threads each step runs on: one, or all the engine has, by measurement.

Policy only: step sizes and the seconds the caller measured in, a thread count out;
no torch, no clock. Two threads on two cores halve a large step, but a small one
(a pod's typical step: a few requests decoding, one prompt) gains little, and on a
host whose cores are busy with other work every parallel region waits for a thread
the scheduler has not run yet. Which count is faster depends on the step's size and
on what else the host is doing at the moment, so it is measured as the engine runs:
steps are grouped by rows (powers of two), each group keeps a moving average of the
seconds per row under each count, the faster serves, and the other is tried again
every `explore_every` steps of the group so that a change of the host (a busy
neighbour starting or stopping) is noticed within a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Estimate:
    seconds_per_row: float | None = None
    tried: int = 0
    since_tried: int = 0  # steps of the group run with the other count since this one was last tried


@dataclass
class ThreadChoice:
    """`most`: the engine's thread count; the choice is between 1 and `most`. `alpha`:
    weight of the newest step in the moving averages."""

    most: int
    explore_every: int = 32
    alpha: float = 0.25
    _groups: dict[int, dict[int, _Estimate]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.most < 1:
            raise ValueError(f"thread count must be >= 1, got {self.most}")

    @property
    def options(self) -> tuple[int, ...]:
        return (1, self.most) if self.most > 1 else (1,)

    def choose(self, rows: int) -> int:
        """The thread count for a step of `rows` query rows."""
        if self.most == 1:
            return 1
        group = self._group(rows)
        for n in reversed(self.options):  # the most threads first, so a quiet host starts on them
            e = group[n]
            if e.seconds_per_row is None or e.since_tried >= self.explore_every:
                return n
        return min(self.options, key=lambda n: group[n].seconds_per_row)

    def record(self, rows: int, threads: int, seconds: float) -> None:
        """A step of `rows` rows took `seconds` on `threads` threads."""
        if threads not in self.options or rows < 1:
            return
        group = self._group(rows)
        for n, e in group.items():
            e.since_tried = 0 if n == threads else e.since_tried + 1
        e = group[threads]
        e.tried += 1
        if e.tried == 1:  # a count's first step pays one-off set-up (kernels for that count): not a sample
            return
        per_row = seconds / rows
        e.seconds_per_row = per_row if e.seconds_per_row is None else \
            (1 - self.alpha) * e.seconds_per_row + self.alpha * per_row

    def _group(self, rows: int) -> dict[int, _Estimate]:
        key = max(rows, 1).bit_length()  # rows in [2^(key-1), 2^key)
        return self._groups.setdefault(key, {n: _Estimate() for n in self.options})
