"""A simulation scenario: the traffic, the pods, the routers and the autoscaler, from YAML.

Every key is checked: a misspelt or unknown one is an error that names it and lists the
keys allowed there. Durations take units (`500ms`, `30s`, `2m`); rates take `k`.
A `sweep:` section turns one scenario into several (see `expand`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fleetserve.fleet.autoscaler import AutoscalerConfig
from fleetserve.fleet.balancer import POLICIES
from fleetserve.loadtest.profile import parse_duration, parse_profile

POD_MODELS = ("batching", "mmc")


@dataclass
class Traffic:
    profile: str  # the load tester's profile, e.g. diurnal:40k..200k@10m
    arrivals: str = "poisson"  # poisson | gamma (bursty: gaps with coefficient of variation cv)
    cv: float = 1.0
    prompt_tokens: str = "50"  # N | uniform:A..B | exponential:MEAN | lognormal:MEAN,CV
    output_tokens: str = "50"
    sizes_file: str | None = None  # lines "PROMPT_TOKENS OUTPUT_TOKENS", sampled (instead of the two above)
    # send times in seconds, one a line (a real load test's, replayed: `fleetserve bench-simulate`),
    # instead of drawing them; the profile still sets how long the run lasts
    arrival_times_file: str | None = None


@dataclass
class Pods:
    count: int = 1  # ready at the start (and the fixed count without an autoscaler)
    model: str = "batching"  # batching (continuous batching, a step-time model) | mmc (c slots, exponential)
    slots: int = 64
    max_queue: int = 4096  # requests waiting at a pod beyond which it refuses (429)
    service_ms: float = 20.0  # mmc: mean service time
    step_base_ms: float = 10.0  # batching: a step lasts base + per_seq * batch + per_prompt_token * prompt tokens
    step_per_seq_ms: float = 0.3
    step_per_prompt_token_ms: float = 0.0
    # batching: measured (batch, step ms) points instead of base + per_seq * batch, interpolated
    # (flat below the first, the last two's slope beyond the last): a real pod's step time is not
    # a line (flat at small batches, steeper at large ones)
    step_points_ms: list | None = None
    tokens_per_step: float = 1.0  # output tokens per request and step (above 1 with speculative decoding)
    # batching: each request's steps times a lognormal factor of mean 1 and this sigma. A real pod's
    # requests of one size spread more than its steps explain (alone at 2 req/s: mean 269, p90 321 ms
    # for 50 steps of 5 ms, 98.7% of it inside the engine: the host's other work preempting a step,
    # the allocator); `simulate calibrate` fits it. 0: every request of a size takes its steps exactly.
    service_spread: float = 0.0
    # time from start to ready: D, LO..HI (uniform), or A,B,... (the pods started take these in turn,
    # then uniform over their range: a replay of a real run's measured starts)
    cold_start: str = "30s"
    failures_per_hour: float = 0.0  # per pod; a failed pod restarts (a cold start)
    slow_fraction: float = 0.0  # each new pod is slow with this probability
    slow_pods: int = 0  # the first this many pods of the starting fleet are slow
    slow_factor: float = 3.0  # a slow pod's service or step times, times this
    # Pods sharing one host (`fleetserve up` on a laptop): the cores their engines get between them
    # (those left by the router and the load generator); with more pods stepping at once, each step
    # is that much longer. 0: every pod has cores of its own (a cluster).
    host_cores: float = 0.0
    # On such a host, the cores a starting pod takes from them (loading the runtime and the weights
    # is CPU work): the serving pods' steps are longer while others start.
    start_cores: float = 0.0

    def cold_start_list(self) -> list[float]:
        """The listed cold starts ("A,B,..."), in the order pods take them; [] for D or LO..HI."""
        if "," not in self.cold_start:
            return []
        return [parse_duration(v.strip(), allow_zero=True) for v in self.cold_start.split(",") if v.strip()]

    def cold_start_range(self) -> tuple[float, float]:
        listed = self.cold_start_list()
        if listed:
            return min(listed), max(listed)
        lo, sep, hi = self.cold_start.partition("..")
        a = parse_duration(lo, allow_zero=True)
        b = parse_duration(hi, allow_zero=True) if sep else a
        if b < a:
            raise ValueError(f"pods.cold_start {self.cold_start!r}: empty range")
        return a, b


@dataclass
class Routers:
    replicas: int = 1  # each with its own in-flight counts, as in production
    policy: str = "p2c"
    max_inflight_per_endpoint: int = 256  # 0: no cap (the router's --max-inflight-per-endpoint)
    retry: bool = True  # one retry on another pod for a request whose pod failed
    discovery_delay: str = "0s"  # each router learns of a pod joining or leaving within this (uniform)


@dataclass
class Scenario:
    name: str
    traffic: Traffic
    pods: Pods = field(default_factory=Pods)
    routers: Routers = field(default_factory=Routers)
    autoscaler: AutoscalerConfig | None = None
    interval: float = 1.0  # seconds between the autoscaler's decisions (and timeline rows)
    duration: float | None = None  # seconds of traffic; default: the profile's
    drain: bool = True  # after the traffic, run until every request is answered (at most 10 min)
    window: float = 10.0  # seconds per statistics window
    warmup: float = 0.0  # windows starting before this are left out of the overall figures
    seed: int = 0
    slo_p99_ms: float = 1000.0
    description: str = ""
    sweep: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.profile = parse_profile(self.traffic.profile)
        p, r = self.pods, self.routers
        if p.model not in POD_MODELS:
            raise ValueError(f"pods.model {p.model!r}: choose one of {', '.join(POD_MODELS)}")
        if r.policy not in POLICIES:
            raise ValueError(f"routers.policy {r.policy!r}: choose one of {', '.join(POLICIES)}")
        checks = [(p.count >= 0, "pods.count must be >= 0"), (p.slots >= 1, "pods.slots must be >= 1"),
                  (p.max_queue >= 1, "pods.max_queue must be >= 1"), (p.service_ms > 0, "pods.service_ms must be > 0"),
                  (p.tokens_per_step >= 1, "pods.tokens_per_step must be >= 1"),
                  (min(p.step_base_ms, p.step_per_seq_ms, p.step_per_prompt_token_ms) >= 0
                   and p.step_base_ms + p.step_per_seq_ms > 0, "pods.step_*_ms must be >= 0, base + per_seq > 0"),
                  (0 <= p.slow_fraction <= 1, "pods.slow_fraction must be within 0..1"),
                  (p.slow_factor > 0, "pods.slow_factor must be > 0"),
                  (p.failures_per_hour >= 0, "pods.failures_per_hour must be >= 0"),
                  (p.host_cores >= 0, "pods.host_cores must be >= 0"),
                  (p.start_cores >= 0, "pods.start_cores must be >= 0"),
                  (0 <= p.service_spread <= 2, "pods.service_spread must be between 0 and 2"),
                  (r.replicas >= 1, "routers.replicas must be >= 1"),
                  (r.max_inflight_per_endpoint >= 0, "routers.max_inflight_per_endpoint must be >= 0"),
                  (self.interval > 0, "interval must be > 0"), (self.window > 0, "window must be > 0"),
                  (self.run_seconds > 0, "duration must be > 0"), (self.warmup >= 0, "warmup must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        p.cold_start_range()
        if p.step_points_ms is not None:
            step_table(p)
        parse_duration(r.discovery_delay, allow_zero=True)
        if self.autoscaler is None and p.count == 0:
            raise ValueError("pods.count is 0 and there is no autoscaler: nothing would serve")

    @property
    def run_seconds(self) -> float:
        """Simulated seconds of traffic: `duration`, or the profile's."""
        return self.duration if self.duration is not None else self.profile.duration

    @property
    def max_pods(self) -> int:
        return self.autoscaler.max_replicas if self.autoscaler else self.pods.count

    @property
    def discovery_delay(self) -> float:
        return parse_duration(self.routers.discovery_delay, allow_zero=True)


