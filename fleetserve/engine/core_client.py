"""A frontend's handle on the pod's engine-core process, with the same face as
`AsyncEngine` (generate, check_request, snapshot, alive), so the HTTP server
does not care whether the engine runs in its own process or another one.

One DEALER socket carries this frontend's adds and aborts out and the core's
per-step outputs back; a reader task fans outputs out to the waiting requests.
A SUB socket receives the core's heartbeats, which a thread of the core sends
whatever its step loop is doing.

Slow is not dead: when the heartbeats pause (the core is frozen or starved of
CPU) the frontend reports itself not ready, so routers send work elsewhere, but
keeps every request; when they resume it is ready again. Only a core process
that no longer exists makes requests fail (EngineDeadError, at once); the pod
supervisor then stops the pod, and replaces a core that is stuck for good.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from fleetserve.engine import ipc
from fleetserve.engine.checks import check_request
from fleetserve.engine.errors import EngineDeadError, RequestRejected
from fleetserve.engine.outputs import FinishReason, StepOutput
from fleetserve.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

STALE_AFTER_S = 2.0  # eight missed heartbeats: not ready until they resume


class CoreClient:
    def __init__(self, address: str, limits: ipc.Welcome, connect_timeout: float = 60.0):
        """`limits`: the engine's shape as the supervisor configured it (the core confirms it on connect)."""
        self.address = address
        self.connect_timeout = connect_timeout
        self.limits = limits
        self.welcome: ipc.Welcome | None = None
        self.stats = ipc.Stats(0, 0, 0, 0, 0, 0.0, 0)
        self.error: BaseException | None = None
        self.stalled = False  # no heartbeat for STALE_AFTER_S: not ready, but nothing is failed
        self._queues: dict[str, asyncio.Queue] = {}
        self._last_seen = 0.0
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._beats: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 0)  # adds and aborts are never dropped (see the core's socket)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.connect(self.address)
        self._beats = self._ctx.socket(zmq.SUB)
        self._beats.setsockopt(zmq.LINGER, 0)
        self._beats.setsockopt(zmq.SUBSCRIBE, b"")
        self._beats.connect(ipc.beats_address(self.address))
        await self._sock.send(ipc.to_core_encoder.encode(ipc.Hello(os.getpid())))
        if not await self._sock.poll(int(self.connect_timeout * 1000)):
            raise EngineDeadError(f"no answer from the engine core at {self.address}")
        msg = ipc.to_frontend_decoder.decode(await self._sock.recv())
        if not isinstance(msg, ipc.Welcome):
            raise EngineDeadError(f"unexpected first message from the engine core: {msg!r}")
        self.welcome = self.limits = msg
        self._last_seen = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._read_beats()),
                       loop.create_task(self._watch())]

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for sock in (self._sock, self._beats):
            if sock is not None:
                sock.close()
        if self._ctx is not None:
            self._ctx.term()

    @property
    def alive(self) -> bool:
        return self.welcome is not None and self.error is None

    @property
    def ready(self) -> bool:
        return self.alive and not self.stalled

    # ---- the AsyncEngine face ---------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        return self.limits.max_model_len

    @property
    def max_num_seqs(self) -> int:
        return self.limits.max_num_seqs

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        check_request(prompt_ids, params, self.limits.max_model_len, self.limits.vocab_size)

    def snapshot(self) -> ipc.Stats:
        return self.stats

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                       whole: bool = False) -> AsyncIterator[StepOutput]:
        """Yield this request's step outputs until it finishes; leaving early aborts it in the core.
        `whole`: one output with every token, when the request ends."""
        if not self.alive:
            raise EngineDeadError(f"engine core is not running: {self.error!r}")
        self.check_request(prompt_ids, params)
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = queue
        finished = False
        try:
            await self._sock.send(ipc.to_core_encoder.encode(ipc.Add(request_id, list(prompt_ids),
                                                                     ipc.Params.of(params), whole)))
            while True:
                out = await queue.get()
                if isinstance(out, BaseException):
                    finished = True  # the core holds nothing of it: no abort to send
                    raise out
                finished = out.finish_reason is not None
                yield out
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished and self.error is None:  # given up here (timeout, client gone): free its slot there
                try:
                    self._sock.send(ipc.to_core_encoder.encode(ipc.Abort([request_id])), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    # ---- background tasks ---------------------------------------------------------------------

    async def _read(self) -> None:
        decode = ipc.to_frontend_decoder.decode
        while True:
            msg = decode(await self._sock.recv())
            self._heard()
            if isinstance(msg, ipc.Outputs):
                for rid, tokens, reason in msg.items:
                    q = self._queues.get(rid)
                    if q is not None:
                        q.put_nowait(StepOutput(rid, tokens, FinishReason(reason) if reason else None))
            elif isinstance(msg, ipc.Rejected):
                q = self._queues.get(msg.request_id)
                if q is not None:
                    q.put_nowait(RequestRejected(msg.status, msg.message))

    async def _read_beats(self) -> None:
        decode = ipc.to_frontend_decoder.decode
        while True:
            msg = decode(await self._beats.recv())
            self._heard()
            if isinstance(msg, ipc.Stats):
                self.stats = msg

    def _heard(self) -> None:
        self._last_seen = time.monotonic()
        if self.stalled:
            self.stalled = False
            log.warning("the engine core answers again; ready")

    async def _watch(self) -> None:
        while self.error is None:
            await asyncio.sleep(STALE_AFTER_S / 8)
            silent = time.monotonic() - self._last_seen
            if silent <= STALE_AFTER_S or self._pending(self._beats) or self._pending(self._sock):
                continue
            if self.welcome.pid and process_gone(self.welcome.pid):
                self.error = EngineDeadError(f"the engine core (pid {self.welcome.pid}) has exited")
                log.error("%s; failing %d requests in flight", self.error, len(self._queues))
                for q in self._queues.values():
                    q.put_nowait(self.error)
            elif not self.stalled:
                self.stalled = True
                log.warning("no heartbeat from the engine core for %.1fs; not ready until it answers "
                            "(requests in flight are kept)", silent)

    @staticmethod
    def _pending(sock: zmq.asyncio.Socket) -> bool:
        """Messages already here but not yet read (this process itself was paused)."""
        return bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def process_gone(pid: int) -> bool:
    """True when no process `pid` runs: it has exited, or is a zombie its parent has not
    reaped yet (Linux /proc; the pod's processes are siblings, so kill(pid, 0) would
    still find a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in (b"Z", b"X")
