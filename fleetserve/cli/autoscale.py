"""`fleetserve autoscale`: its options and what runs it."""

from __future__ import annotations

import asyncio
import logging
import sys
from fleetserve.fleet.autoscaler import AutoscalerConfig
from fleetserve.fleet.discovery.kubernetes import KubernetesDiscovery
from fleetserve.fleet.kubernetes_scaler import DeploymentScaler, autoscale_kubernetes

HELP = ('the autoscaler for Kubernetes: scale a Deployment on '
        "its pods' in-flight requests (the policy of fleetserve up)")


def add_arguments(p) -> None:
    p.add_argument("--namespace", required=True,
                   help="the Deployment's and Service's namespace")
    p.add_argument("--deployment", required=True, help="the pods' Deployment, scaled through deployments/scale")
    p.add_argument("--service", required=True, help="the pods' Service, whose ready endpoints are sampled")
    p.add_argument("--port-name", default=None, help="the EndpointSlice port of the pods' HTTP (default: the first)")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster credentials, else ~/.kube/config")
    p.add_argument("--min", type=int, default=1, dest="min_replicas",
                   help="fewest replicas (default %(default)s)")
    p.add_argument("--max", type=int, default=10, dest="max_replicas",
                   help="most replicas (default %(default)s)")
    p.add_argument("--target-per-pod", type=float, default=None, help="in flight per pod within the SLO")
    p.add_argument("--target-from", default=None, metavar="FILE", help="a saved `fleetserve bench-slo --json` result")
    p.add_argument("--scale-up-window", type=float, default=10.0,
                   help="seconds of in-flight samples averaged for scaling up (default %(default)s)")
    p.add_argument("--scale-down-window", type=float, default=300.0,
                   help="seconds of samples whose peak must allow a scale-down (default %(default)s)")
    p.add_argument("--panic-threshold", type=float, default=2.0,
                   help="load over capacity at which scaling up skips the window (default %(default)s)")
    p.add_argument("--max-scale-down-step", type=int, default=1,
                   help="replicas removed at a time (default %(default)s)")
    p.add_argument("--scale-down-period", type=float, default=60.0,
                   help="seconds between scale-downs (default %(default)s)")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between decisions (default %(default)s)")


def run(a) -> None:
    import uvloop

    from fleetserve.fleet.local_fleet import target_from_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.target_from:
        target = target_from_file(a.target_from)
    elif a.target_per_pod:
        target = a.target_per_pod
    else:
        raise ValueError("give --target-per-pod N or --target-from FILE (measure it with fleetserve bench-slo)")
    policy = AutoscalerConfig(target_per_pod=target, min_replicas=a.min_replicas, max_replicas=a.max_replicas,
                              scale_up_window=a.scale_up_window, scale_down_window=a.scale_down_window,
                              panic_threshold=a.panic_threshold, max_scale_down_step=a.max_scale_down_step,
                              scale_down_period=a.scale_down_period)
    scaler = DeploymentScaler(a.namespace, a.deployment, a.kubeconfig)
    discovery = KubernetesDiscovery(a.namespace, a.service, port_name=a.port_name, kubeconfig=a.kubeconfig)

    async def main() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"autoscaling deployment {a.namespace}/{a.deployment} on the load of service {a.service} "
              f"(target {target:g} in flight per pod, {a.min_replicas}..{a.max_replicas} pods)", flush=True)
        await autoscale_kubernetes(policy, scaler, discovery, a.interval, stop)

    uvloop.run(main())
    sys.exit(0)
