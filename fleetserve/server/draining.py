"""uvicorn with the pod's drain: on SIGTERM the server turns not ready and
answers new requests 503 while the ones in flight finish, then stops (exit 0);
a second signal, or `drain_timeout`, stops it sooner.

For the one-process pod it also watches the engine thread: a crashed step loop
ends the server with `exit_status` 1, and a loop stuck for longer than
`stall_timeout` ends the process at once (status 1), so that the supervisor
replaces the pod instead of keeping one that cannot answer."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import uvicorn

from fleetserve.server.app import PodServer
from fleetserve.server.http_protocol import PodHttpProtocol
from fleetserve.server.options import ServerOptions

log = logging.getLogger(__name__)


def uvicorn_config(app, options: ServerOptions, **where) -> uvicorn.Config:
    """The pod's uvicorn settings (`where`: host and port, or none when sockets are passed to run)."""
    return uvicorn.Config(app, loop="uvloop", http=PodHttpProtocol.with_read_timeout(options.request_read_timeout),
                          log_level=options.log_level, access_log=False,
                          timeout_graceful_shutdown=options.drain_timeout, **where)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, pod: PodServer, drain_timeout: float = 30.0,
                 signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), parent_pid: int | None = None,
                 stall_timeout: float | None = None):
        """`parent_pid`: a supervisor whose death should drain this server too.
        `stall_timeout`: watch the in-process engine (InProcessClient) with this limit."""
        super().__init__(config)
        self.pod, self.drain_timeout, self.signals = pod, drain_timeout, signals
        self.parent_pid = parent_pid
        self.stall_timeout = stall_timeout
        self.drain_started: float | None = None
        self.exit_status = 0

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version re-raises the signal after shutting down, which
        # would end the process with -SIGTERM instead of exit 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()
            self.pod.draining = True
            log.warning("draining: %d requests in flight", self.pod.in_flight)
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.stall_timeout is not None and self.started:
            self._watch_engine()
        if self.parent_pid is not None and self.drain_started is None and os.getppid() != self.parent_pid:
            log.error("the pod supervisor is gone; draining")
            self._on_signal(signal.SIGTERM, None)
        if self.drain_started is not None and not self.should_exit:
            waited = time.monotonic() - self.drain_started
            if self.pod.in_flight == 0 or waited > self.drain_timeout:
                if self.pod.in_flight:
                    log.error("drain timeout: %d requests still in flight", self.pod.in_flight)
                self.should_exit = True
        return await super().on_tick(counter)

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
