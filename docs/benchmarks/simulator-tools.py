"""Which tool for the fleet simulator (issue 20), measured before building it: the same small
model (250 one-slot FIFO pods, P2C from one router, Poisson 200K req/s at load 0.85) as a pure
Python event loop calling the router's Balancer, as SimPy processes calling it, and as a numba
loop. The target: 400K simulated requests per wall second for a far richer model.

    pip install simpy==4.1.2   # only for this measurement
    PYTHONPATH=. .venv/bin/python docs/benchmarks/simulator-tools.py
"""
import heapq, time, random, sys
from collections import deque
import numpy as np
from fleetserve.fleet.balancer import Balancer, EndpointSpec

N, LAM = 250, 200_000.0
MU = LAM / N / 0.85

def pure(nreq):
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(1 / LAM, nreq)).tolist()
    svc = rng.exponential(1 / MU, nreq).tolist()
    b = Balancer("p2c", rng=random.Random(1))
    b.update([EndpointSpec(f"p{i}") for i in range(N)])
    eps = list(b.endpoints.values()); idx = {id(e): i for i, e in enumerate(eps)}
    queues = [deque() for _ in range(N)]
    heap = []; lat = 0.0
    for k in range(nreq):
        t = arr[k]
        while heap and heap[0][0] <= t:
            tt, p = heapq.heappop(heap)
            q = queues[p]; a0 = q.popleft(); lat += tt - a0[0]; b.finish(eps[p])
            if q:
                heapq.heappush(heap, (tt + q[0][1], p))
        ep = b.pick(t); b.start(ep); p = idx[id(ep)]
        q = queues[p]; q.append((t, svc[k]))
        if len(q) == 1:
            heapq.heappush(heap, (t + svc[k], p))
    return lat / nreq

def simpy_run(nreq):
    import simpy
    env = simpy.Environment()
    rng = np.random.default_rng(1)
    arr = rng.exponential(1 / LAM, nreq).tolist(); svc = rng.exponential(1 / MU, nreq).tolist()
    b = Balancer("p2c", rng=random.Random(1)); b.update([EndpointSpec(f"p{i}") for i in range(N)])
    eps = list(b.endpoints.values()); idx = {id(e): i for i, e in enumerate(eps)}
    res = [simpy.Resource(env, 1) for _ in range(N)]
    tot = [0.0]
    def req(k, ep):
        t0 = env.now
        with res[idx[id(ep)]].request() as r:
            yield r
            yield env.timeout(svc[k])
        b.finish(ep); tot[0] += env.now - t0
    def source():
        for k in range(nreq):
            yield env.timeout(arr[k])
            ep = b.pick(env.now); b.start(ep)
            env.process(req(k, ep))
    env.process(source()); env.run()
    return tot[0] / nreq

import numba
@numba.njit(cache=False)
def nb_core(arr, svc, u, n):
    # per pod FIFO as ring buffers; completion heap as arrays
    cap = 4096
    qa = np.zeros((n, cap)); qs = np.zeros((n, cap)); head = np.zeros(n, np.int64); ln = np.zeros(n, np.int64)
    hk = np.empty(n); hp = np.empty(n, np.int64); hn = 0
    lat = 0.0; ui = 0
    for k in range(arr.shape[0]):
        t = arr[k]
        while hn > 0 and hk[0] <= t:
            tt = hk[0]; p = hp[0]
            hn -= 1; hk[0] = hk[hn]; hp[0] = hp[hn]
            i = 0
            while True:
                l = 2 * i + 1
                if l >= hn: break
                r = l + 1; m = l
                if r < hn and hk[r] < hk[l]: m = r
                if hk[m] < hk[i]:
                    hk[i], hk[m] = hk[m], hk[i]; hp[i], hp[m] = hp[m], hp[i]; i = m
                else: break
            lat += tt - qa[p, head[p]]; head[p] = (head[p] + 1) % cap; ln[p] -= 1
            if ln[p] > 0:
                hk[hn] = tt + qs[p, head[p]]; hp[hn] = p; i = hn; hn += 1
                while i > 0:
                    par = (i - 1) // 2
                    if hk[par] > hk[i]:
                        hk[i], hk[par] = hk[par], hk[i]; hp[i], hp[par] = hp[par], hp[i]; i = par
                    else: break
        a = int(u[ui] * n); b = int(u[ui + 1] * (n - 1)); ui += 3
        if b >= a: b += 1
        p = a if ln[a] < ln[b] else b
        if ln[a] == ln[b] and u[ui - 1] >= 0.5: p = b
        j = (head[p] + ln[p]) % cap; qa[p, j] = t; qs[p, j] = svc[k]; ln[p] += 1
        if ln[p] == 1:
            hk[hn] = t + svc[k]; hp[hn] = p; i = hn; hn += 1
            while i > 0:
                par = (i - 1) // 2
                if hk[par] > hk[i]:
                    hk[i], hk[par] = hk[par], hk[i]; hp[i], hp[par] = hp[par], hp[i]; i = par
                else: break
    return lat / arr.shape[0]

def nb(nreq):
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(1 / LAM, nreq)); svc = rng.exponential(1 / MU, nreq); u = rng.random(3 * nreq)
    return nb_core(arr, svc, u, N)

for name, f, n in (("pure python + Balancer", pure, 300_000), ("simpy + Balancer", simpy_run, 100_000), ("numba", nb, 10_000_000)):
    if name == "numba": nb(1000)
    t = time.perf_counter(); m = f(n); dt = time.perf_counter() - t
    print(f"{name}: {n / dt:,.0f} simulated requests/s (mean latency {m*1e3:.3f} ms)", flush=True)
