"""A frontend's client of a pod's engine cores when it has several: each request
runs on one of them, the one holding the fewest of this frontend's requests.

Which pods run several cores, and why: server/pod.py, `default_engines`. The pool is
what the HTTP server codes against (an `EngineClient`); each member is an ordinary
`CoreClient` with its own sockets and heartbeats.

No torch here, like the rest of a frontend.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fleetserve.engine.client import EngineClient
from fleetserve.engine.core_client import CoreClient
from fleetserve.engine.outputs import EngineStats, StepOutput, combined_stats
from fleetserve.engine.sampling_params import SamplingParams


def fewest_in_flight(in_flight: list[int], ready: list[bool], start: int) -> int:
    """The member a new request goes to: the fewest requests in flight among the ready
    ones (all of them when none is ready: a stalled core keeps its requests, and a new
    one waits as it would in a one-core pod), ties broken from `start` on so that idle
    members take turns."""
    n = len(in_flight)
    candidates = [i for i in range(n) if ready[i]] or list(range(n))
    return min(candidates, key=lambda i: (in_flight[i], (i - start) % n))


class CorePool(EngineClient):
    def __init__(self, clients: list[CoreClient]):
        if not clients:
            raise ValueError("a core pool needs at least one engine core")
        super().__init__()
        self.clients = clients
        self._turn = 0
        # The members' latest stats and their sum: every request reads the pod's stats (its
        # in-flight header), and they change only when a heartbeat arrives.
        self._parts: list[EngineStats] = []
        self._combined = EngineStats()

    # The limits are the members' (the same model and settings in each); slots add up.
    @property
    def max_model_len(self) -> int:
        return self.clients[0].max_model_len

    @property
    def vocab_size(self) -> int:
        return self.clients[0].vocab_size

    @property
    def max_num_seqs(self) -> int:
        return sum(c.max_num_seqs for c in self.clients)

    @property
    def error(self) -> BaseException | None:
        """The first member's error: a pod whose core died stops as a whole (server/pod.py)."""
        return next((c.error for c in self.clients if c.error is not None), None)

    @error.setter
    def error(self, value: BaseException | None) -> None:  # EngineClient.__init__ sets None
        if value is not None:
            raise AttributeError("a core pool's error is its members'")

    async def start(self) -> None:
        for c in self.clients:
            await c.start()

    def stop(self) -> None:
        for c in self.clients:
            c.stop()

    @property
    def alive(self) -> bool:
        return all(c.alive for c in self.clients)

    @property
    def ready(self) -> bool:
        """Alive, and at least one member answering: a stalled one gets no new requests."""
        return self.alive and any(c.ready for c in self.clients)

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.clients)

    def snapshot(self) -> EngineStats:
        parts = [c.snapshot() for c in self.clients]
        if len(parts) != len(self._parts) or any(a is not b for a, b in zip(parts, self._parts)):
            self._parts, self._combined = parts, combined_stats(parts)
        return self._combined

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                       whole: bool = False) -> AsyncIterator[StepOutput]:
        i = fewest_in_flight([c.in_flight for c in self.clients], [c.ready for c in self.clients], self._turn)
        self._turn = (self._turn + 1) % len(self.clients)
        # aclosing: leaving this generator early leaves the member's too, which aborts the request there.
        async with contextlib.aclosing(self.clients[i].generate(request_id, prompt_ids, params, whole)) as steps:
            async for out in steps:
                yield out
