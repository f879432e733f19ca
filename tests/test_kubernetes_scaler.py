import pytest
"""The autoscaler driving a Deployment's scale subresource, against a FAKE API server.

No Kubernetes API server can run here: a local aiohttp server speaks the JSON of
apps/v1 deployments/scale (GET and PATCH) and of the pods' EndpointSlices, and
two more local servers stand in for pods' `/metrics` (engine waiting + running).
The real `kubernetes_asyncio` client reads and patches the scale through a real
kubeconfig file.
"""

import asyncio
import json

from aiohttp import web

from fleetserve.fleet.autoscaler import AutoscalerConfig
from fleetserve.fleet.discovery.kubernetes import KubernetesDiscovery
from fleetserve.fleet.kubernetes_scaler import DeploymentScaler, autoscale_kubernetes
from test_discovery_kubernetes import PATH as SLICES, FakeApiServer, serve_app, slice_, write_kubeconfig

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

SCALE = "/apis/apps/v1/namespaces/serving/deployments/correct-pod/scale"


class FakeDeployment:
    def __init__(self, replicas: int):
        self.replicas = replicas
        self.patches: list[int] = []

    def body(self) -> dict:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "correct-pod", "namespace": "serving", "resourceVersion": "7"},
                "spec": {"replicas": self.replicas}, "status": {"replicas": self.replicas, "selector": "app=correct"}}

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.body())

    async def patch(self, request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        self.replicas = int(doc["spec"]["replicas"])
        self.patches.append(self.replicas)
        return web.json_response(self.body())


def test_autoscaler_scales_a_deployment_through_a_fake_api_server(tmp_path):
    async def run():
        load = {"waiting": 30.0, "running": 10.0}  # per pod: 40 in flight, 80 in all

        async def metrics(request):
            return web.Response(text=f"# TYPE x gauge\nfleetserve_requests_waiting {load['waiting']}\n"
                                     f"fleetserve_slots_running {load['running']}\nfleetserve_slots_total 64\n")

        pods = []
        for _ in range(2):
            app = web.Application()
            app.router.add_get("/metrics", metrics)
            pods.append(await serve_app(app))
        api = FakeApiServer()
        api.set(slice_("correct-a", [("127.0.0.1", True)], port=pods[0][1]), event=None)
        api.set({**slice_("correct-b", [("127.0.0.1", True)], port=pods[1][1])}, event=None)
        dep = FakeDeployment(replicas=2)
        app = web.Application()
        app.router.add_get(SLICES, api.handle)
        app.router.add_get(SCALE, dep.get)
        app.router.add_patch(SCALE, dep.patch)
        runner, port = await serve_app(app)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
        policy = AutoscalerConfig(target_per_pod=10, min_replicas=1, max_replicas=6, scale_up_window=0.5,
                                  scale_down_window=1.0, scale_down_period=0.0, max_scale_down_step=2)
        stop = asyncio.Event()
        decisions = []
        task = asyncio.create_task(autoscale_kubernetes(
            policy, DeploymentScaler("serving", "correct-pod", kubeconfig),
            KubernetesDiscovery("serving", "correct", kubeconfig=kubeconfig), interval=0.1, stop=stop,
            on_decision=lambda current, d: decisions.append((current, d.desired, d.load))))
        try:
            for _ in range(100):  # 80 in flight / 10 per pod: 8 wanted, 6 at most
                await asyncio.sleep(0.05)
                if dep.replicas == 6:
                    break
            assert dep.replicas == 6 and dep.patches == sorted(dep.patches)  # only up while loaded
            assert 40 < max(seen for _, _, seen in decisions) <= 80  # both pods sampled (40 each)
            load.update(waiting=0.0, running=5.0)  # 10 in flight: 1 pod, down 2 at a time after 1 s
            for _ in range(100):
                await asyncio.sleep(0.05)
                if dep.replicas == 1:
                    break
            downs = dep.patches[dep.patches.index(6):]
            assert downs[-1] == 1 and all(0 < a - b <= 2 for a, b in zip(downs, downs[1:]))
        finally:
            stop.set()
            await task
            api.end_watches()
            for r, _ in [*pods, (runner, 0)]:
                await r.cleanup()

    asyncio.run(run())
