"""The simulator's event loop, compiled with numba: pods, the routers' picks, discovery and
failures, between two of the driver's control points. Mechanism only: who gets a request is
decided by the balancer's own policy kernels (fleetserve.fleet.balancer, compiled here as they
are), how many pods there are by the driver (simulator.py) running the real autoscaler.

Everything lives in numpy arrays (`State`) so that the driver can read the fleet between calls;
it changes the fleet by commands (start or drain a pod) that the next call applies first. The loop
is one compiled function whose steps are inner functions over its local arrays: numba inlines
them, where separate functions handed the state would pay reference counting on every call.

Time is in seconds. A pod is either an M/M/c server (`MMC`: c slots, one FIFO
queue, each request's service time drawn at arrival) or a continuous-batching server
(`BATCHING`: up to c requests share each step; a step lasts the pod's step time at that batch
size (tabulated: a line base + per_seq * batch, or measured points interpolated) +
per_prompt_token * prompt tokens admitted, times the pod's slowness; a request needs one step
per `tokens_per_step` output tokens after its first). Requests wait in the pod's queue, FIFO.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from fleetserve.fleet import balancer

# Pod models, policies, pod states, event kinds and error kinds (indices into the error counts).
MMC, BATCHING = 0, 1
POLICY_IDS = {name: i for i, name in enumerate(balancer.POLICIES)}
P2C, ROUND_ROBIN, RANDOM, LEAST_LOADED = (POLICY_IDS[p] for p in ("p2c", "round_robin", "random", "least_loaded"))
FREE, STARTING, READY, DRAINING, RESTARTING = range(5)
EV_DONE, EV_STEP, EV_READY, EV_ADD, EV_REMOVE, EV_FAIL = range(6)
CMD_START, CMD_START_WARM, CMD_DRAIN = range(3)  # the driver's commands: (kind, pod place)
ERR_NONE_READY, ERR_AT_CAP, ERR_QUEUE_FULL, ERR_POD_FAILED = range(4)
ERROR_KINDS = ("no pod ready (503)", "every pod at the router's cap (429)", "pod queue full (429)",
               "pod failed (502)")
OCCUPANCY_BINS = 33  # requests at a pod: 0..31 and "32 or more"

_two_choices = numba.njit(cache=True)(balancer.two_choices)
_first_of_two = numba.njit(cache=True)(balancer.first_of_two)
_least_loaded_index = numba.njit(cache=True)(balancer.least_loaded_index)
_weighted_index = numba.njit(cache=True)(balancer.weighted_index)
_smooth_round_robin = numba.njit(cache=True)(balancer.smooth_round_robin)

# Integer scalars (State.si) and float scalars (State.sf), by index.
(SI_HEAP, SI_IN_SYSTEM, SI_RUNNING, SI_ALIVE, SI_READY, SI_RETRIES, SI_DEPARTED, SI_STEPPING, SI_COLD_STARTS,
 SI_STARTING, SI_N) = range(11)
SF_CLOCK, SF_AREA_SYSTEM, SF_AREA_RUNNING, SF_AREA_ALIVE, SF_AREA_READY, SF_SOJOURN, SF_N = range(7)


class State:
    """Every array of a simulated fleet. `P` pod places (a pod that stops frees its place for a
    later one), `C` slots per pod, `Q` queued requests per pod at most, `R` routers, `W` windows
    of `window` seconds for the statistics, `B` latency bins."""

    def __init__(self, P: int, C: int, Q: int, R: int, W: int, B: int):
        self.P, self.C, self.Q, self.R, self.W, self.B = P, C, Q, R, W, B
        self.pstate = np.zeros(P, np.int64)
        self.gen = np.zeros(P, np.int64)  # pod generation: events of an earlier life are stale
        self.speed = np.ones(P)  # service-time multiplier (slow pods > 1)
        self.weight = np.ones(P)
        self.nrun = np.zeros(P, np.int64)
        self.nq = np.zeros(P, np.int64)
        self.qhead = np.zeros(P, np.int64)
        self.stepping = np.zeros(P, np.bool_)
        self.removals = np.zeros(P, np.int64)  # routers yet to forget a draining pod
        self.s_busy = np.zeros((P, C), np.bool_)
        self.s_arr = np.zeros((P, C))
        self.s_adm = np.zeros((P, C))
        self.s_work = np.zeros((P, C))  # M/M/c: service seconds; batching: steps the request needs
        self.s_rt = np.zeros((P, C), np.int64)
        self.s_try = np.zeros((P, C), np.int64)
        self.q_arr = np.zeros((P, Q))
        self.q_work = np.zeros((P, Q))
        self.q_tok = np.zeros((P, Q))
        self.q_rt = np.zeros((P, Q), np.int64)
        self.q_try = np.zeros((P, Q), np.int64)
        self.inflight = np.zeros((R, P), np.int64)  # each router's own counts
        self.usable = np.zeros((R, P), np.int64)  # pods each router knows ready, in discovery order
        self.nusable = np.zeros(R, np.int64)
        self.current = np.zeros((R, P))  # smooth round robin's scores
        H = P * (C + 4) + 2 * R * P + 64
        self.hk = np.zeros(H)
        self.hkind = np.zeros(H, np.int64)
        self.ha = np.zeros(H, np.int64)
        self.hb = np.zeros(H, np.int64)
        self.hgen = np.zeros(H, np.int64)
        self.si = np.zeros(SI_N, np.int64)
        self.sf = np.zeros(SF_N)
        self.last_change = np.zeros(P)
        self.occupancy = np.zeros(OCCUPANCY_BINS)  # pod-seconds spent holding n requests
        self.hist_e2e = np.zeros((W, B), np.int64)
        self.hist_queue = np.zeros((W, B), np.int64)
        self.hist_service = np.zeros((W, B), np.int64)
        self.sum_e2e = np.zeros(W)
        self.arrived = np.zeros(W, np.int64)
        self.completed = np.zeros(W, np.int64)
        self.errors = np.zeros((W, len(ERROR_KINDS)), np.int64)
        self.s_tok = np.zeros((P, C))  # a running request's prompt, should it be retried
        self.sum_queue = np.zeros(W)
        # Free slots as a stack, and a batching pod's running requests by the step they finish
        # after (a heap): a step touches only the requests it ends, however many slots a pod has.
        self.free = np.zeros((P, C), np.int64)
        self.nfree = np.zeros(P, np.int64)
        self.fin_key = np.zeros((P, C))
        self.fin_slot = np.zeros((P, C), np.int64)
        self.nfin = np.zeros(P, np.int64)
        self.steps = np.zeros(P)  # steps a batching pod has ended

    def arrays(self) -> tuple:
        return (self.pstate, self.gen, self.speed, self.weight, self.nrun, self.nq, self.qhead, self.stepping,
                self.removals, self.s_busy, self.s_arr, self.s_adm, self.s_work, self.s_rt, self.s_try, self.q_arr,
                self.q_work, self.q_tok, self.q_rt, self.q_try, self.inflight, self.usable, self.nusable,
                self.current, self.hk, self.hkind, self.ha, self.hb, self.hgen, self.si, self.sf, self.last_change,
                self.occupancy, self.hist_e2e, self.hist_queue, self.hist_service, self.sum_e2e, self.arrived,
                self.completed, self.errors, self.s_tok, self.sum_queue, self.free, self.nfree,
                self.fin_key, self.fin_slot, self.nfin, self.steps)


# Static settings of a run, in one float array (`pr`), by index; after them (from PR_N) a batching
# pod's step seconds at each batch size 0..slots (`step_table`), then PR_COLD_N listed cold starts.
(PR_MODEL, PR_POLICY, PR_CAP, PR_RETRY, PR_PER_TOKEN, PR_DELAY, PR_FAIL_RATE,
 PR_COLD_LO, PR_COLD_HI, PR_COLD_N, PR_WINDOW, PR_BIN_LO, PR_BIN_LOG_RATIO, PR_HOST_CORES, PR_START_CORES,
 PR_N) = range(16)


@numba.njit(cache=True)
def seed(value):
    """Seed the compiled code's own generator (cold starts, failures, discovery delays, retries)."""
    np.random.seed(value)


