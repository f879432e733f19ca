"""The one step loop of a serving engine, with no transport of its own.

It admits requests (the waiting limit), aborts them, holds the answers of
callers that want every token at once, stamps its progress at every turn and
hands each step's outputs to their owners. What carries requests in and outputs
out is the driver's business: a thread with an in-process inbox in the
one-process pod (`inproc_client.py`), a ZeroMQ socket in the engine-core
process of the multi-process pod (`core_process.py`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING

from fleetserve.engine.ipc import Abort, Add
from fleetserve.engine.outputs import FinishReason, HeldAnswers, StepOutput

if TYPE_CHECKING:
    from fleetserve.engine.engine_core import EngineCore

IDLE_WAIT_S = 0.25  # an idle loop still turns this often (progress stamp, stop checks)


class EngineLoop:
    def __init__(self, core: EngineCore, max_waiting: int = 0, progress=None):
        """`max_waiting`: requests waiting for a slot beyond which new ones are refused
        (0: no bound). `progress`: anything with a float `.value` (default: a new one), stamped with
        time.monotonic() at every turn: the core process passes a multiprocessing.Value,
        which its supervisor reads)."""
        self.core, self.max_waiting = core, max_waiting
        self.progress = progress if progress is not None else SimpleNamespace(value=time.monotonic())
        self.owners: dict[str, Hashable] = {}  # request id -> whoever gets its outputs
        self.held = HeldAnswers()
        self.stopping = False

    def add(self, owner: Hashable, msg: Add) -> StepOutput | None:
        """Admit a request, or return its refusal (an output to deliver to `owner`)."""
        if self.max_waiting and self.core.num_waiting >= self.max_waiting:
            return StepOutput(msg.request_id, [], FinishReason.REJECTED,
                              f"the pod's waiting queue is full ({self.max_waiting} requests); retry later")
        try:
            # The clients ran check_request before sending (EngineClient.generate).
            self.core.add_request(msg.request_id, msg.prompt_ids, msg.params, checked=True)
        except ValueError as e:
            return StepOutput(msg.request_id, [], FinishReason.INVALID, str(e))
        self.owners[msg.request_id] = owner
        if msg.whole:
            self.held.hold(msg.request_id)
        return None

    def abort(self, request_ids: Iterable[str]) -> None:
        for rid in request_ids:
            self.core.abort_request(rid)
            self.owners.pop(rid, None)
            self.held.drop(rid)

    def step(self) -> dict[Hashable, list[StepOutput]]:
        """Run one step; its outputs grouped by owner (none for requests aborted meanwhile)."""
        by_owner: dict[Hashable, list[StepOutput]] = defaultdict(list)
        for out in self.held.filter(self.core.step()):
            owner = self.owners.get(out.request_id, _GONE)
            if owner is _GONE:
                continue
            if out.finish_reason is not None:
                del self.owners[out.request_id]
            by_owner[owner].append(out)
        return by_owner

    def run(self, receive: Callable[[float], Iterable[tuple[Hashable, Add | Abort]]],
            send: Callable[[Hashable, list[StepOutput]], None], stop: Callable[[], bool] = lambda: False) -> None:
        """Turn until `stopping` is set or `stop()` is true. `receive(timeout_s)` returns the
        (owner, message) pairs that arrived, waiting up to timeout_s for the first when the
        engine is idle; `send(owner, outputs)` delivers."""
        core = self.core
        while not self.stopping and not stop():
            self.progress.value = time.monotonic()
            for owner, msg in receive(0.0 if core.has_unfinished() else IDLE_WAIT_S):
                if isinstance(msg, Add):
                    refused = self.add(owner, msg)
                    if refused is not None:
                        send(owner, [refused])
                else:
                    self.abort(msg.request_ids)
            if core.has_unfinished():
                for owner, outputs in self.step().items():
                    send(owner, outputs)


_GONE = object()
