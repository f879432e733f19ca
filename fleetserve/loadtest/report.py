"""Load-test reports: the JSON with every figure, a PNG of the run over time,
and a self-contained HTML page (the same plot as inline SVG, the tables, the
SLO verdict), so a person sees the ramp at a glance."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _figure(report: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    windows = report["summary"]["windows"]
    mid = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.plot(mid, [w["offered_rate"] for w in windows], label="offered", color="0.5", linestyle="--")
    ax.plot(mid, [w["request_throughput"] for w in windows], label="achieved", color="tab:blue")
    ax.plot(mid, [w["request_goodput"] for w in windows], label="goodput", color="tab:green")
    if report.get("knee"):
        k = report["knee"]
        ax.axhline(k["offered_rate"], color="tab:red", linewidth=0.8, linestyle=":",
                   label=f"knee {k['offered_rate']:.0f}/s (p99 {k['p99_e2el_ms']:.0f} ms)")
    ax.set_ylabel("requests/s")
    ax.legend(loc="upper left")
    ax.set_title(f"{report['target']}  ·  {report['profile']}")
    ax = axes[1]
    for stat, color in (("median", "tab:blue"), ("p90", "tab:orange"), ("p99", "tab:red")):
        vals = [w["e2el"][stat] for w in windows]
        ax.plot(mid, [v if v is not None else float("nan") for v in vals], label=f"e2el {stat}", color=color)
    if any(w["ttft"]["p99"] is not None for w in windows):
        vals = [w["ttft"]["p99"] for w in windows]
        ax.plot(mid, [v if v is not None else float("nan") for v in vals], label="ttft p99", color="tab:purple",
                linestyle=":")
    for limit in report.get("slo_latency_lines_ms", []):
        ax.axhline(limit, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    ax = axes[2]
    kinds = sorted({k for w in windows for k in w["errors"]})
    width = windows[0]["end_s"] - windows[0]["start_s"] if windows else 1.0
    bottom = [0.0] * len(windows)
    for kind in kinds:
        vals = [w["errors"].get(kind, 0) / max(1e-9, w["end_s"] - w["start_s"]) for w in windows]
        ax.bar(mid, vals, width=width * 0.9, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.plot(mid, [w["client_lag"]["late_requests"] / max(1e-9, w["end_s"] - w["start_s"]) for w in windows],
            color="black", linestyle=":", label="client lag (late sends)")
    ax.set_ylabel("errors/s")
    ax.set_xlabel("seconds since start")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def write_png(report: dict[str, Any], path: str | Path) -> Path:
    return save_png(_figure(report), path)


def save_png(fig, path: str | Path) -> Path:
    """A matplotlib figure as a PNG at `path` (the figure is closed)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _svg(report: dict[str, Any]) -> str:
    return svg_of(_figure(report))


def svg_of(fig) -> str:
    """A matplotlib figure as inline SVG for an HTML page (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def fmt(v: Any) -> str:
    """A value for an HTML table cell."""
    return "–" if v is None else (f"{v:,.2f}" if isinstance(v, float) else html.escape(str(v)))


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    o = report["summary"]["overall"]
    rows = [("offered rate (req/s)", o["offered_rate"]), ("achieved (req/s)", o["request_throughput"]),
            ("goodput (req/s)", o["request_goodput"]), ("sent", o["sent_requests"]),
            ("succeeded", o["completed_requests"]), ("availability", o["availability"]),
            ("error rate", o["error_rate"]), ("errors", ", ".join(f"{k}: {v}" for k, v in o["errors"].items()) or "none"),
            ("late sends (client lag)", o["client_lag"]["late_requests"])]
    if report.get("knee"):
        rows.append(("knee (req/s offered, p99 under the limit)", report["knee"]["offered_rate"]))
    lat = "".join(f"<tr><th>{m}</th>" + "".join(f"<td>{fmt(o[m][s])}</td>" for s in ("mean", "median", "p90", "p99", "p99.9"))
                  + "</tr>" for m in ("ttft", "tpot", "itl", "e2el"))
    verdict = report.get("slo")
    slo_html = ""
    if verdict is not None:
        status = "met" if verdict["passed"] else "FAILED"
        items = "".join(f"<li>{html.escape(f)}</li>" for f in verdict["failures"][:50])
        slo_html = f"<h2>SLO {html.escape(verdict['spec'])}: {status}</h2><ul>{items}</ul>"
    shadow_html = ""
    if report.get("shadow"):
        s = report["shadow"]
        ex = "".join(f"<tr><td>{html.escape(str(e['prompt']))[:200]}</td><td>{html.escape(e['primary'])}</td>"
                     f"<td>{html.escape(e['candidate'])}</td></tr>" for e in s["examples"])
        shadow_html = (f"<h2>Shadow: {html.escape(report['shadow_target'])}</h2><p>exact match {fmt(s['exact_match_rate'])} "
                       f"over {s['compared']} answers; candidate error rate {fmt(s['candidate_error_rate'])}; "
                       f"e2el difference median {fmt(s['e2el_difference']['median'])} ms, "
                       f"p99 {fmt(s['e2el_difference']['p99'])} ms</p>"
                       f"<table><tr><th>prompt</th><th>primary</th><th>candidate</th></tr>{ex}</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fleetserve loadtest</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Load test of {html.escape(report['target'])}</h1>
<p>{html.escape(report['profile'])} · {html.escape(report['workload'])} · started {html.escape(report['started'])}</p>
{slo_html}
<table>{''.join(f'<tr><th>{k}</th><td>{fmt(v)}</td></tr>' for k, v in rows)}</table>
<h2>Latency (ms)</h2><table><tr><th></th><th>mean</th><th>median</th><th>p90</th><th>p99</th><th>p99.9</th></tr>{lat}</table>
{_svg(report)}
{shadow_html}
</body></html>
"""
    path.write_text(page)
    return path
