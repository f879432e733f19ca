"""Figures from a run's records, overall and per time window, named as in
`vllm bench serve` (ttft, tpot, itl, e2el; mean/median/p90/p99/p99.9 in ms).

Latencies are attributed to the window in which a request was *due*, so a
ramp's plot shows the latency that the load at that moment caused; achieved
throughput counts answers by the window in which they *completed*.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

PERCENTILES = {"median": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
LATENCIES = ("ttft", "tpot", "itl", "e2el")
LAG_LIMIT = 0.010  # a request sent this much after its due time counts as client lag


def latency_stats(values_s: np.ndarray) -> dict[str, float | None]:
    """mean and percentiles in milliseconds; None when there is nothing to summarise."""
    v = values_s[~np.isnan(values_s)] if len(values_s) else values_s
    if len(v) == 0:
        return {"mean": None, **{k: None for k in PERCENTILES}}
    ms = v * 1e3
    out: dict[str, float | None] = {"mean": round(float(ms.mean()), 3)}
    for name, q in PERCENTILES.items():
        out[name] = round(float(np.percentile(ms, q)), 3)
    return out


def per_request(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each request's latencies in seconds (nan where not defined)."""
    ok = a["ok"]
    e2el = np.where(ok, a["end"] - a["start"], np.nan)
    ttft = np.where(ok, a["first"] - a["start"], np.nan)  # nan unless streamed
    streamed_tokens = a["tokens"].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok & (streamed_tokens > 1), (a["end"] - a["first"]) / (streamed_tokens - 1), np.nan)
    return {"e2el": e2el, "ttft": ttft, "tpot": tpot}


def good_mask(lat: dict[str, np.ndarray], ok: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Requests that succeeded and met every per-request latency threshold (seconds)."""
    good = ok.copy()
    for metric, limit in thresholds.items():
        v = lat[metric]
        good &= ~np.isnan(v) & (v < limit)
    return good


def _block(a: dict[str, np.ndarray], lat: dict[str, np.ndarray], rows: np.ndarray, itl: np.ndarray,
           errors: list[str], span: float, completed_ok: int, good: np.ndarray, offered: int) -> dict[str, Any]:
    sent = int(rows.sum())
    ok = int(a["ok"][rows].sum())
    kinds = Counter(e for e, r in zip(errors, rows) if r and e)
    lag = (a["start"] - a["due"])[rows]
    failed = sum(kinds.values())
    out: dict[str, Any] = {
        "offered_requests": offered,
        "sent_requests": sent,
        "completed_requests": ok,
        "offered_rate": round(offered / span, 3) if span else None,
        "request_throughput": round(completed_ok / span, 3) if span else None,
        "request_goodput": round(int(good[rows].sum()) / span, 3) if span else None,
        "output_throughput": round(float(a["tokens"][rows & a["ok"]].sum()) / span, 3) if span else None,
        "errors": dict(sorted(kinds.items())),
        "error_rate": round(failed / sent, 6) if sent else 0.0,
        "availability": round(ok / sent, 6) if sent else None,
        "client_lag": {
            "late_requests": int((lag > LAG_LIMIT).sum()),
            "late_share": round(float((lag > LAG_LIMIT).mean()), 6) if sent else 0.0,
            "p99_ms": round(float(np.percentile(lag, 99)) * 1e3, 3) if sent else None,
            "max_ms": round(float(lag.max()) * 1e3, 3) if sent else None,
        },
    }
    for name in LATENCIES:
        values = itl if name == "itl" else lat[name][rows]
        out[name] = latency_stats(values)
    return out


def summarize(a: dict[str, np.ndarray], errors: list[str], duration: float, window: float,
              thresholds: dict[str, float], offered_due: np.ndarray | None = None) -> dict[str, Any]:
    """The overall figures and one block per window of `window` seconds.

    `offered_due`: every scheduled arrival (defaults to the sent ones)."""
    lat = per_request(a)
    good = good_mask(lat, a["ok"], thresholds)
    due = a["due"]
    offered_due = due if offered_due is None else offered_due
    itl_owner_due = due[a["itl_owner"]] if len(a["itl"]) else np.zeros(0)
    all_rows = np.ones(len(due), dtype=bool)
    overall_span = max(duration, float(a["end"].max()) if len(due) else duration)
    overall = _block(a, lat, all_rows, a["itl"], errors, duration, int(a["ok"].sum()), good, len(offered_due))
    overall["duration_s"] = round(duration, 3)
    overall["drain_s"] = round(overall_span - duration, 3)
    windows = []
    for k in range(int(math.ceil(duration / window - 1e-9))):
        lo, hi = k * window, min((k + 1) * window, duration)
        rows = (due >= lo) & (due < hi)
        done_here = int(((a["end"] >= lo) & (a["end"] < hi) & a["ok"]).sum())
        offered = int(((offered_due >= lo) & (offered_due < hi)).sum())
        itl = a["itl"][(itl_owner_due >= lo) & (itl_owner_due < hi)] if len(itl_owner_due) else np.zeros(0)
        block = _block(a, lat, rows, itl, errors, hi - lo, done_here, good, offered)
        windows.append({"start_s": round(lo, 3), "end_s": round(hi, 3), **block})
    return {"overall": overall, "windows": windows}


def knee(windows: list[dict[str, Any]], p99_limit_ms: float = 1000.0) -> dict[str, Any] | None:
    """The highest offered rate the server kept up with: the last window, before the
    first one that fails, whose e2el p99 stays under the limit with no errors and
    whose achieved rate kept up with the offered one.

    "Kept up" allows 20%: answers are counted where they complete, so they trail
    the arrivals by one latency, and a few seconds of Poisson arrivals vary by
    ~10% on their own. The first window is exempt (its answers are still in flight
    at its end); falling behind for real shows in the latency soon after anyway."""
    best = None
    for i, w in enumerate(windows):
        p99 = w["e2el"]["p99"]
        if not w["sent_requests"]:
            continue
        kept_up = i == 0 or w["request_throughput"] >= 0.8 * w["offered_rate"]
        if p99 is None or p99 >= p99_limit_ms or w["error_rate"] > 0 or not kept_up:
            break
        if best is None or w["offered_rate"] > best["offered_rate"]:
            best = {"offered_rate": w["offered_rate"], "request_throughput": w["request_throughput"],
                    "p99_e2el_ms": p99, "window_start_s": w["start_s"]}
    return best
