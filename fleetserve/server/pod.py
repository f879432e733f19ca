"""The pod supervisor: the engine-core process that owns the model (or several,
each with the model and its own slots: `default_engines`), N frontend processes
sharing the HTTP port, and the rules that keep them honest.

- A frontend that dies is started again; the others keep serving meanwhile.
- If an engine core dies, its requests cannot complete: the frontends fail what
  they hold (503, which a router retries elsewhere), the supervisor stops them
  and exits 1, so that whoever runs the pod replaces it.
- Slow is not dead: a core whose step loop pauses (a long step, a busy host,
  SIGSTOP) is left alone; one whose loop has not turned for the stall limit
  (`--engine-stall-timeout`) is stuck: the supervisor kills it and exits 1.
- SIGTERM (or Ctrl-C) drains: each frontend turns not ready, answers new
  requests 503 and finishes the ones in flight; then the core stops and the
  supervisor exits 0.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.core_process import run_core_process
from fleetserve.engine.openmp import waiting
from fleetserve.http_common import check_port_free
from fleetserve.server.frontend import FrontendConfig, run_frontend
from fleetserve.server.options import ServerOptions

log = logging.getLogger("fleetserve.pod")
QUICK_DEATH_S = 10.0  # a frontend that dies this soon after starting is likely to again
MAX_QUICK_DEATHS = 3
# `default_engines`: a model up to this size runs one single-thread engine core per
# host core (measured on the bundled 6.2M-parameter model); a larger one, whose products
# stream its weights from memory at every step, one core over all the host's cores, so
# that the weights are held and read once (the 0.5B shape: 2 GB in float32). The bound
# itself lies between those two shapes and was not measured.
SMALL_MODEL_PARAMETERS = 100_000_000
MAX_ENGINES = 8  # each core process holds its own interpreter, torch and model (~0.5 GB)


def default_frontends() -> int:
    """One frontend per four cores, at least one and at most eight: the engine core
    wants most of the cores for its own threads."""
    return max(1, min(8, len(os.sched_getaffinity(0)) // 4))


def default_engines(parameters: int, device: str, threads: int | None) -> int:
    """Engine-core processes for a pod whose --engines was not given. A small model on a CPU:
    one per core the pod may use (at most MAX_ENGINES), each on one thread. Every parallel
    region of a multi-thread step waits for all of its threads, so whenever a frontend, a
    neighbour or the load generator runs on one core, the step's threads on the others wait
    too; single-thread cores do not wait for each other. Measured on 2 cores, correction
    traffic at p99 < 1 s (BENCHMARKS.md, issue 19, sixth part). A GPU, a larger model
    (SMALL_MODEL_PARAMETERS) or a given --threads: one core."""
    if device != "cpu" or parameters > SMALL_MODEL_PARAMETERS or threads is not None:
        return 1
    return max(1, min(MAX_ENGINES, len(os.sched_getaffinity(0))))


def default_threads(engines: int = 1) -> int:
    """The engine's intra-op threads when not given: every core the process may use. The
    HTTP side (the frontends, or a one-process pod's event loop) takes about 1 ms of CPU
    per correction request against the engine's 9-15 ms, so a core kept for it would idle
    most of the time, and the engine's OpenMP threads spin only briefly before they sleep
    (engine/openmp.py), so they yield the core when a frontend has work. Several engine
    cores share the cores out (at least one thread each). Measured on 2
    cores, correction traffic at p99 < 1 s (BENCHMARKS.md, issue 19, second part, waiting
    passively then): two threads served 1.25x one thread's rate on a quiet host and 0.87x
    beside two busy loops. (Spinning, two threads had
    served nothing there: the reason this default was once the cores minus the frontends.)"""
    return max(1, len(os.sched_getaffinity(0)) // engines)


class Pod:
    def __init__(self, model_dir: str | Path, config: EngineConfig, frontend: FrontendConfig, frontends: int):
        self.model_dir, self.config, self.frontend_cfg = str(model_dir), config, frontend
        self.num_frontends = frontends
        self.max_waiting, self.log_level = frontend.options.max_waiting, frontend.options.log_level
        self.ctx = mp.get_context("spawn")  # torch and threads in the parent must not leak into children
        self.cores: list[mp.Process] = []
        self.frontends: dict[int, mp.Process] = {}
        self.restarts = 0
        self.started_at: dict[int, float] = {}
        self.quick_deaths = 0  # frontends in a row that died soon after starting
        self.draining = False
        self.stall_timeout = frontend.options.engine_stall_timeout
        # Each core loop's last turn (time.monotonic()), one per engine core.
        self.progress = [self.ctx.Value("d", 0.0, lock=False) for _ in frontend.core_addresses]
        self._core_pipes = []

    def start_cores(self) -> None:
        """Start the engine cores; `cores_loaded` waits for their model."""
        for i, address in enumerate(self.frontend_cfg.core_addresses):
            here, there = self.ctx.Pipe(duplex=False)
            core = self.ctx.Process(target=run_core_process, name=f"fleetserve-engine-core-{i}",
                                    args=(self.model_dir, self.config, address, self.max_waiting, there,
                                          self.log_level, self.progress[i]))
            core.start()
            there.close()
            self.cores.append(core)
            self._core_pipes.append(here)

    def cores_loaded(self) -> dict:
        """Wait until every engine core has loaded the model; raises ValueError with a core's
        message when the model cannot be served."""
        info = {}
        for core, here, progress in zip(self.cores, self._core_pipes, self.progress):
            while not here.poll(0.2):
                if not core.is_alive():
                    raise RuntimeError(f"the engine core exited with status {core.exitcode} while loading the model")
            status, info = here.recv()
            if status != "ready":
                core.join(timeout=5)
                raise ValueError(info)
            progress.value = time.monotonic()
        return info

    def start_frontend(self, index: int) -> None:
        p = self.ctx.Process(target=run_frontend, args=(self.frontend_cfg, index), name=f"fleetserve-frontend-{index}")
        p.start()
        self.frontends[index] = p
        self.started_at[index] = time.monotonic()

    def supervise(self) -> int:
        """Watch the children until a drain ends (0) or the engine core dies or is stuck (1)."""
        while True:
            cores = {c.sentinel: c for c in self.cores}
            frontends = {p.sentinel: i for i, p in self.frontends.items()}
            ready = wait([*cores, *frontends], timeout=0.5)
            if self.draining:
                return self._finish_drain()
            for core, progress in zip(self.cores, self.progress):
                stuck = time.monotonic() - progress.value
                if self.stall_timeout and stuck > self.stall_timeout and core.is_alive():
                    log.error("an engine core's step loop has not turned for %.0fs (limit --engine-stall-timeout "
                              "%gs): it is stuck; stopping the pod so that it is replaced", stuck, self.stall_timeout)
                    core.kill()
                    self._stop_frontends(timeout=3.0)
                    return 1
            for s in ready:
                if s in cores:
                    log.error("the engine core %s exited (status %s); stopping the pod", cores[s].name,
                              cores[s].exitcode)
                    self._stop_frontends(timeout=3.0)
                    return 1
                index = frontends[s]
                p = self.frontends.pop(index)
                p.join()
                if self.draining:
                    continue
                quick = time.monotonic() - self.started_at[index] < QUICK_DEATH_S
                self.quick_deaths = self.quick_deaths + 1 if quick else 0
                if self.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("frontends keep dying at start-up (%d in a row); stopping the pod", self.quick_deaths)
                    self._stop_frontends(timeout=3.0)
                    return 1
                self.restarts += 1
                log.error("frontend %d exited (status %s); starting it again", index, p.exitcode)
                self.start_frontend(index)

    def drain(self, signum=None, frame=None) -> None:
        if self.draining:  # a second signal: stop now
            for p in self.frontends.values():
                p.kill()
            return
        self.draining = True
        for p in self.frontends.values():
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    def _finish_drain(self) -> int:
        ok = self._stop_frontends(timeout=self.frontend_cfg.options.drain_timeout + 5.0, signalled=True)
        self._stop_cores()
        return 0 if ok else 1

    def _stop_frontends(self, timeout: float, signalled: bool = False) -> bool:
        """True if every frontend exited by itself with status 0."""
        if not signalled:
            for p in self.frontends.values():
                if p.is_alive():
                    p.terminate()
        deadline = time.monotonic() + timeout
        ok = True
        for p in self.frontends.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
                ok = False
            ok = ok and p.exitcode == 0
        return ok

    def _stop_cores(self) -> None:
        for core in self.cores:
            if core.is_alive():
                core.terminate()
        for core in self.cores:
            core.join(timeout=10)
            if core.is_alive():
                core.kill()


def serve_pod(model_dir: str | Path, host: str, port: int, config: EngineConfig, frontends: int,
              options: ServerOptions = ServerOptions(), engines: int = 1) -> None:
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_port_free(host, port)  # before the model loads
    ipc_dir = tempfile.mkdtemp(prefix="fleetserve-")
    quiet = replace(options, log_level="warning") if options.log_level == "info" else options  # no per-child banners
    fcfg = FrontendConfig(str(model_dir), host, port, tuple(f"ipc://{ipc_dir}/core{i}" for i in range(engines)),
                          config.max_model_len, config.max_num_seqs, quiet)
    pod = Pod(model_dir, config, fcfg, frontends)
    signal.signal(signal.SIGTERM, pod.drain)
    signal.signal(signal.SIGINT, pod.drain)
    status = 1
    try:
        start = time.monotonic()
        pod.start_cores()
        # The frontends need no model: they start (interpreter, tokenizer, HTTP) while the core loads
        # it, and answer /ready once the core welcomes them.
        for i in range(frontends):
            pod.start_frontend(i)
        try:
            info = pod.cores_loaded()
        except BaseException:
            pod._stop_frontends(timeout=0.0)  # they never served: nothing to drain
            raise
        print(f"fleetserve: loaded {info['architecture']} ({info['parameters'] / 1e6:.1f}M parameters) from "
              f"{config.weights_from or model_dir} in {time.monotonic() - start:.1f}s; {config.max_num_seqs} slots x "
              f"{config.max_model_len} tokens{' per engine core' if engines > 1 else ''}; {engines} engine core"
              f"{'s' if engines > 1 else ''} x {config.threads or 'default'} thread(s) (waiting: {waiting()}); "
              f"{frontends} frontend process{'es' if frontends > 1 else ''}",
              file=sys.stderr)
        if info.get("hint"):
            print(f"fleetserve: {info['hint']}", file=sys.stderr)
        print(f"fleetserve: serving on http://{host}:{port}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
        status = pod.supervise()
    finally:
        if status != 0:
            pod._stop_frontends(timeout=3.0)
        pod._stop_cores()
        shutil.rmtree(ipc_dir, ignore_errors=True)
    if status:
        sys.exit(status)
