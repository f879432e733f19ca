"""The engine core on a background thread, driven from asyncio.

The step loop runs in its own thread (torch releases the GIL inside kernels, so
the event loop keeps serving HTTP meanwhile). Requests and aborts cross into the
thread through a locked inbox; each step's outputs cross back in one
`call_soon_threadsafe` call, not one per token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.errors import EngineDeadError, RequestRejected
from fleetserve.engine.ipc import Stats
from fleetserve.engine.outputs import FAILURE_STATUS, HeldAnswers, StepOutput
from fleetserve.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(self, core: EngineCore, max_waiting: int = 0):
        self.core = core
        self.max_waiting = max_waiting  # 0: no bound
        self._inbox: list[tuple[str, str, list[int] | None, SamplingParams | None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queues: dict[str, asyncio.Queue] = {}
        self._held = HeldAnswers()  # touched by the engine thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.error: BaseException | None = None
        self.progress = time.monotonic()  # stamped at every turn of the step loop (see stalled_for)

    @property
    def max_model_len(self) -> int:
        return self.core.config.max_model_len

    @property
    def max_num_seqs(self) -> int:
        return self.core.config.max_num_seqs

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        self.core.check_request(prompt_ids, params)

    def snapshot(self) -> Stats:
        return self.core.snapshot()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def ready(self) -> bool:
        return self.alive

    def stalled_for(self) -> float:
        """Seconds since the step loop last turned (an idle loop turns every 0.5 s)."""
        return time.monotonic() - self.progress

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-core", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                       whole: bool = False) -> AsyncIterator[StepOutput]:
        """Yield this request's step outputs until it finishes. Leaving the loop
        early (client gone, stop string found) aborts the request in the engine.
        `whole`: one output with every token, when the request ends."""
        if not self.alive:
            raise EngineDeadError(f"engine is not running: {self.error!r}")
        self.core.check_request(prompt_ids, params)
        if self.max_waiting and self.core.num_waiting + len(self._inbox) >= self.max_waiting:
            raise RequestRejected(429, f"the pod's waiting queue is full ({self.max_waiting} requests); retry later")
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = queue
        self._post(("add" if not whole else "add-whole", request_id, prompt_ids, params))
        finished = False
        try:
            while True:
                out = await queue.get()
                if isinstance(out, (ValueError, RequestRejected)):
                    raise out
                if isinstance(out, BaseException):
                    raise EngineDeadError(f"engine failed: {out!r}") from out
                finished = out.finish_reason is not None
                yield out
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self._post(("abort", request_id, None, None))

    def _post(self, item) -> None:
        with self._lock:
            self._inbox.append(item)
        self._wake.set()

    def _run(self) -> None:
        core = self.core
        try:
            while not self._stopping:
                self.progress = time.monotonic()
                with self._lock:
                    inbox, self._inbox = self._inbox, []
                for op, rid, ids, params in inbox:
                    if op.startswith("add"):
                        try:
                            core.add_request(rid, ids, params)
                        except ValueError as e:  # checked on arrival; only a race gets here
                            self._loop.call_soon_threadsafe(self._fail, rid, e)
                            continue
                        if op == "add-whole":
                            self._held.hold(rid)
                    else:
                        core.abort_request(rid)
                        self._held.drop(rid)
                if not core.has_unfinished():
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                outputs = self._held.filter(core.step())
                if outputs:
                    self._loop.call_soon_threadsafe(self._dispatch, outputs)
        except BaseException as e:  # a crashed step loop must fail requests, not hang them
            log.exception("engine step loop crashed")
            self.error = e
            self._loop.call_soon_threadsafe(self._fail_all, e)

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                status = FAILURE_STATUS.get(out.finish_reason)
                queue.put_nowait(RequestRejected(status, out.error or "generation failed") if status else out)

    def _fail(self, request_id: str, error: BaseException) -> None:
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put_nowait(error)

    def _fail_all(self, error: BaseException) -> None:
        for queue in self._queues.values():
            queue.put_nowait(error)
