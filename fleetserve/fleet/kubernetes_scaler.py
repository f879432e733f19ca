"""The autoscaler against Kubernetes: the same policy as the local fleet, applied to
a Deployment's `scale` subresource through `kubernetes_asyncio`.

Load comes from the pods themselves: the ready endpoints of the pods' Service
(EndpointSlice discovery, as the router uses) and each pod's engine in-flight
count from its `/metrics`. `fleetserve autoscale --namespace NS --deployment D
--service S` runs the loop; its RBAC needs get/patch on deployments/scale and
list/watch on endpointslices (deploy/kubernetes/rbac.yaml).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fleetserve.fleet.autoscaler import Autoscaler, AutoscalerConfig, Decision
from fleetserve.fleet.discovery import Snapshot
from fleetserve.fleet.discovery.kubernetes import KubernetesDiscovery, transport_errors
from fleetserve.fleet.load_signal import InflightMeter

log = logging.getLogger("fleetserve.autoscale")


class DeploymentScaler:
    """Read and set a Deployment's replicas through its scale subresource."""

    def __init__(self, namespace: str, deployment: str, kubeconfig: str | None = None):
        self.namespace, self.deployment, self.kubeconfig = namespace, deployment, kubeconfig
        self._api = None
        self._client = None

    async def _apps(self):
        if self._api is None:
            from kubernetes_asyncio import client

            from fleetserve.fleet.discovery.kubernetes import api_client

            self._client = await api_client(self.kubeconfig)
            self._api = client.AppsV1Api(self._client)
        return self._api

    async def replicas(self) -> int:
        api = await self._apps()
        scale = await api.read_namespaced_deployment_scale(self.deployment, self.namespace)
        return int(scale.spec.replicas or 0)

    async def scale(self, n: int) -> None:
        api = await self._apps()
        await api.patch_namespaced_deployment_scale(self.deployment, self.namespace, {"spec": {"replicas": n}})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


async def autoscale_kubernetes(policy: AutoscalerConfig, scaler: DeploymentScaler, discovery: KubernetesDiscovery,
                               interval: float = 2.0, stop: asyncio.Event | None = None,
                               on_decision=None) -> None:
    """Sample, decide, scale, every `interval`, until `stop` is set."""
    from kubernetes_asyncio.client.exceptions import ApiException

    stop = stop or asyncio.Event()
    autoscaler = Autoscaler(policy)
    meter = InflightMeter()
    ready: Snapshot = ()

    async def follow() -> None:
        nonlocal ready
        async for snap in discovery.snapshots():
            ready = snap

    watcher = asyncio.create_task(follow())
    try:
        while not stop.is_set():
            if watcher.done():
                watcher.result()  # discovery failed for good: raise its error
            loads = await meter.read_all([s.url for s in ready])
            now = time.monotonic()
            autoscaler.observe(now, [v for v in loads if v is not None])
            try:
                current = await scaler.replicas()
                d: Decision = autoscaler.decide(now, current, len(ready))
                if d.desired != current:
                    log.info("scaling %s/%s %d -> %d (%s; load %.1f in flight)", scaler.namespace,
                             scaler.deployment, current, d.desired, d.reason, d.load)
                    await scaler.scale(d.desired)
                if on_decision is not None:
                    on_decision(current, d)
            except (ApiException, *transport_errors()) as e:  # the API server may be briefly away
                log.warning("kubernetes API error while scaling: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await scaler.close()
