"""Child processes for benchmarks and demos: started pinned to a core, ready when they say where
they listen, or a pod on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from fleetserve.engine.process_name import ENGINE_CORE, FRONTEND, process_name
from fleetserve.http_common import free_port


def start_announcing(args: list[str], core: int | None = None,
                      module: str = "fleetserve") -> tuple[subprocess.Popen, str]:
    """Run `python -m MODULE ARGS` (a stub server, a router ...) pinned to `core`; returns the
    process and the http:// URL from the first line it prints."""
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=pin)
    line = proc.stdout.readline()
    m = re.search(r"http://\S+", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"`{module} {' '.join(args)}` did not start: {line!r} {proc.stderr.read()}")
    return proc, m.group(0)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, what: str = "the server",
               poll: float = 0.2) -> None:
    """Return once GET url/ready answers 200 (asked every `poll` seconds); RuntimeError if `proc`
    exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} at {url} was not ready within {timeout:.0f}s")
        time.sleep(poll)


@contextlib.contextmanager
def pod(model: str, args: list[str], timeout: float = 120) -> Iterator[tuple[str, int]]:
    """A `fleetserve serve` process on a free port: yields (URL, pid) once it is ready."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve", "serve", model, "--port", str(port),
                             "--log-level", "warning", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc, timeout, "the pod")
        except RuntimeError as e:
            if proc.poll() is None:
                proc.kill()
            raise RuntimeError(f"{e}: {proc.stderr.read().decode()[-2000:]}") from None
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """`n` processes that spin on the CPU for as long as the block runs (a busy host)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, in order of discovery."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in Path(f"/proc/{p}/task").iterdir()
                    for k in (t / "children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    """A process's command line, words joined by spaces; "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pod_processes(pid: int) -> dict[str, list[int]]:
    """A running pod's processes by role, by the names they give themselves
    (engine/process_name.py): "engine core" (one or more), "frontends" and "supervisor";
    a one-process pod is all "pod". multiprocessing's resource tracker (also a child) is no role."""
    roles: dict[str, list[int]] = {"engine core": [], "frontends": []}
    for child in descendants(pid):
        name = process_name(child)
        if name == ENGINE_CORE:
            roles["engine core"].append(child)
        elif name == FRONTEND:
            roles["frontends"].append(child)
    if not roles["engine core"] and not roles["frontends"]:
        return {"pod": [pid]}
    return {**roles, "supervisor": [pid]}


def pod_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by a running pod's processes, per role (pod_processes)."""
    def cpu(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return _per_role(pid, "stat", cpu)


def pod_memory(pid: int) -> dict[str, float]:
    """Resident memory (MiB) of a running pod's processes now, per role (pod_processes)."""
    def resident(statm: str) -> float:
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    return {role: round(mib, 1) for role, mib in _per_role(pid, "statm", resident).items()}


def _per_role(pid: int, proc_file: str, read: Callable[[str], float]) -> dict[str, float]:
    """`read` of each process's /proc/PID/`proc_file`, summed per role (0 for a process gone meanwhile)."""
    def one(p: int) -> float:
        try:
            return read(Path(f"/proc/{p}/{proc_file}").read_text())
        except OSError:
            return 0.0

    return {role: sum(one(p) for p in pids) for role, pids in pod_processes(pid).items()}
