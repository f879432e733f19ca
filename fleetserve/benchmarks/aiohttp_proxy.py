"""A reverse proxy written the usual way (aiohttp server + aiohttp client session,
the same P2C choice), used only by `fleetserve bench-router` as the comparison
point that decided the router's HTTP stack. Not for serving: no retries, no
streaming, no health checks.

    python -m fleetserve.benchmarks.aiohttp_proxy PORT URL [URL ...]
"""

from __future__ import annotations

import random
import sys


def main(argv: list[str]) -> None:
    import asyncio

    import uvloop
    from aiohttp import ClientSession, TCPConnector, web

    port, upstreams = int(argv[0]), argv[1:]
    inflight = [0] * len(upstreams)
    rng = random.Random(0)
    state: dict[str, ClientSession] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        i, j = rng.sample(range(len(upstreams)), 2) if len(upstreams) > 1 else (0, 0)
        k = i if inflight[i] <= inflight[j] else j
        inflight[k] += 1
        try:
            async with state["session"].request(request.method, upstreams[k] + request.path_qs, data=body,
                                                headers={"Content-Type": request.content_type}) as r:
                data = await r.read()
                return web.Response(status=r.status, body=data, content_type=r.content_type)
        finally:
            inflight[k] -= 1

    async def start() -> None:
        state["session"] = ClientSession(connector=TCPConnector(limit=0))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print(f"aiohttp proxy on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(start())


if __name__ == "__main__":
    main(sys.argv[1:])
