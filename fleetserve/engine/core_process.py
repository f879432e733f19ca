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
from collections import defaultdict
from multiprocessing.connection import Connection
from pathlib import Path

import zmq

from fleetserve.engine import ipc
from fleetserve.engine.engine_core import EngineConfig, EngineCore
from fleetserve.engine.outputs import FAILURE_STATUS, HeldAnswers

log = logging.getLogger(__name__)
HEARTBEAT_S = 0.25


class CoreLoop:
    def __init__(self, core: EngineCore, sock: zmq.Socket, max_waiting: int = 0, progress=None):
        """`progress`: a shared double (multiprocessing.Value) stamped with time.monotonic()
        at every loop turn, or None."""
        self.core, self.sock, self.max_waiting, self.progress = core, sock, max_waiting, progress
        self.owners: dict[str, bytes] = {}  # request id -> frontend identity
        self.frontends: set[bytes] = set()
        self.held = HeldAnswers()
        self.stopping = False

    def _send(self, identity: bytes, msg) -> None:
        self.sock.send_multipart([identity, ipc.to_frontend_encoder.encode(msg)], copy=False)

    def handle(self, identity: bytes, msg) -> None:
        core = self.core
        if isinstance(msg, ipc.Add):
            if self.max_waiting and core.num_waiting >= self.max_waiting:
                self._send(identity, ipc.Rejected(msg.request_id, 429,
                                                  f"the pod's waiting queue is full ({self.max_waiting} requests); "
                                                  "retry later"))
                return
            try:
                core.add_request(msg.request_id, msg.prompt_ids, msg.params.sampling())
            except ValueError as e:
                self._send(identity, ipc.Rejected(msg.request_id, 400, str(e)))
                return
            self.owners[msg.request_id] = identity
            if msg.whole:
                self.held.hold(msg.request_id)
        elif isinstance(msg, ipc.Abort):
            for rid in msg.request_ids:
                core.abort_request(rid)
                self.owners.pop(rid, None)
                self.held.drop(rid)
        elif isinstance(msg, ipc.Hello):
            self.frontends.add(identity)
            cfg = core.config
            self._send(identity, ipc.Welcome(cfg.max_model_len, cfg.max_num_seqs, core.model_config.vocab_size,
                                             os.getpid()))

    def _receive(self, timeout_ms: int) -> None:
        if not self.sock.poll(timeout_ms):
            return
        while True:
            try:
                identity, payload = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                msg = ipc.to_core_decoder.decode(payload)
            except Exception:  # a bad message must not take the pod down
                log.exception("undecodable message from a frontend")
                continue
            self.handle(identity, msg)

    def _step(self) -> None:
        outputs = self.held.filter(self.core.step())
        if not outputs:
            return
        by_frontend: dict[bytes, list] = defaultdict(list)
        for out in outputs:
            identity = self.owners.get(out.request_id)
            if identity is None:  # aborted in the meantime
                continue
            reason = out.finish_reason.value if out.finish_reason is not None else ""
            if reason:
                del self.owners[out.request_id]
            status = FAILURE_STATUS.get(out.finish_reason)
            if status:
                self._send(identity, ipc.Rejected(out.request_id, status, out.error or "generation failed"))
                continue
            by_frontend[identity].append((out.request_id, out.new_token_ids, reason))
        for identity, items in by_frontend.items():
            self._send(identity, ipc.Outputs(items))

    def run(self, parent_pid: int | None = None) -> None:
        last_check = 0.0
        while not self.stopping:
            now = time.monotonic()
            if self.progress is not None:
                self.progress.value = now
            busy = self.core.has_unfinished()
            self._receive(0 if busy else int(HEARTBEAT_S * 1000))
            if self.core.has_unfinished():
                self._step()
            if now - last_check >= HEARTBEAT_S:
                last_check = now
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.error("the pod supervisor is gone; stopping the engine core")
                    return


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
    message) through `ready`, then serves until SIGTERM, stamping `progress` (see CoreLoop)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s engine-core: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    parent = os.getppid()
    from fleetserve.model.config import ModelConfig, ModelLoadError
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
    loop = CoreLoop(core, sock, max_waiting, progress)
    heartbeat = Heartbeat(core, ctx, ipc.beats_address(address))
    heartbeat.start()

    def on_term(signum, frame) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    mc = core.model_config
    ready.send(("ready", {"architecture": mc.architecture, "parameters": mc.num_parameters}))
    try:
        loop.run(parent)
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=2)
        sock.close()
        ctx.term()
