"""A frontend's client of the pod's engine-core process, over ZeroMQ.

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

import zmq
import zmq.asyncio

from fleetserve.engine import ipc
from fleetserve.engine.client import EngineClient
from fleetserve.engine.errors import EngineDeadError
from fleetserve.engine.outputs import EngineStats

log = logging.getLogger(__name__)

STALE_AFTER_S = 2.0  # eight missed heartbeats: not ready until they resume


class CoreClient(EngineClient):
    def __init__(self, address: str, limits: ipc.Welcome):
        """`limits`: the engine's shape as the supervisor configured it (the core confirms it on
        connect, which may take as long as the model's load: frontends start while the core loads
        it, and the supervisor stops them if it fails)."""
        super().__init__()
        self.address = address
        self.max_model_len, self.max_num_seqs, self.vocab_size = (limits.max_model_len, limits.max_num_seqs,
                                                                  limits.vocab_size)
        self.welcome: ipc.Welcome | None = None
        self.stats = EngineStats()
        self.stalled = False  # no heartbeat for STALE_AFTER_S: not ready, but nothing is failed
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
        msg = ipc.to_frontend_decoder.decode(await self._sock.recv())
        if not isinstance(msg, ipc.Welcome):
            raise EngineDeadError(f"unexpected first message from the engine core: {msg!r}")
        self.welcome = msg
        self.max_model_len, self.max_num_seqs, self.vocab_size = msg.max_model_len, msg.max_num_seqs, msg.vocab_size
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

    def snapshot(self) -> EngineStats:
        return self.stats

    def _submit(self, msg: ipc.Add | ipc.Abort) -> None:
        # No high-water mark, so the send is done at once; pyzmq reports a failure
        # through the returned future, not by raising.
        try:
            done = self._sock.send(ipc.to_core_encoder.encode(msg), zmq.NOBLOCK)
            error = done.exception() if done.done() else None
        except zmq.ZMQError as e:
            error = e
        if error is not None and isinstance(msg, ipc.Add):
            raise EngineDeadError(f"cannot reach the engine core: {error}")

    # ---- background tasks ---------------------------------------------------------------------

    async def _read(self) -> None:
        decode = ipc.to_frontend_decoder.decode
        while True:
            msg = decode(await self._sock.recv())
            self._heard()
            if isinstance(msg, ipc.Outputs):
                self._deliver(msg.items)

    async def _read_beats(self) -> None:
        decode = ipc.to_frontend_decoder.decode
        while True:
            msg = decode(await self._beats.recv())
            self._heard()
            if isinstance(msg, EngineStats):
                self.stats = msg

    def _heard(self) -> None:
        self._last_seen = time.monotonic()
        if self.stalled:
            self.stalled = False
            log.warning("the engine core answers again; ready")

    async def _watch(self) -> None:
        tick = STALE_AFTER_S / 8
        while self.error is None:
            asleep = time.monotonic()
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = now - self._last_seen
            if not core_silent(silent, now - asleep, tick):
                continue
            if self.welcome.pid and process_gone(self.welcome.pid):
                self.error = EngineDeadError(f"the engine core (pid {self.welcome.pid}) has exited")
                log.error("%s; failing %d requests in flight", self.error, len(self._queues))
                self._fail_all(self.error)
            elif not self.stalled:
                self.stalled = True
                log.warning("no heartbeat from the engine core for %.1fs; not ready until it answers "
                            "(requests in flight are kept)", silent)


def core_silent(silent: float, slept: float, tick: float) -> bool:
    """Whether the core has said nothing for too long: `silent` seconds since its last message,
    judged after a sleep of `tick` that took `slept`. A sleep that overran by far means this
    process itself was paused or starved, so what the core sent meanwhile is here but unread:
    the readers run first, and the next turn judges. (Asking the sockets whether messages wait,
    ZMQ_EVENTS, would take their edge-triggered wake-up from pyzmq's asyncio readers, which
    then never wake again: a frontend that stops reading its outputs or heartbeats for good.)"""
    return silent > STALE_AFTER_S and slept < tick + STALE_AFTER_S / 2


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
