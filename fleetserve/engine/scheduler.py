"""Which requests run in the next step: slot admission and release.

Pure policy, no tensors. Slots are handed out lowest-number first so that the
running requests stay packed at the front of the KV cache, where a decode step
reads slots 0..B-1 as one view. With `compact`, a slot freed below the highest
running one is filled at once by moving that request down (a `Move` the engine
applies to the KV cache before the next step), so the running requests always
hold slots 0..n-1 and a step computes no empty slot: as requests of different
lengths finish, holes would otherwise leave a pod with 18 requests in flight
stepping over 32 or 64 slots (1.3-1.7x the step time).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from fleetserve.engine.request import Request


@dataclass
class Move:
    """Request `request`, moved from slot `src` to slot `dst`: its KV cache positions
    below its length must be copied there before the next step."""
    src: int
    dst: int
    request: Request


@dataclass
class ScheduledBatch:
    decode: list[Request] = field(default_factory=list)  # running, one token each
    prefill: list[Request] = field(default_factory=list)  # admitted this step, slots assigned

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, max_num_seqs: int, max_prefill_tokens: int, compact: bool = False):
        self.max_prefill_tokens = max_prefill_tokens
        self.compact = compact
        self.moves: list[Move] = []  # compactions not yet applied to the KV cache, in order
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}
        self._free = list(range(max_num_seqs))
        heapq.heapify(self._free)
        self._by_id: dict[str, Request] = {}

    @property
    def num_unfinished(self) -> int:
        return len(self._by_id)

    def add(self, request: Request) -> None:
        if request.request_id in self._by_id:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        self._by_id[request.request_id] = request
        self.waiting.append(request)

    def schedule(self, skip: set[str] | frozenset[str] = frozenset()) -> ScheduledBatch:
        """Every running request decodes one token; waiting ones are admitted in
        arrival order while slots and the prefill token budget last (at least one
        is admitted when a slot is free, however long its prompt). `skip`: running
        requests known to have ended but not yet released (their slots stay taken)."""
        running = (r for r in self.running.values() if r.request_id not in skip)
        batch = ScheduledBatch(decode=sorted(running, key=lambda r: r.slot))
        budget = self.max_prefill_tokens
        while self.waiting and self._free:
            length = len(self.waiting[0].prompt_ids)
            if batch.prefill and length > budget:
                break
            request = self.waiting.popleft()
            request.slot = heapq.heappop(self._free)
            self.running[request.slot] = request
            batch.prefill.append(request)
            budget -= length
        return batch

    def waited_longer(self, arrived_before: float) -> list[Request]:
        """Waiting requests that arrived before `arrived_before` (the queue is in arrival order)."""
        late = []
        for request in self.waiting:
            if request.arrival_time >= arrived_before:
                break
            late.append(request)
        return late

    def finish(self, request: Request) -> None:
        """Release a finished or aborted request (running or still waiting)."""
        if self._by_id.pop(request.request_id, None) is None:
            return
        if request.slot is None:
            self.waiting.remove(request)
            return
        slot, request.slot = request.slot, None
        del self.running[slot]
        top = max(self.running, default=-1)
        if self.compact and top > slot:
            moved = self.running.pop(top)
            moved.slot = slot
            self.running[slot] = moved
            self.moves.append(Move(top, slot, moved))
            slot = top
        heapq.heappush(self._free, slot)

    def take_moves(self) -> list[Move]:
        """The compactions since the last call, in the order they must be applied."""
        moves, self.moves = self.moves, []
        return moves

    def get(self, request_id: str) -> Request | None:
        return self._by_id.get(request_id)
