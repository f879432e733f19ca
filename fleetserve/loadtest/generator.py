"""The open-loop sender: one event loop that sends each request when the
schedule says, whether or not earlier ones have answered.

A request sent later than its due time is not dropped: it goes out as soon as
the client can, and its lateness (`start - due`) is recorded as client lag,
so a report can tell an overloaded client from a slow server.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import uvloop

from fleetserve.loadtest.client import Call, Pool, now
from fleetserve.loadtest.records import Records
from fleetserve.loadtest.workload import Workload

Publish = Callable[[int, int, int], None]  # (sent, done, errors) so far, for the progress line


@dataclass
class SendPlan:
    """What one sender process sends: its share of the schedule. Picklable."""
    url: str
    workload: Workload
    due: np.ndarray  # seconds from the start, sorted
    index: np.ndarray  # arrival numbers in the whole schedule
    prompt: np.ndarray  # prompt number per arrival
    timeout: float = 30.0
    max_connections: int = 10_000
    shadow_url: str | None = None
    keep_texts: bool = False


@dataclass(repr=False)  # asyncio reprs a finished task's result; these hold every record
class SendResult:
    records: Records
    shadow: Records | None = None
    peak_connections: int = 0
    stats: dict = field(default_factory=dict)


async def send_all(plan: SendPlan, t0: float, publish: Publish | None = None) -> SendResult:
    """Send `plan` with time 0 at `t0` (a `perf_counter` value); returns once every
    request has answered, failed or timed out."""
    keep = plan.keep_texts or plan.shadow_url is not None
    records = Records(texts=[] if keep else None)
    shadow = Records(texts=[]) if plan.shadow_url else None
    counts = {"sent": 0, "done": 0, "errors": 0, "in_flight": 0}
    finished = asyncio.Event()
    sending = True

    def done(rec: Records, primary: bool) -> Callable[[Call], None]:
        def on_done(call: Call) -> None:
            rec.add(call, t0)
            counts["in_flight"] -= 1
            if primary:
                counts["done"] += 1
                counts["errors"] += bool(call.error)
            if not sending and counts["in_flight"] == 0:
                finished.set()
        return on_done

    bodies = plan.workload.bodies()
    pool = Pool(plan.url, plan.workload.path, bodies, plan.workload.endpoint, plan.workload.stream,
                done(records, True), plan.max_connections)
    spool = None
    if plan.shadow_url:
        spool = Pool(plan.shadow_url, plan.workload.path, bodies, plan.workload.endpoint, plan.workload.stream,
                     done(shadow, False), plan.max_connections)
    deadlines: deque[tuple[float, Call, Pool]] = deque()  # in send order, so in deadline order

    async def sweep() -> None:
        while True:
            t = now()
            while deadlines and deadlines[0][0] <= t:
                _, call, p = deadlines.popleft()
                p.time_out(call)
            if publish is not None:
                publish(counts["sent"], counts["done"], counts["errors"])
            await asyncio.sleep(0.02)

    sweeper = asyncio.get_running_loop().create_task(sweep())
    # A full collection over hundreds of thousands of live records pauses the sender for
    # tens of milliseconds, which shows up as client lag; the few cycles made while
    # sending (closed connections) are collected after the run.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    due, index, prompt = plan.due, plan.index, plan.prompt
    n, i = len(due), 0
    try:
        while i < n:
            t = now() - t0
            while i < n and due[i] <= t:
                start = now()
                for p in (pool, spool):
                    if p is None:
                        continue
                    call = Call(int(index[i]), int(prompt[i]), float(due[i]), start)
                    counts["in_flight"] += 1
                    deadlines.append((start + plan.timeout, call, p))
                    p.submit(call)
                counts["sent"] += 1
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, due[i] - (now() - t0)))
        sending = False
        if counts["in_flight"]:
            await finished.wait()
    finally:
        if gc_was_enabled:
            gc.enable()
        sweeper.cancel()
        pool.close()
        if spool is not None:
            spool.close()
    if publish is not None:
        publish(counts["sent"], counts["done"], counts["errors"])
    return SendResult(records, shadow, pool.peak_open, {"connect_errors": pool.connect_errors})


def run(plan: SendPlan, start_wall: float | None = None, publish: Publish | None = None) -> SendResult:
    """Run `plan` on a fresh uvloop event loop; time 0 is `start_wall` (a `time.time()`
    value shared by every sender process) or a moment from now."""
    async def main() -> SendResult:
        wall = start_wall if start_wall is not None else time.time() + 0.05
        return await send_all(plan, now() + (wall - time.time()), publish)

    return uvloop.run(main())
