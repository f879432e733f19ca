"""Endpoints of a Kubernetes Service, from its EndpointSlices (discovery.k8s.io/v1)
through the `kubernetes_asyncio` client.

The usual informer loop, kept small: list the Service's slices (label
`kubernetes.io/service-name=NAME`), then watch from the list's resourceVersion;
when a watch ends, watch again from the last version seen; on 410 Gone (the
version is too old) list again; on any other failure reconnect with a doubling
back-off. Only endpoints whose `conditions.ready` is true are routed to (a
draining pod turns not ready before it stops). Credentials come from the
in-cluster service account when running in a pod, else from a kubeconfig.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator

from fleetserve.fleet.balancer import EndpointSpec
from fleetserve.fleet.discovery import Snapshot

log = logging.getLogger("fleetserve.discovery")


async def api_client(kubeconfig: str | None = None, context: str | None = None):
    """A `kubernetes_asyncio` ApiClient: the pod's service account inside a cluster (unless a
    kubeconfig is named), else the kubeconfig (default ~/.kube/config)."""
    from kubernetes_asyncio import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(configuration=cfg)
    cfg = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a call to the API server raises when the server is away (aiohttp's errors do not all
    derive from OSError); imported on use, like the client."""
    import aiohttp

    return (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def endpoints_of_slices(slices: dict[str, dict], port_name: str | None = None) -> Snapshot:
    """Ready endpoints of EndpointSlices (raw API JSON), as http:// URLs, sorted."""
    urls: set[str] = set()
    for sl in slices.values():
        ports = sl.get("ports") or []
        port = None
        for p in ports:
            if port_name is None or p.get("name") == port_name:
                port = p.get("port")
                break
        if port is None:
            continue
        v6 = sl.get("addressType") == "IPv6"
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            # ready is "unknown" when absent; Kubernetes says to treat that as ready
            if cond.get("ready", True) is not True:
                continue
            for addr in ep.get("addresses") or []:
                urls.add(f"http://[{addr}]:{port}" if v6 else f"http://{addr}:{port}")
    return tuple(EndpointSpec(u) for u in sorted(urls))


class KubernetesDiscovery:
    def __init__(self, namespace: str, service: str, port_name: str | None = None,
                 kubeconfig: str | None = None, context: str | None = None,
                 watch_timeout: int = 300, max_backoff: float = 30.0):
        if not namespace or not service:
            raise ValueError("--discovery kubernetes needs --namespace and --service")
        self.namespace, self.service, self.port_name = namespace, service, port_name
        self.kubeconfig, self.context = kubeconfig, context
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.lists = 0  # how many times the slices were listed (first list + relists)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client.exceptions import ApiException

        apic = await api_client(self.kubeconfig, self.context)
        api = client.DiscoveryV1Api(apic)
        selector = f"kubernetes.io/service-name={self.service}"
        backoff = 0.5
        last: Snapshot | None = None
        try:
            while True:
                try:
                    resp = await api.list_namespaced_endpoint_slice(
                        self.namespace, label_selector=selector, _preload_content=False)
                    doc = json.loads(await resp.read())
                    self.lists += 1
                    slices = {item["metadata"]["name"]: item for item in doc.get("items") or []}
                    version = doc["metadata"]["resourceVersion"]
                    backoff = 0.5
                    snap = endpoints_of_slices(slices, self.port_name)
                    if snap != last:
                        last = snap
                        yield snap
                    while True:  # watch, and watch again from the last version when the server ends it
                        w = watch.Watch()
                        try:
                            async for event in w.stream(api.list_namespaced_endpoint_slice, self.namespace,
                                                        label_selector=selector, resource_version=version,
                                                        timeout_seconds=self.watch_timeout,
                                                        allow_watch_bookmarks=True):
                                obj = event["raw_object"]
                                version = obj.get("metadata", {}).get("resourceVersion", version)
                                kind = event["type"]
                                if kind in ("ADDED", "MODIFIED"):
                                    slices[obj["metadata"]["name"]] = obj
                                elif kind == "DELETED":
                                    slices.pop(obj["metadata"]["name"], None)
                                else:
                                    continue  # BOOKMARK: only the version moves
                                snap = endpoints_of_slices(slices, self.port_name)
                                if snap != last:
                                    last = snap
                                    yield snap
                        finally:
                            await w.close()
                except ApiException as e:
                    if e.status == 410:
                        log.info("watch of %s/%s: resource version too old, listing again",
                                 self.namespace, self.service)
                        continue
                    log.warning("kubernetes API error %s for %s/%s: %s; retrying in %.1fs",
                                e.status, self.namespace, self.service, e.reason, backoff)
                except (*transport_errors(), KeyError, ValueError) as e:
                    log.warning("kubernetes API unreachable or answering oddly (%s: %s); retrying in %.1fs",
                                type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        finally:
            await apic.close()