@numba.njit(cache=True)
def pick(policy, cap, usable_r, n, inflight_r, weight, current_r, u0, u1, u2, u3):
    """The pod a router sends to (or -ERR_... - 1): the balancer's choice over the pods it knows,
    `usable_r[:n]` in discovery order, with its own in-flight counts."""
    if n == 0:
        return -ERR_NONE_READY - 1
    if policy == P2C and n >= 2:
        i, j = _two_choices(n, u0, u1)
        a, b = usable_r[i], usable_r[j]
        if not _first_of_two(inflight_r[a] / weight[a], inflight_r[b] / weight[b], u2):
            a, b = b, a
        if cap <= 0 or inflight_r[a] < cap:
            return a
        if inflight_r[b] < cap:
            return b
        u0 = u3  # both samples full: the least loaded below the cap, as the balancer does
    loads = np.empty(n)
    open_ = np.empty(n, np.bool_)
    m = 0
    for k in range(n):
        p = usable_r[k]
        loads[k] = inflight_r[p] / weight[p]
        open_[k] = cap <= 0 or inflight_r[p] < cap
        if open_[k]:
            m += 1
    if m == 0:
        return -ERR_AT_CAP - 1
    if policy == LEAST_LOADED or policy == P2C:
        return usable_r[_least_loaded_index(loads, open_, u0)]
    idx = np.empty(m, np.int64)
    w = np.empty(m)
    cur = np.empty(m)
    m = 0
    for k in range(n):
        if open_[k]:
            p = usable_r[k]
            idx[m], w[m], cur[m] = p, weight[p], current_r[p]
            m += 1
    if policy == RANDOM:
        return idx[_weighted_index(w, u0)]
    best = _smooth_round_robin(w, cur)
    for k in range(m):
        current_r[idx[k]] = cur[k]
    return idx[best]


