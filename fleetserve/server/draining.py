"""uvicorn with the pod's drain: on SIGTERM the server turns not ready and
answers new requests 503 while the ones in flight finish, then stops (exit 0);
a second signal, or `drain_timeout`, stops it sooner."""

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

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, pod: PodServer, drain_timeout: float = 30.0,
                 signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), parent_pid: int | None = None):
        """`parent_pid`: a supervisor whose death should drain this server too."""
        super().__init__(config)
        self.pod, self.drain_timeout, self.signals = pod, drain_timeout, signals
        self.parent_pid = parent_pid
        self.drain_started: float | None = None

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
