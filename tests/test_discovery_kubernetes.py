"""Kubernetes EndpointSlice discovery against a FAKE API server.

No Kubernetes API server can run on these machines, so this test serves the
real list/watch JSON protocol of discovery.k8s.io/v1 EndpointSlices from a small
local aiohttp server, and drives the real `kubernetes_asyncio` client at it
through a real kubeconfig file: list, watch from the list's resourceVersion,
events, 410 Gone (relist), a dropped watch (re-watch from the last version),
and readiness conditions.
"""

import asyncio
import json

import pytest
from aiohttp import web

from fleetserve.fleet.discovery.kubernetes import KubernetesDiscovery, endpoints_of_slices

PATH = "/apis/discovery.k8s.io/v1/namespaces/serving/endpointslices"


def slice_(name, endpoints, port=8100):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "serving",
                         "labels": {"kubernetes.io/service-name": "correct"}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
                          for ip, ready in endpoints],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


class FakeApiServer:
    """Just enough of the API server: list and watch of EndpointSlices in one namespace."""

    def __init__(self):
        self.slices: dict[str, dict] = {}
        self.version = 1
        self.watchers: list[asyncio.Queue] = []
        self.lists = 0
        self.watch_versions: list[str] = []
        self.selectors: list[str] = []

    def set(self, obj: dict, event: str | None = "MODIFIED") -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        name = obj["metadata"]["name"]
        if event == "DELETED":
            self.slices.pop(name, None)
        else:
            self.slices[name] = obj
        if event:
            for q in self.watchers:
                q.put_nowait({"type": event, "object": obj})

    def end_watches(self, gone: bool = False) -> None:
        for q in self.watchers:
            if gone:
                q.put_nowait({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                          "message": "too old resource version", "reason": "Expired",
                                                          "code": 410}})
            q.put_nowait(None)
        self.watchers.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.selectors.append(request.query.get("labelSelector", ""))
        if request.query.get("watch", "").lower() != "true":
            self.lists += 1
            return web.json_response({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                                      "metadata": {"resourceVersion": str(self.version)},
                                      "items": list(self.slices.values())})
        self.watch_versions.append(request.query.get("resourceVersion", ""))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        self.watchers.append(q)
        while (event := await q.get()) is not None:
            await resp.write(json.dumps(event).encode() + b"\n")
        return resp


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app on a free local port; (runner to clean up, port)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def write_kubeconfig(path, server: str) -> str:
    """A real kubeconfig file pointing the client at `server` (no TLS: the fake speaks plain HTTP)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "u"}}]}))
    return str(path)


def urls(snap):
    return [s.url for s in snap]


def test_ready_condition_and_ports():
    slices = {"a": slice_("a", [("10.0.0.1", True), ("10.0.0.2", False)]),
              "b": {**slice_("b", [("fd00::5", True)]), "addressType": "IPv6"}}
    assert urls(endpoints_of_slices(slices)) == ["http://10.0.0.1:8100", "http://[fd00::5]:8100"]
    assert urls(endpoints_of_slices(slices, port_name="metrics")) == []


def test_kubernetes_discovery_lists_watches_relists_on_410_with_fake_api_server(tmp_path):
    async def run():
        fake = FakeApiServer()
        fake.set(slice_("correct-a", [("10.0.0.1", True), ("10.0.0.2", False)]), event=None)
        app = web.Application()
        app.router.add_get(PATH, fake.handle)
        runner, port = await serve_app(app)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
        disc = KubernetesDiscovery("serving", "correct", kubeconfig=kubeconfig, max_backoff=0.2)
        snaps: asyncio.Queue = asyncio.Queue()

        async def follow():  # as the router consumes it: always waiting for the next snapshot
            async for snap in disc.snapshots():
                snaps.put_nowait(snap)

        consumer = asyncio.create_task(follow())

        async def next_snap():
            return urls(await asyncio.wait_for(snaps.get(), 10))

        async def watching(n):
            for _ in range(500):
                if len(fake.watchers) >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the client did not open a watch")

        try:
            # list: only the ready endpoint
            assert await next_snap() == ["http://10.0.0.1:8100"]
            assert fake.selectors[0] == "kubernetes.io/service-name=correct"
            await watching(1)
            assert fake.watch_versions == ["2"]  # watched from the list's resourceVersion
            # a pod turns ready; another slice appears; one is deleted
            fake.set(slice_("correct-a", [("10.0.0.1", True), ("10.0.0.2", True)]))
            assert await next_snap() == ["http://10.0.0.1:8100", "http://10.0.0.2:8100"]
            fake.set(slice_("correct-b", [("10.0.0.3", True)]), event="ADDED")
            assert await next_snap() == ["http://10.0.0.1:8100", "http://10.0.0.2:8100", "http://10.0.0.3:8100"]
            fake.set(slice_("correct-b", []), event="DELETED")
            assert await next_snap() == ["http://10.0.0.1:8100", "http://10.0.0.2:8100"]
            # the watch is dropped: watched again from the last version seen, no relist
            fake.end_watches()
            await watching(1)
            assert fake.watch_versions[-1] == str(fake.version) and fake.lists == 1
            # a change the client misses, then 410 Gone: it lists again and catches up
            fake.set(slice_("correct-a", [("10.0.0.9", True)]), event=None)
            fake.end_watches(gone=True)
            assert await next_snap() == ["http://10.0.0.9:8100"]
            assert fake.lists == 2 and disc.lists == 2
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            fake.end_watches()
            await runner.cleanup()

    asyncio.run(run())


@pytest.mark.slow
def test_kubernetes_discovery_retries_while_the_api_server_is_unreachable(tmp_path):
    """FAKE-free failure path: no server at all; discovery keeps retrying and yields nothing."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")

    async def run():
        gen = KubernetesDiscovery("serving", "correct", kubeconfig=kubeconfig, max_backoff=0.1).snapshots()
        try:
            await asyncio.wait_for(gen.__anext__(), 1.0)
        except asyncio.TimeoutError:
            return True
        finally:
            await gen.aclose()
        return False

    assert asyncio.run(run())