@numba.njit(cache=True)
def run_until(st, pr, commands, t_end, at, rt, work, tok, u):
    """Apply the driver's `commands` [m, 2] (kind, pod place) at the current time, then process
    the arrivals `at` and the events in time order up to t_end. Per arrival: `rt` its router,
    `work` (M/M/c: service seconds; batching: steps), `tok` prompt tokens, `u` [n, 4] the router's
    uniform draws."""
    (pstate, gen, speed, weight, nrun, nq, qhead, stepping, removals, s_busy, s_arr, s_adm, s_work, s_rt, s_try,
     q_arr, q_work, q_tok, q_rt, q_try, inflight, usable, nusable, current, hk, hkind, ha, hb, hgen, si, sf,
     last_change, occupancy, hist_e2e, hist_queue, hist_service, sum_e2e, arrived, completed, errors, s_tok,
     sum_queue, free, nfree, fin_key, fin_slot, nfin, steps) = st
    C, Q, R, W, B = s_busy.shape[1], q_arr.shape[1], nusable.shape[0], hist_e2e.shape[0], hist_e2e.shape[1]
    model, policy, cap = int(pr[PR_MODEL]), int(pr[PR_POLICY]), int(pr[PR_CAP])
    retry, delay, fail_rate = pr[PR_RETRY] > 0.0, pr[PR_DELAY], pr[PR_FAIL_RATE]
    window, bin_lo, bin_log = pr[PR_WINDOW], pr[PR_BIN_LO], pr[PR_BIN_LOG_RATIO]
    host_cores, start_cores = pr[PR_HOST_CORES], pr[PR_START_CORES]
    listed_starts = int(pr[PR_COLD_N])

    # --- the event heap -----------------------------------------------------------------------
    def push(t, kind, a, b, g):
        i = si[SI_HEAP]
        if i >= hk.shape[0]:  # never write past the arrays (compiled code does not check)
            raise ValueError("the simulation's event heap is full: more pending events than its pods, slots "
                             "and routers allow for")
        si[SI_HEAP] = i + 1
        while i > 0:
            parent = (i - 1) // 2
            if hk[parent] <= t:
                break
            hk[i], hkind[i], ha[i], hb[i], hgen[i] = hk[parent], hkind[parent], ha[parent], hb[parent], hgen[parent]
            i = parent
        hk[i], hkind[i], ha[i], hb[i], hgen[i] = t, kind, a, b, g

    def pop():
        top = (hk[0], hkind[0], ha[0], hb[0], hgen[0])
        n = si[SI_HEAP] - 1
        si[SI_HEAP] = n
        t, kind, a, b, g = hk[n], hkind[n], ha[n], hb[n], hgen[n]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and hk[child + 1] < hk[child]:
                child += 1
            if hk[child] >= t:
                break
            hk[i], hkind[i], ha[i], hb[i], hgen[i] = hk[child], hkind[child], ha[child], hb[child], hgen[child]
            i = child
        hk[i], hkind[i], ha[i], hb[i], hgen[i] = t, kind, a, b, g
        return top

    # --- a batching pod's running requests by the step they finish after ---------------------------
    def fin_push(p, key, slot):
        i = nfin[p]
        nfin[p] = i + 1
        while i > 0:
            parent = (i - 1) // 2
            if fin_key[p, parent] <= key:
                break
            fin_key[p, i], fin_slot[p, i] = fin_key[p, parent], fin_slot[p, parent]
            i = parent
        fin_key[p, i], fin_slot[p, i] = key, slot

    def fin_pop(p):
        top = fin_slot[p, 0]
        m = nfin[p] - 1
        nfin[p] = m
        key, slot = fin_key[p, m], fin_slot[p, m]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= m:
                break
            if child + 1 < m and fin_key[p, child + 1] < fin_key[p, child]:
                child += 1
            if fin_key[p, child] >= key:
                break
            fin_key[p, i], fin_slot[p, i] = fin_key[p, child], fin_slot[p, child]
            i = child
        fin_key[p, i], fin_slot[p, i] = key, slot
        return top

    # --- bookkeeping -----------------------------------------------------------------------------
    def advance(t):
        """Integrate the time-weighted counts up to t."""
        dt = t - sf[SF_CLOCK]
        if dt > 0.0:
            sf[SF_AREA_SYSTEM] += si[SI_IN_SYSTEM] * dt
            sf[SF_AREA_RUNNING] += si[SI_RUNNING] * dt
            sf[SF_AREA_ALIVE] += si[SI_ALIVE] * dt
            sf[SF_AREA_READY] += si[SI_READY] * dt
            sf[SF_CLOCK] = t

    def occupied(p, t):
        """Before pod p's request count changes: credit the time it held the old count."""
        occupancy[min(nrun[p] + nq[p], OCCUPANCY_BINS - 1)] += t - last_change[p]
        last_change[p] = t

    def bin_of(x):
        if x <= bin_lo:
            return 0
        return min(B - 1, int(math.log(x / bin_lo) / bin_log) + 1)

    def window_of(arrival):
        return min(W - 1, max(0, int(arrival / window)))

    def leave(p, r, arrival, t):
        """A request leaves pod p (answered or failed): the router's count and the system's."""
        inflight[r, p] -= 1
        si[SI_IN_SYSTEM] -= 1
        si[SI_DEPARTED] += 1
        sf[SF_SOJOURN] += t - arrival

    def reset(p):
        """An empty pod: every slot free (slot 0 handed out first), nothing running."""
        for k in range(C):
            free[p, k] = C - 1 - k
        nfree[p] = C
        nfin[p] = 0
        steps[p] = 0.0

    def maybe_stop(p):
        """A draining pod stops once empty and forgotten by every router: its place is free."""
        if pstate[p] == DRAINING and nrun[p] + nq[p] == 0 and removals[p] == 0:
            pstate[p] = FREE
            gen[p] += 1
            si[SI_ALIVE] -= 1

    def complete(p, slot, t):
        arrival = s_arr[p, slot]
        w = window_of(arrival)
        hist_e2e[w, bin_of(t - arrival)] += 1
        hist_queue[w, bin_of(s_adm[p, slot] - arrival)] += 1
        hist_service[w, bin_of(t - s_adm[p, slot])] += 1
        sum_e2e[w] += t - arrival
        sum_queue[w] += s_adm[p, slot] - arrival
        completed[w] += 1
        occupied(p, t)
        s_busy[p, slot] = False
        free[p, nfree[p]] = slot
        nfree[p] += 1
        nrun[p] -= 1
        si[SI_RUNNING] -= 1
        leave(p, s_rt[p, slot], arrival, t)

    def take(p, t):
        """Move the head of pod p's queue into a free slot; returns (slot, prompt tokens)."""
        h = qhead[p]
        nfree[p] -= 1
        slot = free[p, nfree[p]]
        s_busy[p, slot] = True
        s_arr[p, slot], s_adm[p, slot], s_work[p, slot] = q_arr[p, h], t, q_work[p, h]
        s_rt[p, slot], s_try[p, slot] = q_rt[p, h], q_try[p, h]
        s_tok[p, slot] = q_tok[p, h]
        qhead[p] = (h + 1) % Q
        nq[p] -= 1
        nrun[p] += 1
        si[SI_RUNNING] += 1
        return slot, q_tok[p, h]

    def start_step(p, t):
        """A batching pod admits what its free slots take and starts its next step."""
        tokens = 0.0
        while nq[p] > 0 and nrun[p] < C:
            slot, tok_ = take(p, t)
            tokens += tok_
            fin_push(p, steps[p] + s_work[p, slot], slot)
        if nrun[p] == 0:
            if stepping[p]:
                si[SI_STEPPING] -= 1
            stepping[p] = False
            return
        if not stepping[p]:
            si[SI_STEPPING] += 1
        stepping[p] = True
        dt = (pr[PR_N + nrun[p]] + pr[PR_PER_TOKEN] * tokens) * speed[p]
        demand = si[SI_STEPPING] + start_cores * si[SI_STARTING]  # cores wanted on a shared host
        if host_cores > 0.0 and demand > host_cores:
            dt *= demand / host_cores
        push(t + dt, EV_STEP, p, 0, gen[p])

    def serve(p, t):
        """An M/M/c pod's free slot takes the head of its queue."""
        slot, _ = take(p, t)
        push(t + s_work[p, slot] * speed[p], EV_DONE, p, slot, gen[p])

    # --- the request path ------------------------------------------------------------------------
    def route(t, arrival, r, work_, tok_, tries, u0, u1, u2, u3):
        """Router r picks a pod for a request and hands it over (or counts the refusal)."""
        p = pick(policy, cap, usable[r], nusable[r], inflight[r], weight, current[r], u0, u1, u2, u3)
        if p < 0:
            errors[window_of(arrival), -p - 1] += 1
            return
        if nq[p] >= Q:
            errors[window_of(arrival), ERR_QUEUE_FULL] += 1
            return
        occupied(p, t)
        inflight[r, p] += 1
        si[SI_IN_SYSTEM] += 1
        if tries > 0:  # a retry: its failed attempt left the system on paper; it stayed all along
            si[SI_DEPARTED] -= 1
            sf[SF_SOJOURN] -= t - arrival
        j = (qhead[p] + nq[p]) % Q
        q_arr[p, j], q_work[p, j], q_tok[p, j], q_rt[p, j], q_try[p, j] = arrival, work_, tok_, r, tries
        nq[p] += 1
        if model == MMC:
            if nrun[p] < C:
                serve(p, t)
        elif not stepping[p]:
            start_step(p, t)

    # --- membership ------------------------------------------------------------------------------
    def forget(r, p):
        n = nusable[r]
        for k in range(n):
            if usable[r, k] == p:
                for m in range(k, n - 1):  # keep discovery order, as the balancer's endpoint list does
                    usable[r, m] = usable[r, m + 1]
                nusable[r] = n - 1
                return

    def learn(r, p):
        for k in range(nusable[r]):
            if usable[r, k] == p:
                return
        usable[r, nusable[r]] = p
        nusable[r] += 1

    def cold_start():
        n = si[SI_COLD_STARTS]
        si[SI_COLD_STARTS] = n + 1
        if n < listed_starts:
            return pr[PR_N + C + 1 + n]
        return pr[PR_COLD_LO] + np.random.random() * (pr[PR_COLD_HI] - pr[PR_COLD_LO])

    def schedule_failure(p, t):
        if fail_rate > 0.0:
            push(t + np.random.exponential(1.0 / fail_rate), EV_FAIL, p, 0, gen[p])

    def ready(p, t, discovered):
        if pstate[p] == STARTING or pstate[p] == RESTARTING:
            si[SI_STARTING] -= 1
        pstate[p] = READY
        si[SI_READY] += 1
        for r in range(R):
            if discovered or delay <= 0.0:
                learn(r, p)
            else:
                push(t + np.random.random() * delay, EV_ADD, r, p, gen[p])
        schedule_failure(p, t)

    def start(p, t, warm):
        """A pod in place p: ready after a cold start, or at once and known to every router
        when `warm` (the fleet a run begins with)."""
        gen[p] += 1
        si[SI_ALIVE] += 1
        last_change[p] = t
        reset(p)
        pstate[p] = STARTING
        si[SI_STARTING] += 1
        if warm:
            ready(p, t, True)
        else:
            push(t + cold_start(), EV_READY, p, 0, gen[p])

    def drain(p, t):
        """A starting pod stops at once; a ready one leaves every router's set (each after its
        discovery delay), finishes what it holds, then stops."""
        if pstate[p] == STARTING or pstate[p] == RESTARTING:
            si[SI_STARTING] -= 1
            pstate[p] = FREE
            gen[p] += 1
            si[SI_ALIVE] -= 1
        elif pstate[p] == READY:
            pstate[p] = DRAINING
            si[SI_READY] -= 1
            removals[p] = R
            for r in range(R):
                push(t + np.random.random() * delay, EV_REMOVE, r, p, gen[p])

    def fail(p, t):
        """Pod p dies: every router notices at once (connections refused); what it held fails or,
        with retries on, goes once to another pod; the pod comes back after a cold start."""
        for r in range(R):
            forget(r, p)
        occupied(p, t)
        was = pstate[p]
        if was == READY:
            si[SI_READY] -= 1
        gen[p] += 1  # its pending steps and completions are void
        held = nrun[p] + nq[p]
        h_arr, h_work, h_tok = np.empty(held), np.empty(held), np.empty(held)
        h_rt, h_try = np.empty(held, np.int64), np.empty(held, np.int64)
        n = 0
        for slot in range(C):
            if s_busy[p, slot]:
                h_arr[n], h_work[n], h_tok[n] = s_arr[p, slot], s_work[p, slot], s_tok[p, slot]
                h_rt[n], h_try[n] = s_rt[p, slot], s_try[p, slot]
                s_busy[p, slot] = False
                si[SI_RUNNING] -= 1
                n += 1
        for k in range(nq[p]):
            j = (qhead[p] + k) % Q
            h_arr[n], h_work[n], h_tok[n], h_rt[n], h_try[n] = q_arr[p, j], q_work[p, j], q_tok[p, j], \
                q_rt[p, j], q_try[p, j]
            n += 1
        nrun[p], nq[p], qhead[p] = 0, 0, 0
        reset(p)
        if stepping[p]:
            si[SI_STEPPING] -= 1
        stepping[p] = False
        removals[p] = 0
        if was == DRAINING:
            pstate[p] = FREE
            si[SI_ALIVE] -= 1
        else:
            pstate[p] = RESTARTING
            si[SI_STARTING] += 1
            push(t + cold_start(), EV_READY, p, 0, gen[p])
        for k in range(n):
            leave(p, h_rt[k], h_arr[k], t)
            if retry and h_try[k] == 0:
                si[SI_RETRIES] += 1
                route(t, h_arr[k], h_rt[k], h_work[k], h_tok[k], 1, np.random.random(), np.random.random(),
                      np.random.random(), np.random.random())
            else:
                errors[window_of(h_arr[k]), ERR_POD_FAILED] += 1

    def event(t, kind, a, b, g):
        if kind == EV_ADD or kind == EV_REMOVE:
            r, p = a, b
            if g != gen[p]:
                return
            if kind == EV_ADD:
                if pstate[p] == READY:
                    learn(r, p)
            else:
                forget(r, p)
                removals[p] -= 1
                maybe_stop(p)
            return
        p = a
        if g != gen[p]:
            return
        if kind == EV_DONE:
            complete(p, b, t)
            if nq[p] > 0:
                serve(p, t)
            maybe_stop(p)
        elif kind == EV_STEP:
            steps[p] += 1.0
            while nfin[p] > 0 and fin_key[p, 0] <= steps[p]:
                complete(p, fin_pop(p), t)
            start_step(p, t)
            maybe_stop(p)
        elif kind == EV_READY:
            ready(p, t, False)
        elif kind == EV_FAIL:
            if pstate[p] == READY or pstate[p] == DRAINING:
                fail(p, t)

    # --- the loop --------------------------------------------------------------------------------
    now = sf[SF_CLOCK]
    for c in range(commands.shape[0]):
        kind, p = commands[c, 0], commands[c, 1]
        if kind == CMD_DRAIN:
            drain(p, now)
        else:
            start(p, now, kind == CMD_START_WARM)
    k = 0
    n = at.shape[0]
    while True:
        ta = at[k] if k < n else np.inf
        te = hk[0] if si[SI_HEAP] > 0 else np.inf
        if te <= ta:
            if te >= t_end:
                break
            t, kind, a, b, g = pop()
            advance(t)
            event(t, kind, a, b, g)
        else:
            if ta >= t_end:
                break
            advance(ta)
            route(ta, ta, rt[k], work[k], tok[k], 0, u[k, 0], u[k, 1], u[k, 2], u[k, 3])
            k += 1
    advance(t_end)
    return k
