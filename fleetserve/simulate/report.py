"""What a simulation wrote: the JSON with every figure, a PNG of the run over time (offered and
answered rate, pods, latency percentiles per window against the SLO), and an HTML page in the
load tester's style (the same plot inline, the tables). A sweep gets one table and one plot of
every run side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fleetserve.loadtest.report import fmt, save_png, svg_of, write_json

__all__ = ["write_json", "write_png", "write_html", "summary_rows", "text_table"]

COLUMNS = (("p50 ms", lambda r: r["overall"]["p50_ms"]), ("p99 ms", lambda r: r["overall"]["p99_ms"]),
           ("p99.9 ms", lambda r: r["overall"]["p99_9_ms"]), ("queue p99 ms", lambda r: r["overall"]["queue_p99_ms"]),
           ("availability", lambda r: r["overall"]["availability"]), ("pod-hours", lambda r: r["pods"]["pod_hours"]),
           ("mean pods", lambda r: r["pods"]["mean_pods"]),
           ("slot utilisation", lambda r: r["pods"]["slot_utilisation"]),
           ("SLO met", lambda r: "yes" if r["slo_met"] else "no"))


def _runs(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "sweep" in report:
        return [(run["label"], run["result"]) for run in report["sweep"]]
    return [(report["scenario"], report)]


def summary_rows(report: dict[str, Any]) -> list[list[Any]]:
    return [[label] + [f(r) for _, f in COLUMNS] for label, r in _runs(report)]


def text_table(report: dict[str, Any]) -> str:
    """The summary as aligned text, for the terminal."""
    rows = [["run"] + [c for c, _ in COLUMNS]] + [[str(v) if v is not None else "-" for v in row]
                                                  for row in summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
                     for row in rows)


def _figure(report: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    runs = _runs(report)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, r) in enumerate(runs):
        color = colors[n % len(colors)]
        tl = r["timeline"]
        ts = [row["t"] for row in tl]
        name = "" if len(runs) == 1 else f" ({label})"
        if n == 0:
            axes[0].plot(ts, [row["rate"] for row in tl], color="0.5", linestyle="--", label="offered")
        mid = [(w["start_s"] + w["end_s"]) / 2 for w in r["windows"]]
        axes[0].plot(mid, [w["throughput"] for w in r["windows"]], color=color, label="answered" + name)
        axes[1].plot(ts, [row["ready"] for row in tl], color=color, label="ready" + name)
        if tl and "desired" in tl[0]:
            axes[1].plot(ts, [row["desired"] for row in tl], color=color, linestyle=":", label="desired" + name)
        stats = (("p50_ms", ":"), ("p99_ms", "-"), ("p99_9_ms", "--")) if len(runs) == 1 else (("p99_ms", "-"),)
        for stat, style in stats:
            vals = [w[stat] if w[stat] is not None else float("nan") for w in r["windows"]]
            axes[2].plot(mid, vals, color=color, linestyle=style, label=stat.replace("_ms", "").replace("_", ".") + name)
    slo = runs[0][1]["settings"]["slo_p99_ms"]
    axes[2].axhline(slo, color="black", linewidth=0.8, linestyle="--", label=f"SLO p99 {slo:g} ms")
    axes[0].set_ylabel("requests/s")
    axes[1].set_ylabel("pods")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("simulated seconds")
    for ax in axes:
        ax.legend(loc="upper left", fontsize="small")
    axes[0].set_title(f"simulated: {report.get('scenario', '')}")
    fig.tight_layout()
    return fig


def write_png(report: dict[str, Any], path: str | Path) -> Path:
    return save_png(_figure(report), path)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run"] + [c for c, _ in COLUMNS])
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in summary_rows(report))
    runs = _runs(report)
    first = runs[0][1]
    errors = "".join(f"<li>{html.escape(label)}: {html.escape(', '.join(f'{k}: {v:,}' for k, v in kinds.items()))}</li>"
                     for label, r in runs if (kinds := r["overall"]["error_kinds"]))
    s = first["settings"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fleetserve simulate</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Simulated fleet: {html.escape(report.get('scenario', first['scenario']))}</h1>
<p>{html.escape(s.get('description') or '')}</p>
<p>traffic {html.escape(s['traffic']['profile'])} ({html.escape(s['traffic']['arrivals'])}) · pods
{html.escape(s['pods']['model'])}, {s['pods']['slots']} slots · {s['routers']['replicas']} router(s) ·
{fmt(first['requests'])} requests in {fmt(first['simulated_seconds'])} simulated s ·
{fmt(first['simulated_requests_per_s'])} simulated requests per wall second</p>
<table><tr>{head}</tr>{body}</table>
{f'<h2>Errors</h2><ul>{errors}</ul>' if errors else ''}
{svg_of(_figure(report))}
</body></html>
"""
    path.write_text(page)
    return path
