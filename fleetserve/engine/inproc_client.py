"""The engine loop on a background thread of this process (the one-process pod).

The step loop runs in its own thread (torch releases the GIL inside kernels, so
the event loop keeps serving HTTP meanwhile). Adds and aborts cross into the
thread through a locked inbox; each step's outputs cross back in one
`call_soon_threadsafe` call, not one per token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from fleetserve.engine.client import EngineClient
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.engine_loop import EngineLoop
from fleetserve.engine.errors import EngineDeadError
from fleetserve.engine.ipc import Abort, Add
from fleetserve.engine.outputs import EngineStats, StepOutput

log = logging.getLogger(__name__)


class InProcessClient(EngineClient):
    def __init__(self, core: EngineCore, max_waiting: int = 0):
        super().__init__()
        self.core = core
        self.max_model_len = core.config.max_model_len
        self.max_num_seqs = core.config.max_num_seqs
        self.vocab_size = core.model_config.vocab_size
        self.engine_loop = EngineLoop(core, max_waiting)
        self._inbox: list[tuple[None, Add | Abort]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-core", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.engine_loop.stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def snapshot(self) -> EngineStats:
        return self.core.snapshot()

    def stalled_for(self) -> float:
        """Seconds since the step loop last turned (an idle loop turns every IDLE_WAIT_S)."""
        return time.monotonic() - self.engine_loop.progress.value

    def _submit(self, msg: Add | Abort) -> None:
        with self._lock:
            self._inbox.append((None, msg))
        self._wake.set()

    def _receive(self, timeout: float) -> list[tuple[None, Add | Abort]]:
        if timeout:
            self._wake.wait(timeout)
        self._wake.clear()
        with self._lock:
            inbox, self._inbox = self._inbox, []
        return inbox

    def _send(self, owner: None, outputs: list[StepOutput]) -> None:
        self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _run(self) -> None:
        try:
            self.engine_loop.run(self._receive, self._send)
        except BaseException as e:  # a crashed step loop must fail requests, not hang them
            log.exception("engine step loop crashed")
            self.error = e
            self._loop.call_soon_threadsafe(self._fail_all, EngineDeadError(f"engine failed: {e!r}"))
