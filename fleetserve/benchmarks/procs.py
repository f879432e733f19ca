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
from collections.abc import Iterator

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


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, what: str = "the server") -> None:
    """Return once GET url/ready answers 200; RuntimeError if `proc` exits first or time runs out."""
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
        time.sleep(0.2)


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
