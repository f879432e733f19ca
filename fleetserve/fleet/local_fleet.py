"""`fleetserve up`: a self-sizing fleet on this machine.

A router process (`fleetserve router --endpoint-file F`), the supervisor's pods
as child processes, and the autoscaler loop in this process: every interval
the supervisor checks its pods and samples their load, the autoscaler policy
turns the samples into a replica count, and the supervisor starts or drains
pods to match. SIGINT/SIGTERM: the router drains first (its requests in flight
still need the pods), then every pod drains, and nothing is left running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleetserve.fleet.autoscaler import Autoscaler, AutoscalerConfig
from fleetserve.fleet.http_probe import http_get
from fleetserve.fleet.supervisor import Supervisor, SupervisorConfig

log = logging.getLogger("fleetserve.fleet")


@dataclass
class FleetConfig:
    model_dir: str
    autoscaler: AutoscalerConfig
    host: str = "127.0.0.1"
    port: int = 8000
    policy: str = "p2c"
    serve_args: list[str] = field(default_factory=list)
    interval: float = 1.0  # seconds between autoscaler decisions
    workdir: Path | None = None  # endpoint file and pod logs (default: a temporary directory)
    status: bool = True  # the live status line
    events_path: Path | None = None  # JSON lines: one per decision, for plots and tests


def target_from_file(path: str | Path) -> float:
    """`target_per_pod` from a saved `fleetserve bench-slo` result."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        value = float(doc["target_per_pod"])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (write it with fleetserve bench-slo URL --json {path})") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a fleetserve bench-slo result (no numeric 'target_per_pod')") from None
    if not value > 0:
        raise ValueError(f"{path}: target_per_pod is {value}: the pod met the SLO at no load level; "
                         "fix the pod or loosen the SLO before sizing a fleet on it")
    return value


