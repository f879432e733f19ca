"""How a frontend judges the engine core's silence (fleetserve/engine/core_client.py).

The frontend must never call the sockets' ZMQ_EVENTS to ask whether the core's messages
are waiting: that takes the edge-triggered wake-up from pyzmq's asyncio readers, which
then never wake again (a frontend that stops reading its outputs for good; seen once in CI
as a paused core's slots still counted after it resumed). Whether this process itself was
away is read from its own sleep instead, which is what these tests pin down."""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from fleetserve.engine.core_client import STALE_AFTER_S, core_silent

TICK = STALE_AFTER_S / 8


def test_a_core_silent_past_the_limit_is_silent_when_this_process_slept_on_time():
    assert core_silent(STALE_AFTER_S + 0.1, TICK, TICK)
    assert core_silent(STALE_AFTER_S + 0.1, TICK + 0.05, TICK)  # a little late: still judged
    assert not core_silent(STALE_AFTER_S - 0.1, TICK, TICK)


def test_after_this_process_was_paused_the_readers_run_before_the_core_is_judged():
    assert not core_silent(STALE_AFTER_S + 5, 5 + TICK, TICK)
    assert not core_silent(STALE_AFTER_S + 0.1, TICK + STALE_AFTER_S, TICK)


def test_peeking_at_zmq_events_starves_an_asyncio_reader(tmp_path):
    """Why core_silent reads the clock and not the sockets: pyzmq's behaviour, pinned (if a
    pyzmq release changes it, this fails and the reason above can be revisited)."""
    async def run() -> bool:
        actx, ctx = zmq.asyncio.Context(), zmq.Context()
        address = f"ipc://{tmp_path}/beats.ipc"
        pub = ctx.socket(zmq.PUB)
        pub.bind(address)
        sub = actx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(address)
        got: list[bytes] = []

        async def reader() -> None:
            while True:
                got.append(await sub.recv())

        task = asyncio.create_task(reader())
        try:
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:  # until the subscription is up
                pub.send(b"hello")
                await asyncio.sleep(0.02)
            assert got, "the reader never received anything"
            got.clear()
            pub.send(b"while the loop is not looking")
            time.sleep(0.2)  # it arrives before the event loop polls again
            sub.getsockopt(zmq.EVENTS)  # the peek
            for _ in range(20):
                pub.send(b"more")
                await asyncio.sleep(0.01)
            return not got
        finally:
            task.cancel()
            sub.close(linger=0)
            pub.close(linger=0)
            actx.term()
            ctx.term()

    assert asyncio.run(run()), "the peek no longer starves the reader"
