"""Names a pod's processes as `ps`, `top` and the benchmarks see them (Linux: the
process's `comm`, 15 characters at most), so that an operator tells the engine cores
from the frontends, which multiprocessing starts with identical command lines."""

from __future__ import annotations

ENGINE_CORE = "fleetserve-core"
FRONTEND = "fleetserve-http"


def set_process_name(name: str) -> None:
    """Best effort: a system without /proc keeps the interpreter's name."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def process_name(pid: int) -> str | None:
    """The name of process `pid`, or None when it has exited."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None
