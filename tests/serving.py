"""Start `fleetserve serve` in its own process for a test, and stop it after."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from fleetserve.http_common import free_port
from fleetserve.benchmarks.procs import wait_ready


def _ready_or_fail(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    try:
        wait_ready(url, proc, timeout, what)
    except RuntimeError as e:
        proc.kill()
        pytest.fail(f"{e}: {proc.stdout.read().decode()}")


@contextlib.contextmanager
def running_server(model_dir, *args: str, timeout: float = 60) -> Iterator[str]:
    with server_process(model_dir, *args, timeout=timeout) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(model_dir, *args: str, timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fleetserve serve` on a free port, ready; yields (url, process)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetserve", "serve", str(model_dir), "--port", str(port),
         "--log-level", "warning", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    _ready_or_fail(url, proc, timeout, "server")
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def serving_in_thread(pod, stall_timeout: float | None = None) -> Iterator[tuple[str, object]]:
    """A PodServer served over real HTTP by its DrainingServer, as `fleetserve serve
    --frontends 0` runs it but on a thread of this process (so that a test can reach into
    the engine); yields (url, the DrainingServer) once ready, and stops it after."""
    import threading
    import time

    from fleetserve.server.draining import DrainingServer
    from fleetserve.server.http_server import listen_socket
    from fleetserve.server.options import ServerOptions

    port = free_port()
    runner = DrainingServer(pod, ServerOptions(log_level="warning"), stall_timeout=stall_timeout)
    thread = threading.Thread(target=runner.run, args=(listen_socket("127.0.0.1", port),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5):
                break
        except OSError:
            assert thread.is_alive() and time.monotonic() < deadline, "the in-thread pod did not turn ready"
            time.sleep(0.05)
    try:
        yield url, runner
    finally:
        runner.stop()
        thread.join(timeout=30)


@contextlib.contextmanager
def announcing_process(*args: str, stop_timeout: float = 10) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fleetserve ARGS` for a command that prints its http:// URL first (stub-server, router);
    yields (url, process) and terminates it after."""
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://\S+", line)
        assert m, f"`fleetserve {args[0]}` did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield m.group(0), proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=stop_timeout)


@contextlib.contextmanager
def stub_process(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fleetserve stub-server` (a model-less stand-in pod) on a free port; yields (url, process)."""
    with announcing_process("stub-server", "--port", "0", *args) as out:
        yield out


@contextlib.contextmanager
def stub(*args: str) -> Iterator[str]:
    with stub_process(*args) as (url, _):
        yield url


def stats(url: str) -> dict:
    """What a stub server did: {"requests": n, "failed": n}."""
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def running_fleet(model_dir, *args: str, timeout: float = 120) -> Iterator[str]:
    """`fleetserve up` (the README's main job: router + autoscaled pods) on a free port; yields its URL
    once the router has a ready pod, and stops it (SIGTERM: drain, nothing left running) after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve", "up", "--model", str(model_dir), "--port",
                             str(port), "--no-status", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _ready_or_fail(url, proc, timeout, "fleet")
    try:
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=120) == 0


def raw_http(url: str, data: bytes, wait: float = 5.0) -> bytes:
    """Send `data` as is on a new connection to `url`; what came back until the server
    closed the connection (or `wait` seconds of silence)."""
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    out = b""
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def error_answer(answer: bytes) -> tuple[int, dict]:
    """(status, the error object) of a raw HTTP answer; fails the test if it is not one."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"], err
    return status, err


# Requests an HTTP layer must refuse itself, with an OpenAI error object: (name, bytes, status, in the message).
MALFORMED_HTTP = [
    ("not HTTP at all", b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
    ("bad Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", 400,
     "Content-Length"),
    ("bad chunk size", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n"
     b"0\r\n\r\n", 400, "chunk"),
    ("64 KB URL", b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URL"),
    ("70 KB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, "headers"),
]
