"""The local supervisor: pods as child processes of this machine, and the
endpoint file the router follows.

Mechanism only; how many pods is the autoscaler's decision. A pod is
`fleetserve serve MODEL --port P` on a free port. It is *starting* until
`GET /ready` answers 200, then *ready* (listed in the endpoint file), and
*draining* once asked to go: it leaves the endpoint file first, so the router
stops sending to it, then gets SIGTERM, finishes what it has in flight and exits
on its own (the pod's graceful drain). A pod that dies unasked is replaced.

A ready pod's `GET /health` is checked at every tick. A pod that is alive but
sick is replaced too: one that answers /health with an error `sick_after` times
in a row, or that has not answered at all for `unresponsive_timeout` seconds
(long enough that a busy host's slow answers never count). It leaves the endpoint
file at once and its whole process group is killed: a sick pod cannot drain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from fleetserve.fleet.discovery.file import write_endpoint_file
from fleetserve.fleet.load_signal import InflightMeter
from fleetserve.http_common import free_port

log = logging.getLogger("fleetserve.supervisor")
RECENT_STARTS = 32


@dataclass
class Pod:
    port: int
    proc: subprocess.Popen
    started: float
    state: str = "starting"  # starting | ready | draining
    drain_at: float | None = None
    inflight: float = 0.0  # mean waiting + running in its engine over the last tick
    terminated: bool = False  # SIGTERM sent
    health_errors: int = 0  # /health answered with an error, times in a row
    healthy_at: float = 0.0  # when /health last answered 200
    serving: bool = False  # the router has sent it a request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class SupervisorConfig:
    model_dir: str
    endpoint_file: Path
    serve_args: list[str] = field(default_factory=list)  # extra `fleetserve serve` options
    log_dir: Path | None = None
    start_timeout: float = 300.0
    drain_grace: float = 1.5  # seconds between leaving the endpoint file and SIGTERM (router's poll is 0.5 s)
    drain_timeout: float = 60.0  # SIGKILL after this long draining
    sick_after: int = 3  # /health error answers in a row that make a ready pod sick
    unresponsive_timeout: float = 30.0  # seconds without any /health answer that make it sick


class Supervisor:
    def __init__(self, cfg: SupervisorConfig):
        self.cfg = cfg
        self.pods: list[Pod] = []
        self.replaced = 0  # pods that died or were sick, each replaced
        self.sick = 0  # of those, the ones found sick (alive but failing health checks)
        # Seconds from exec to ready, and to the router's first request, of the latest pods (bounded:
        # every decision's event line carries them, for as long as the fleet runs).
        self.ready_in: deque[float] = deque(maxlen=RECENT_STARTS)
        self.serving_in: deque[float] = deque(maxlen=RECENT_STARTS)
        self._written: list[dict] | None = None
        self._meter = InflightMeter()

    # --- what the autoscaler sees ------------------------------------------------
    def active(self) -> list[Pod]:
        """Pods that count towards the replica count (starting or ready, not draining)."""
        return [p for p in self.pods if p.state != "draining"]

    def ready(self) -> list[Pod]:
        return [p for p in self.pods if p.state == "ready"]

    def counts(self) -> dict[str, int]:
        out = {"starting": 0, "ready": 0, "draining": 0}
        for p in self.pods:
            out[p.state] += 1
        return out

    def first_requests(self, now: float, sent: dict[str, float]) -> None:
        """Note the pods the router has sent their first request (`sent`: requests per endpoint URL):
        exec to first request is a new pod's whole cost to the fleet, decision to work."""
        for pod in self.pods:
            if not pod.serving and sent.get(pod.url, 0) > 0:
                pod.serving = True
                self.serving_in.append(now - pod.started)

    # --- actions ----------------------------------------------------------------
    def scale(self, n: int) -> None:
        active = self.active()
        for _ in range(n - len(active)):
            self._start()
        if n < len(active):
            # drain the ones doing least: starting pods first, then the least loaded
            victims = sorted(active, key=lambda p: (p.state == "ready", p.inflight, -p.started))[:len(active) - n]
            for p in victims:
                self._drain(p)
        self._write()

    def _start(self) -> Pod:
        port = free_port()
        cmd = [sys.executable, "-m", "fleetserve", "serve", self.cfg.model_dir, "--port", str(port),
               *self.cfg.serve_args]
        out = subprocess.DEVNULL
        if self.cfg.log_dir is not None:
            self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.cfg.log_dir / f"pod-{port}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        pod = Pod(port, proc, time.monotonic())
        self.pods.append(pod)
        log.info("starting pod on port %d (pid %d)", port, proc.pid)
        return pod

    def _drain(self, pod: Pod) -> None:
        pod.state = "draining"
        pod.drain_at = time.monotonic()
        log.info("draining pod on port %d", pod.port)

    def _write(self) -> None:
        entries = [{"url": p.url, "ready": True} for p in self.ready()]
        if entries != self._written:
            write_endpoint_file(self.cfg.endpoint_file, entries)
            self._written = entries

    # --- the loop -----------------------------------------------------------------
    async def tick(self) -> None:
        """Check every pod once: readiness, deaths, drains due; sample load; rewrite the endpoint file."""
        from fleetserve.fleet.load_signal import pod_health, pod_ready

        now = time.monotonic()
        ready = self.ready()
        healths = dict(zip([p.port for p in ready], await asyncio.gather(*(pod_health(p.url) for p in ready))))
        for pod in list(self.pods):
            code = pod.proc.poll()
            if code is not None:
                self.pods.remove(pod)
                if pod.state == "draining":
                    log.info("pod on port %d drained and exited (%d)", pod.port, code)
                else:
                    log.warning("pod on port %d died (exit %s) while %s; replacing it", pod.port, code, pod.state)
                    self._replace()
                continue
            if pod.port in healths and self._sick(pod, healths[pod.port], now):
                continue
            if pod.state == "starting":
                if await pod_ready(pod.url):
                    pod.state = "ready"
                    pod.healthy_at = now
                    self.ready_in.append(now - pod.started)
                    log.info("pod on port %d ready after %.1fs", pod.port, now - pod.started)
                elif now - pod.started > self.cfg.start_timeout:
                    log.error("pod on port %d not ready after %.0fs; replacing it", pod.port, self.cfg.start_timeout)
                    pod.proc.kill()
            elif pod.state == "draining":
                since = now - pod.drain_at
                if since >= self.cfg.drain_grace and not pod.terminated:
                    pod.proc.send_signal(signal.SIGTERM)
                    pod.terminated = True
                elif since >= self.cfg.drain_grace + self.cfg.drain_timeout:
                    log.error("pod on port %d still draining after %.0fs; killing it", pod.port, since)
                    pod.proc.kill()
        ready = self.ready()
        loads = await self._meter.read_all([p.url for p in ready])
        for pod, load in zip(ready, loads):
            if load is not None:
                pod.inflight = load
        self._write()

    def _sick(self, pod: Pod, status: int, now: float) -> bool:
        """Count one /health answer (0: none); replace the pod and return True when it is sick."""
        if status == 200:
            pod.health_errors, pod.healthy_at = 0, now
            return False
        if status:
            pod.health_errors += 1
        silent = now - pod.healthy_at
        if pod.health_errors < self.cfg.sick_after and silent < self.cfg.unresponsive_timeout:
            return False
        why = (f"/health answered {status} {pod.health_errors} times in a row" if pod.health_errors >= self.cfg.sick_after
               else f"no /health answer for {silent:.0f}s")
        log.warning("pod on port %d is sick (%s); killing and replacing it", pod.port, why)
        self.pods.remove(pod)
        self._write()  # out of the router's endpoints before anything else
        try:
            os.killpg(pod.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pod.proc.wait()
        self.sick += 1
        self._replace()
        return True

    def _replace(self) -> None:
        self.replaced += 1
        self._start()

    async def stop(self, timeout: float = 60.0) -> None:
        """Drain every pod and wait for them all to exit (SIGKILL what is left after `timeout`)."""
        for pod in self.pods:
            if pod.state != "draining":
                self._drain(pod)
        self._write()
        await asyncio.sleep(min(self.cfg.drain_grace, 0.6))
        for pod in self.pods:
            if pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.proc.poll() is None for p in self.pods) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for pod in self.pods:
            if pod.proc.poll() is None:
                os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait()
        self.pods.clear()
