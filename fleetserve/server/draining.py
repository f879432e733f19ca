"""A pod's serving process from start to exit: the engine started, HTTP served, and the
drain: on SIGTERM the server turns not ready and answers new requests 503 while the
ones in flight finish, then stops (exit 0); a second signal, or `drain_timeout`,
stops it sooner.

For the one-process pod it also watches the engine thread: a crashed step loop
ends the server with `exit_status` 1, and a loop stuck for longer than
`stall_timeout` ends the process at once (status 1), so that the supervisor
replaces the pod instead of keeping one that cannot answer."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time

import uvloop

from fleetserve.server.app import PodServer
from fleetserve.server.http_server import HttpServer
from fleetserve.server.options import ServerOptions

log = logging.getLogger(__name__)


class DrainingServer:
    def __init__(self, pod: PodServer, options: ServerOptions,
                 signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), parent_pid: int | None = None,
                 stall_timeout: float | None = None):
        """`parent_pid`: a supervisor whose death should drain this server too.
        `stall_timeout`: watch the in-process engine (InProcessClient) with this limit."""
        self.pod, self.drain_timeout, self.signals = pod, options.drain_timeout, signals
        self.http = HttpServer(pod.handle, options.max_body_bytes, options.request_read_timeout)
        self.parent_pid = parent_pid
        self.stall_timeout = stall_timeout
        self.drain_started: float | None = None
        self.should_exit = False
        self.exit_status = 0
        self.finished = False  # run has returned

    def run(self, sock: socket.socket) -> None:
        """Serve on the listening socket `sock` until drained or stopped."""
        try:
            uvloop.run(self._main(sock))
        finally:
            self.finished = True

    def stop(self) -> None:
        """Stop without draining (from any thread)."""
        self.should_exit = True

    async def _main(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                loop.add_signal_handler(sig, self._on_signal)
        await self.pod.engine.start()
        try:
            await self.http.serve([sock], self._tick, grace=self.drain_timeout)
        finally:
            self.pod.engine.stop()

    def _on_signal(self) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()
            self.pod.draining = True
            log.warning("draining: %d requests in flight", self.pod.in_flight)
        else:
            self.should_exit = True

    def _tick(self) -> bool:
        """Asked ten times a second: time to stop?"""
        if self.stall_timeout is not None:
            self._watch_engine()
        if self.parent_pid is not None and self.drain_started is None and os.getppid() != self.parent_pid:
            log.error("the pod supervisor is gone; draining")
            self._on_signal()
        if self.drain_started is not None and not self.should_exit:
            waited = time.monotonic() - self.drain_started
            if self.pod.in_flight == 0 or waited > self.drain_timeout:
                if self.pod.in_flight:
                    log.error("drain timeout: %d requests still in flight", self.pod.in_flight)
                self.should_exit = True
        return self.should_exit

    def _watch_engine(self) -> None:
        engine = self.pod.engine
        if not engine.alive and not self.should_exit:
            log.error("the engine's step loop has stopped (%r); exiting so that the pod is replaced", engine.error)
            self.exit_status = 1
            self.should_exit = True
        elif self.stall_timeout and engine.stalled_for() > self.stall_timeout:
            log.error("the engine's step loop has not turned for %.0fs (limit --engine-stall-timeout %gs): it is "
                      "stuck; exiting so that the pod is replaced", engine.stalled_for(), self.stall_timeout)
            logging.shutdown()
            os._exit(1)  # the stuck thread would hold up an orderly shutdown
