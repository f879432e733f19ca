"""The engine-core process of a pod: owns the model and runs the step loop;
frontends reach it over one ZeroMQ ROUTER socket.

Each loop turn takes every message that arrived (adds, aborts), runs one step
when there is work, and answers each frontend with one message holding all of
its requests that advanced. A heartbeat thread publishes the engine's state four
times a second on a socket of its own, whatever the step loop is doing, so a
frontend tells a frozen or vanished core from a slow step and has fresh figures
for its metrics without asking. Each loop turn also stamps `progress`, a
timestamp shared with the pod supervisor, which replaces a core whose loop has
not turned for longer than the stall limit (stuck, not slow).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from fleetserve.engine import ipc
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_loop import EngineLoop
from fleetserve.engine.outputs import StepOutput
from fleetserve.engine.process_name import ENGINE_CORE, set_process_name

if TYPE_CHECKING:  # torch: loaded in the core process only, so that the supervisor starts without it
    from fleetserve.engine.engine_core import EngineCore

log = logging.getLogger(__name__)
HEARTBEAT_S = 0.25


class CoreTransport:
    """Drives the engine loop from the core's ROUTER socket: what arrives from the
    frontends goes in, each step's outputs go back as one message per frontend."""

    def __init__(self, loop: EngineLoop, sock: zmq.Socket, parent_pid: int | None = None):
        self.loop, self.sock, self.parent_pid = loop, sock, parent_pid
        self._checked = 0.0

    def receive(self, timeout_s: float) -> list[tuple[bytes, ipc.Add | ipc.Abort]]:
        if not self.sock.poll(int(timeout_s * 1000)):
            return []
        arrived = []
        while True:
            try:
                identity, payload = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return arrived
            try:
                msg = ipc.to_core_decoder.decode(payload)
            except Exception:  # a bad message must not take the pod down
                log.exception("undecodable message from a frontend")
                continue
            if isinstance(msg, ipc.Hello):
                core = self.loop.core
                self.send_msg(identity, ipc.Welcome(core.config.max_model_len, core.config.max_num_seqs,
                                                    core.model_config.vocab_size, os.getpid()))
            else:
                arrived.append((identity, msg))

    def send(self, identity: bytes, outputs: list[StepOutput]) -> None:
        self.send_msg(identity, ipc.Outputs(outputs))

    def send_msg(self, identity: bytes, msg) -> None:
        self.sock.send_multipart([identity, ipc.to_frontend_encoder.encode(msg)], copy=False)

    def orphaned(self) -> bool:
        """True once the pod supervisor is gone (checked every HEARTBEAT_S)."""
        now = time.monotonic()
        if self.parent_pid is None or now - self._checked < HEARTBEAT_S:
            return False
        self._checked = now
        if os.getppid() != self.parent_pid:
            log.error("the pod supervisor is gone; stopping the engine core")
            return True
        return False

    def run(self) -> None:
        self.loop.run(self.receive, self.send, self.orphaned)


class Heartbeat(threading.Thread):
    """Publishes the core's state every HEARTBEAT_S from its own thread and socket:
    beats stop only when the whole process stops (killed, frozen), never because
    a step is long. Reading the engine's counters from here is safe under the GIL."""

    def __init__(self, core: EngineCore, ctx: zmq.Context, address: str):
        super().__init__(name="heartbeat", daemon=True)
        self.core, self.ctx, self.address = core, ctx, address
        self.done = threading.Event()

    def run(self) -> None:
        sock = self.ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        try:
            while not self.done.wait(HEARTBEAT_S):
                sock.send(ipc.to_frontend_encoder.encode(self.core.snapshot()))
        finally:
            sock.close()


def run_core_process(model_dir: str | Path, config: EngineConfig, address: str, max_waiting: int,
                     ready: Connection, log_level: str = "warning", progress=None) -> None:
    """Entry point of the engine-core process. Reports ("ready", info) or ("error",
    message) through `ready`, then serves until SIGTERM, stamping `progress` (see EngineLoop)."""
    set_process_name(ENGINE_CORE)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s engine-core: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    parent = os.getppid()
    from fleetserve.engine.engine_core import EngineCore
    from fleetserve.model.config import ModelConfig, ModelLoadError
    from fleetserve.model.loader import bfloat16_hint
    from fleetserve.model.tokenizer import Tokenizer

    try:
        model_config = ModelConfig.from_dir(model_dir)
        tokenizer = Tokenizer(model_dir)
        core = EngineCore(model_dir, config, tokenizer.eos_token_ids, model_config)
    except Exception as e:  # the supervisor prints it and exits: a bad model must fail at start-up
        clear = isinstance(e, (ModelLoadError, ValueError, FileNotFoundError))
        ready.send(("error", str(e) if clear else f"{type(e).__name__}: {e}"))
        return
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a frontend that went away: drop its messages quietly
    sock.setsockopt(zmq.LINGER, 0)
    # No high-water mark: a frontend that is paused (a busy host, SIGSTOP) gets every
    # answer when it resumes instead of losing those beyond the mark.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(address)
    loop = EngineLoop(core, max_waiting, progress)
    transport = CoreTransport(loop, sock, parent)
    heartbeat = Heartbeat(core, ctx, ipc.beats_address(address))
    heartbeat.start()

    def on_term(signum, frame) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    mc = core.model_config
    ready.send(("ready", {"architecture": mc.architecture, "parameters": mc.num_parameters,
                          "hint": bfloat16_hint(core.config.dtype, core.config.device)}))
    try:
        transport.run()
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=2)
        sock.close()
        ctx.term()
