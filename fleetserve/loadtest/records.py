"""Per-request results of a run, as columns: cheap to append while the load
runs, to ship from a worker process, and to slice into time windows after."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fleetserve.loadtest.client import Call


@dataclass
class Records:
    """Times are seconds since the run's start (time 0 is the first possible arrival)."""
    index: list[int] = field(default_factory=list)  # arrival number in the schedule
    prompt: list[int] = field(default_factory=list)
    due: list[float] = field(default_factory=list)  # when the profile said to send it
    start: list[float] = field(default_factory=list)  # when the client sent it
    first: list[float] = field(default_factory=list)  # first streamed token (nan when not streaming)
    end: list[float] = field(default_factory=list)  # answer complete, or the error
    status: list[int] = field(default_factory=list)  # HTTP status, 0 when none came
    error: list[str] = field(default_factory=list)  # "" for success, else the kind
    tokens: list[int] = field(default_factory=list)  # completion tokens (usage, else streamed chunks)
    itl: list[float] = field(default_factory=list)  # inter-token gaps of all streamed answers
    itl_owner: list[int] = field(default_factory=list)  # the row each gap belongs to
    texts: list[str] | None = None  # answer texts, kept when asked (shadow mode)

    def add(self, call: Call, t0: float) -> None:
        row = len(self.index)
        self.index.append(call.index)
        self.prompt.append(call.prompt)
        self.due.append(call.due)
        self.start.append(call.start - t0)
        self.first.append(call.first - t0 if call.chunks else float("nan"))
        self.end.append(call.end - t0)
        self.status.append(call.status)
        self.error.append(call.error)
        self.tokens.append(call.tokens or call.chunks)
        if call.itl:
            self.itl.extend(call.itl)
            self.itl_owner.extend([row] * len(call.itl))
        if self.texts is not None:
            self.texts.append(call.text)

    def __len__(self) -> int:
        return len(self.index)

    def extend(self, other: Records) -> None:
        offset = len(self.index)
        for name in ("index", "prompt", "due", "start", "first", "end", "status", "error", "tokens", "itl"):
            getattr(self, name).extend(getattr(other, name))
        self.itl_owner.extend(o + offset for o in other.itl_owner)
        if self.texts is not None and other.texts is not None:
            self.texts.extend(other.texts)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: np.asarray(getattr(self, name), dtype=float)
               for name in ("due", "start", "first", "end", "itl")}
        out["index"] = np.asarray(self.index, dtype=np.int64)
        out["status"] = np.asarray(self.status, dtype=np.int64)
        out["tokens"] = np.asarray(self.tokens, dtype=np.int64)
        out["itl_owner"] = np.asarray(self.itl_owner, dtype=np.int64)
        out["ok"] = np.asarray([not e for e in self.error], dtype=bool)
        return out

    def sorted_by_index(self) -> Records:
        order = sorted(range(len(self.index)), key=self.index.__getitem__)
        out = Records(texts=[] if self.texts is not None else None)
        where = {row: k for k, row in enumerate(order)}
        for name in ("index", "prompt", "due", "start", "first", "end", "status", "error", "tokens"):
            col = getattr(self, name)
            setattr(out, name, [col[r] for r in order])
        if self.texts is not None:
            out.texts = [self.texts[r] for r in order]
        out.itl = list(self.itl)
        out.itl_owner = [where[o] for o in self.itl_owner]
        return out
