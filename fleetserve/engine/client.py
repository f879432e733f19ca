"""What the HTTP server codes against: an engine it sends requests to and gets
step outputs back from, wherever the engine runs. Two implementations:
`InProcessClient` (the engine loop on a thread of this process, the one-process
pod) and `CoreClient` (the engine-core process over ZeroMQ, the multi-process
pod). Both share `generate`, the request's whole life on the client side.

No torch here: a frontend process imports this without loading the model's libraries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fleetserve.engine.checks import check_request
from fleetserve.engine.errors import EngineDeadError, RequestRejected
from fleetserve.engine.ipc import Abort, Add
from fleetserve.engine.outputs import FAILURE_STATUS, EngineStats, StepOutput
from fleetserve.engine.sampling_params import SamplingParams


class EngineClient:
    max_model_len: int
    max_num_seqs: int
    vocab_size: int

    def __init__(self) -> None:
        self.error: BaseException | None = None  # set when the engine is gone for good
        self._queues: dict[str, asyncio.Queue] = {}

    # ---- what each implementation provides: start() (on the server's event loop), stop(),
    # alive (False once no request can complete), ready (alive and answering just now),
    # snapshot() (the engine's EngineStats) and _submit(add or abort) (without waiting) ----------

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    alive: bool

    @property
    def ready(self) -> bool:
        return self.alive

    def snapshot(self) -> EngineStats:
        raise NotImplementedError

    def _submit(self, msg: Add | Abort) -> None:
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests of this client not finished yet."""
        return len(self._queues)

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError if the request can never run on this engine."""
        check_request(prompt_ids, params, self.max_model_len, self.vocab_size)

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                       whole: bool = False) -> AsyncIterator[StepOutput]:
        """Yield this request's step outputs until it finishes. Leaving the loop early
        (client gone, timeout, stop string found) aborts the request in the engine.
        `whole`: one output with every token, when the request ends. Raises ValueError
        (cannot run), RequestRejected (refused or failed in the engine) or EngineDeadError."""
        if not self.alive:
            raise EngineDeadError(f"engine is not running: {self.error!r}")
        self.check_request(prompt_ids, params)
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = queue
        finished = False
        try:
            self._submit(Add(request_id, list(prompt_ids), params, whole))
            while True:
                out = await queue.get()
                if isinstance(out, BaseException):
                    finished = True  # the engine holds nothing of it: no abort to send
                    raise out
                finished = out.finish_reason is not None
                status = FAILURE_STATUS.get(out.finish_reason)
                if status:
                    raise RequestRejected(status, out.error or "generation failed")
                yield out
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished and self.error is None:
                self._submit(Abort([request_id]))

    def _deliver(self, outputs: list[StepOutput]) -> None:
        """Hand a step's outputs to the requests waiting for them (on the event loop)."""
        queues = self._queues
        for out in outputs:
            queue = queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail_all(self, error: BaseException) -> None:
        for queue in self._queues.values():
            queue.put_nowait(error)

