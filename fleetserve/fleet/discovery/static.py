"""A fixed list of endpoints (`--endpoints URL,URL`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fleetserve.fleet.discovery import Snapshot, parse_endpoint


class StaticDiscovery:
    def __init__(self, endpoints: str | list[str]):
        items = endpoints.split(",") if isinstance(endpoints, str) else endpoints
        specs = [parse_endpoint(e) for e in items if e.strip()]
        if not specs:
            raise ValueError("--endpoints: give at least one URL, as http://127.0.0.1:8100,http://127.0.0.1:8101")
        urls = [s.url for s in specs]
        if len(set(urls)) != len(urls):
            raise ValueError(f"--endpoints: an endpoint is listed twice: {', '.join(urls)}")
        self.snapshot: Snapshot = tuple(specs)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        yield self.snapshot
        await asyncio.Event().wait()  # a static list never changes
