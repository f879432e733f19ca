"""Where a running pod's CPU time goes: sample every process of the pod with
py-spy (the engine core, the frontends, the supervisor) and summarise the
samples per role and per function.

py-spy reads the processes from outside, so the pod runs unmodified and at full
speed. The summary counts samples of running Python threads: in the engine
core that includes time inside torch operators (called from the line that is
shown), in a frontend the HTTP parsing, JSON, tokenizing and ZeroMQ work.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROLES = (("run_core_process", "engine core"), ("run_frontend", "frontend"))
MAIN = "main process"  # the supervisor; with --frontends 0 the whole pod
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]+?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # the virtual environment's, even when it is not on PATH
    exe = str(beside) if beside.exists() else shutil.which("py-spy")
    if exe is None:
        raise FileNotFoundError("py-spy is not installed: pip install -r requirements-dev.txt (it pins py-spy)")
    return exe


def record(pid: int, seconds: float, raw_path: Path, rate: int = 100) -> subprocess.Popen:
    """Start sampling `pid` and its children for `seconds`; returns the py-spy process
    (wait on it). Samples go to `raw_path` as collapsed stacks."""
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate),
                             "--format", "raw", "--output", str(raw_path), "--duration", str(max(1, round(seconds))),
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _role(frames: list[str]) -> str | None:
    for marker, role in ROLES:
        if any(marker in f for f in frames):
            return role
    return None


def _short(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py:12)': where, without the site-packages prefix."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    where = Path(m["file"]).name + (f":{m['line']}" if m["line"] else "")
    return f"{m['func']} ({where})"


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """Per role: its share of all samples, the functions where its samples were taken
    (self) and the functions on the stack (inclusive), largest first."""
    samples = []
    roles: dict[str, str] = {}  # process -> role, from any of its stacks that shows its entry point
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        # With --subprocesses a child's stack starts with its parent's "process" entry, then its own.
        first = max(i for i, f in enumerate(parts) if f.startswith("process ")) if parts[0].startswith("process ") else -1
        process, frames = (parts[first] if first >= 0 else ""), parts[first + 1:]
        samples.append((process, frames, int(count)))
        role = _role(frames)
        if role is not None:
            roles[process] = role
    per_role: Counter[str] = Counter()
    own: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    for process, frames, n in samples:
        role = roles.get(process, MAIN)
        per_role[role] += n
        if frames:
            own.setdefault(role, Counter())[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            inclusive.setdefault(role, Counter())[f] += n
    total = sum(per_role.values()) or 1
    out: dict[str, Any] = {"samples": total, "roles": {}}
    for role, n in per_role.most_common():
        def table(c: Counter[str]) -> list[dict[str, Any]]:
            # frames under every sample (process start-up, the event loop's run) say nothing
            rows = [(f, k) for f, k in c.most_common() if k < n]
            return [{"function": f, "share_of_role": round(k / n, 4)} for f, k in rows[:top]]
        out["roles"][role] = {"share": round(n / total, 4), "samples": n, "self": table(own.get(role, Counter())),
                              "inclusive": table(inclusive.get(role, Counter()))}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} samples"]
    for role, r in summary["roles"].items():
        lines.append(f"\n{role}: {100 * r['share']:.1f}% of samples")
        lines.append("  where the samples were taken (self):")
        lines += [f"    {100 * e['share_of_role']:5.1f}%  {e['function']}" for e in r["self"]]
        lines.append("  on the stack (inclusive):")
        lines += [f"    {100 * e['share_of_role']:5.1f}%  {e['function']}" for e in r["inclusive"]]
    return "\n".join(lines)


def write_summary(raw_path: Path, out_dir: Path, name: str) -> dict[str, Any]:
    summary = summarize(raw_path.read_text())
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / f"{name}.txt").write_text(format_summary(summary) + "\n")
    return summary