def step_table(p: Pods) -> list[float]:
    """A batching pod's step seconds at each batch size 0..slots (ValueError: malformed points)."""
    if p.step_points_ms is None:
        return [(p.step_base_ms + p.step_per_seq_ms * b) / 1e3 for b in range(p.slots + 1)]
    try:
        points = sorted((float(b), float(ms)) for b, ms in p.step_points_ms)
    except (TypeError, ValueError):
        raise ValueError(f"pods.step_points_ms: expected [[batch, ms], ...], got {p.step_points_ms!r}") from None
    if not points or any(not (b > 0 and ms > 0 and math.isfinite(b) and math.isfinite(ms)) for b, ms in points) \
            or len({b for b, _ in points}) < len(points):
        raise ValueError("pods.step_points_ms: need at least one [batch, ms] point, each batch distinct and both > 0")
    xs, ys = [b for b, _ in points], [ms for _, ms in points]
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(points) > 1 else 0.0
    table = []
    for b in range(p.slots + 1):
        ms = float(np.interp(b, xs, ys)) if b <= xs[-1] else ys[-1] + max(slope, 0.0) * (b - xs[-1])
        table.append(ms / 1e3)
    return table


_SECTIONS = {"traffic": Traffic, "pods": Pods, "routers": Routers, "autoscaler": AutoscalerConfig}
# keys in seconds that also take a duration with units ("30s", "2m"); warmup may be 0
_DURATIONS = {Scenario: {"interval", "duration", "window", "warmup"},
              AutoscalerConfig: {"scale_up_window", "scale_down_window", "scale_down_period"}}


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"allowed: {', '.join(fields)}")
    out = {}
    for key, value in data.items():
        if key in _SECTIONS and cls is Scenario:
            value = None if value is None else _build(_SECTIONS[key], value, key)
        elif key in _DURATIONS.get(cls, ()) and isinstance(value, str):
            value = parse_duration(value, allow_zero=key == "warmup")
        out[key] = _typed(fields[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**out)
    except TypeError as e:
        raise ValueError(f"{where or 'scenario'}: {e}") from None


def _typed(f: dataclasses.Field, value: Any, where: str) -> Any:
    kind = str(f.type)
    if value is None or dataclasses.is_dataclass(value):
        return value
    if kind.startswith("int") and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
    elif kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif kind.startswith("bool") and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    elif kind.startswith("str") and not isinstance(value, str):
        value = str(value)
    return value


def from_dict(data: dict[str, Any], name: str = "scenario") -> Scenario:
    data = dict(data)
    data.setdefault("name", name)
    if "traffic" not in data:
        raise ValueError("a scenario needs a traffic section (at least traffic.profile)")
    pods = data.get("pods")
    if isinstance(pods, dict) and "calibration" in pods:
        # a measured pod (`fleetserve simulate calibrate URL --json FILE`); keys given here win
        data["pods"] = calibrated_pods(pods["calibration"]) | {k: v for k, v in pods.items() if k != "calibration"}
    return _build(Scenario, data, "")


def _read_mapping(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A YAML (or JSON) file holding a mapping; ValueError naming `what` when it is missing or not one."""
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path}: expected a mapping at the top")
    return data


def calibrated_pods(path: str | Path) -> dict[str, Any]:
    """The `pods` keys a calibration file holds."""
    path = Path(path)
    data = _read_mapping(path, "pods.calibration:",
                         f" (write it with fleetserve simulate calibrate URL --json {path})")
    if not isinstance(data.get("pods"), dict):
        raise ValueError(f"pods.calibration: {path} has no pods section")
    return data["pods"]


def load(path: str | Path) -> Scenario:
    path = Path(path)
    data = _read_mapping(path, "scenario")
    pods = data.get("pods")
    if isinstance(pods, dict) and isinstance(pods.get("calibration"), str):
        beside = path.parent / pods["calibration"]
        if not Path(pods["calibration"]).is_absolute() and beside.is_file():
            pods["calibration"] = str(beside)  # relative to the scenario, where it exists there
    try:
        return from_dict(data, path.stem)
    except ValueError as e:
        raise ValueError(f"scenario {path}: {e}") from None


def expand(scenario: Scenario) -> list[tuple[str, Scenario]]:
    """One scenario per combination of the `sweep:` values (`routers.policy: [p2c, random]`,
    `pods.cold_start: [3s, 30s]`, ...), each labelled `key=value, ...`; just the scenario when
    there is no sweep."""
    if not scenario.sweep:
        return [(scenario.name, scenario)]
    base = to_dict(scenario)
    keys = list(scenario.sweep)
    out = []
    for values in itertools.product(*(scenario.sweep[k] for k in keys)):
        d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items() if k != "sweep"}
        for key, value in zip(keys, values):
            override(d, key, value)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
        out.append((label, from_dict(d, scenario.name)))
    return out


def override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `section.key` (or a top-level `key`) in a scenario's data, in place."""
    section, _, leaf = key.strip().rpartition(".")
    target = data
    if section:
        if not isinstance(data.get(section), dict):
            data[section] = {}
        target = data[section]
    target[leaf] = value


def to_dict(scenario: Scenario) -> dict[str, Any]:
    d = {}
    for f in dataclasses.fields(scenario):
        value = getattr(scenario, f.name)
        d[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return d