def pod_serve_args(serve_args: list[str], max_pods: int, cores: int) -> list[str]:
    """The `serve` options of a local fleet's pods. The pods share this host: unless the
    options say otherwise, each engine gets its share of the cores (at least one) as a
    Kubernetes pod gets its CPU request, not every core (`serve`'s default for a pod
    alone on its host), which would oversubscribe the host once the fleet scales out:
    beside two busy processes on 2 cores one engine thread served 85 req/s of correction
    traffic at the SLO, two 74 (BENCHMARKS.md, issue 19)."""
    if any(a == "--threads" or a.startswith("--threads=") for a in serve_args):
        return list(serve_args)
    return [*serve_args, "--threads", str(max(1, cores // max_pods))]


class RouterStats:
    """Requests/s through the router, from the growth of its request counter, and the requests
    it has sent to each endpoint (so that a new pod's first request is seen)."""

    def __init__(self, url: str):
        self.url = url
        self.last: tuple[float, float] | None = None
        self.rate = 0.0
        self.sent: dict[str, float] = {}  # endpoint URL -> requests sent to it

    async def sample(self) -> None:
        status, body = await http_get(self.url, "/metrics", 1.0)
        if status != 200:
            return
        total = 0.0
        for line in body.splitlines():
            if line.startswith(b"fleetserve_router_requests_total{"):
                total += float(line.rsplit(b" ", 1)[1])
            elif line.startswith(b"fleetserve_router_endpoint_requests_total{"):
                url = line.split(b'endpoint="', 1)[1].split(b'"', 1)[0].decode()
                self.sent[url] = float(line.rsplit(b" ", 1)[1])
        now = time.monotonic()
        if self.last is not None and now > self.last[0]:
            self.rate = max(0.0, (total - self.last[1]) / (now - self.last[0]))
        self.last = (now, total)


class LocalFleet:
    def __init__(self, cfg: FleetConfig):
        self.cfg = cfg
        self._tmp = None
        if cfg.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fleetserve-up-")
            cfg.workdir = Path(self._tmp.name)
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.endpoint_file = cfg.workdir / "endpoints.json"
        serve_args = pod_serve_args(cfg.serve_args, cfg.autoscaler.max_replicas, len(os.sched_getaffinity(0)))
        self.supervisor = Supervisor(SupervisorConfig(cfg.model_dir, self.endpoint_file, serve_args,
                                                      log_dir=cfg.workdir / "logs"))
        self.autoscaler = Autoscaler(cfg.autoscaler)
        self.router: subprocess.Popen | None = None
        self.url = f"http://{cfg.host}:{cfg.port}"
        self.stopping = asyncio.Event()

    def _start_router(self) -> None:
        self.endpoint_file.write_text('{"endpoints": []}\n')
        cmd = [sys.executable, "-m", "fleetserve", "router", "--host", self.cfg.host, "--port", str(self.cfg.port),
               "--endpoint-file", str(self.endpoint_file), "--policy", self.cfg.policy]
        log_path = self.cfg.workdir / "router.log"
        with open(log_path, "ab") as logf:
            self.router = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True,
                                           start_new_session=True)
        line = self.router.stdout.readline()
        if "router on" not in line:
            self.router.kill()
            self.router.wait()
            # the log goes with the work directory: say what it said
            said = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
            raise ValueError(f"the router did not start: {(said or [line.strip() or 'no output'])[-1]}")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            self._start_router()
        except BaseException:
            self._cleanup()
            raise
        stats = RouterStats(self.url)
        events = open(self.cfg.events_path, "a") if self.cfg.events_path else None
        print(f"fleet on {self.url} (model {self.cfg.model_dir}; pods {self.cfg.autoscaler.min_replicas}.."
              f"{self.cfg.autoscaler.max_replicas}, target {self.cfg.autoscaler.target_per_pod:g} in flight per pod; "
              f"logs in {self.cfg.workdir})", flush=True)
        self.supervisor.scale(max(self.cfg.autoscaler.min_replicas, 1 if self.cfg.autoscaler.max_replicas else 0))
        t0 = time.monotonic()
        last_shown, shown_at = None, -1e9
        try:
            while not self.stopping.is_set():
                if self.router.poll() is not None:
                    log.error("the router exited (%s); stopping the fleet", self.router.returncode)
                    return 1
                await self.supervisor.tick()
                await stats.sample()
                now = time.monotonic()
                self.supervisor.first_requests(now, stats.sent)
                ready = self.supervisor.ready()
                self.autoscaler.observe(now, [p.inflight for p in ready])
                d = self.autoscaler.decide(now, len(self.supervisor.active()), len(ready))
                if d.desired != len(self.supervisor.active()):
                    log.info("scaling %d -> %d (%s; load %.1f in flight)", len(self.supervisor.active()), d.desired,
                             d.reason, d.load)
                    self.supervisor.scale(d.desired)
                counts = self.supervisor.counts()
                if events is not None:
                    events.write(json.dumps({"t": round(now - t0, 3), **counts, "desired": d.desired,
                                             "load": round(d.load, 2), "panic": d.panic, "reason": d.reason,
                                             "rps": round(stats.rate, 1), "replaced": self.supervisor.replaced,
                                             "sick": self.supervisor.sick,
                                             "ready_in_s": [round(x, 2) for x in self.supervisor.ready_in],
                                             "serving_in_s": [round(x, 2) for x in self.supervisor.serving_in]})
                                 + "\n")
                    events.flush()
                if self.cfg.status:
                    line = (f"pods ready {counts['ready']} starting {counts['starting']} draining "
                            f"{counts['draining']} | in flight {d.load:6.1f} | {stats.rate:7.1f} req/s | "
                            f"desired {d.desired}{' PANIC' if d.panic else ''}")
                    if self.supervisor.ready_in:
                        line += f" | last pod ready in {self.supervisor.ready_in[-1]:.1f}s"
                    if self.supervisor.serving_in:
                        line += f", serving in {self.supervisor.serving_in[-1]:.1f}s"
                    if self.supervisor.replaced:
                        line += f" | replaced {self.supervisor.replaced} ({self.supervisor.sick} sick)"
                    if sys.stdout.isatty():
                        print(line.ljust(100), end="\r", flush=True)
                    elif (counts, d.desired, self.supervisor.replaced) != last_shown or now - shown_at >= 10:
                        # a log, not a terminal: a line when something changes, else every 10 s
                        print(line, flush=True)
                        last_shown, shown_at = (counts, d.desired, self.supervisor.replaced), now
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.cfg.interval)
                except asyncio.TimeoutError:
                    pass
            return 0
        finally:
            if events is not None:
                events.close()
            await self.shutdown()

    async def shutdown(self) -> None:
        print("\nstopping: draining the router, then every pod ...", flush=True)
        if self.router is not None and self.router.poll() is None:
            self.router.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 35
            while self.router.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.router.poll() is None:
                self.router.kill()
            self.router.wait()
        await self.supervisor.stop()
        print("fleet stopped", flush=True)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def run_fleet(cfg: FleetConfig) -> int:
    import uvloop

    return uvloop.run(LocalFleet(cfg).run())


def bundled_model() -> str:
    """The correction model that ships with the project (models/correct-6m beside the package)."""
    return str(Path(__file__).resolve().parents[2] / "models" / "correct-6m")
