"""deploy/kubernetes: every manifest parses, checks against the Kubernetes object
schema (the `kubernetes_asyncio` client's models: every field known, of the right
type, required ones present), and the files agree with each other and with the
commands they run (names, ports, labels, probes, RBAC)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from fleetserve.cli import build_parser

DIR = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KINDS = {("v1", "Namespace"): "V1Namespace", ("v1", "Service"): "V1Service",
         ("v1", "ServiceAccount"): "V1ServiceAccount", ("v1", "ConfigMap"): "V1ConfigMap",
         ("apps/v1", "Deployment"): "V1Deployment", ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
         ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding", ("v1", "Secret"): "V1Secret"}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str,
              "date": str}


def check_schema(data, type_name: str, where: str) -> None:
    """Strict: unknown fields and wrong types fail (the client's own deserializer ignores unknown keys)."""
    if data is None:
        return
    if type_name.startswith("list["):
        assert isinstance(data, list), f"{where}: expected a list"
        for i, item in enumerate(data):
            check_schema(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        assert isinstance(data, dict), f"{where}: expected a mapping"
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in data.items():
            check_schema(v, inner, f"{where}.{k}")
        return
    if type_name in PRIMITIVES:
        if type_name == "str" and isinstance(data, (int, float)) and where.endswith(("port", "targetPort")):
            return  # int-or-string fields are typed str in the client
        assert isinstance(data, PRIMITIVES[type_name]), f"{where}: expected {type_name}, got {data!r}"
        return
    klass = getattr(client.models, type_name)
    assert isinstance(data, dict), f"{where}: expected an object ({type_name})"
    by_json = {v: k for k, v in klass.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{where}: unknown field {key!r} for {type_name}"
        check_schema(value, klass.openapi_types[by_json[key]], f"{where}.{key}")


def build(data, type_name: str):
    """The client model object for a manifest (as the client deserializes, without its HTTP session)."""
    if data is None:
        return None
    if type_name.startswith("list["):
        return [build(x, type_name[5:-1]) for x in data]
    if type_name.startswith("dict("):
        inner = type_name[5:-1].split(", ", 1)[1]
        return {k: build(v, inner) for k, v in data.items()}
    if type_name in PRIMITIVES:
        return data
    klass = getattr(client.models, type_name)
    by_json = {v: k for k, v in klass.attribute_map.items()}
    return klass(**{by_json[k]: build(v, klass.openapi_types[by_json[k]]) for k, v in data.items()})


def documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = documents()


def find(kind: str, name: str) -> dict:
    for _, d in DOCS:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def container_args(deployment: dict) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def opt(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("fname,doc", DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_matches_the_kubernetes_schema(fname, doc):
    type_name = KINDS.get((doc["apiVersion"], doc["kind"]))
    assert type_name, f"{fname}: unexpected {doc['apiVersion']} {doc['kind']}"
    check_schema(doc, type_name, f"{fname}:{doc['kind']}")
    # and the client's models accept it (they refuse a missing required field)
    obj = build(doc, type_name)
    assert obj.metadata.name == doc["metadata"]["name"]
    if doc["kind"] != "Namespace":
        assert doc["metadata"]["namespace"] == "fleetserve"


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((DIR / "kustomization.yaml").read_text())
    files = {p.name for p in DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files


def test_commands_in_the_manifests_parse_with_the_real_cli():
    parser = build_parser()
    for _, d in DOCS:
        if d["kind"] == "Deployment":
            args = container_args(d)
            assert args[0] == "fleetserve"
            parser.parse_args(args[1:])  # exits (fails the test) on an unknown option


def test_pods_service_router_and_autoscaler_agree():
    pod, svc = find("Deployment", "correct-pod"), find("Service", "correct-pod")
    labels = pod["spec"]["template"]["metadata"]["labels"]
    assert pod["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    c = pod["spec"]["template"]["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] in port
    assert int(opt(c["args"], "--port")) == port[svc["spec"]["ports"][0]["targetPort"]]
    # probes: ready for traffic, alive for restarts
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # drain fits the grace period: preStop sleep + the pod's drain timeout
    pre = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pre + float(opt(c["args"], "--drain-timeout"))

    router = find("Deployment", "fleetserve-router")
    r = container_args(router)
    assert opt(r, "--discovery") == "kubernetes" and opt(r, "--service") == svc["metadata"]["name"]
    assert opt(r, "--namespace") == svc["metadata"]["namespace"]
    assert opt(r, "--port-name") in {p["name"] for p in svc["spec"]["ports"]}
    rsvc = find("Service", "fleetserve-router")
    rc = router["spec"]["template"]["spec"]["containers"][0]
    assert rsvc["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    assert rsvc["spec"]["ports"][0]["targetPort"] in {p["name"] for p in rc["ports"]}
    assert int(opt(r, "--port")) == rc["ports"][0]["containerPort"]
    assert router["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 5 + float(opt(r, "--drain-timeout"))

    auto = find("Deployment", "fleetserve-autoscaler")
    a = container_args(auto)
    assert opt(a, "--deployment") == pod["metadata"]["name"] and opt(a, "--service") == svc["metadata"]["name"]
    assert opt(a, "--port-name") in {p["name"] for p in svc["spec"]["ports"]}


def test_rbac_grants_exactly_what_each_component_calls():
    def rules_for(deployment: str) -> list[dict]:
        sa = find("Deployment", deployment)["spec"]["template"]["spec"]["serviceAccountName"]
        find("ServiceAccount", sa)
        out = []
        for _, d in DOCS:
            if d["kind"] == "RoleBinding" and any(s["name"] == sa for s in d["subjects"]):
                out += find("Role", d["roleRef"]["name"])["rules"]
        return out

    def allows(rules, group, resource, verb, name=None):
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   and (name is None or name in r.get("resourceNames", [name])) for r in rules)

    router = rules_for("fleetserve-router")
    for verb in ("list", "watch"):
        assert allows(router, "discovery.k8s.io", "endpointslices", verb)
    assert not allows(router, "apps", "deployments/scale", "patch")
    scaler = rules_for("fleetserve-autoscaler")
    for verb in ("get", "patch"):
        assert allows(scaler, "apps", "deployments/scale", verb, "correct-pod")
    assert allows(scaler, "discovery.k8s.io", "endpointslices", "watch")


def test_prometheus_scrapes_the_annotated_pods():
    cm = find("ConfigMap", "fleetserve-prometheus")
    prom = yaml.safe_load(cm["data"]["prometheus.yml"])
    job = prom["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    for name in ("correct-pod", "fleetserve-router"):
        ann = find("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
        ports = {str(p["containerPort"]) for p in find("Deployment", name)["spec"]["template"]["spec"]
                 ["containers"][0]["ports"]}
        assert ann["prometheus.io/port"] in ports
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert any(re.fullmatch(r["regex"], "fleetserve") for r in keep)  # pods labelled part-of=fleetserve


def _merge(base: dict, patch: dict) -> dict:
    """Kubernetes' strategic merge as these patches use it: mappings merged, containers by name,
    other lists (volumes, envFrom, ...) appended or replaced (args)."""
    out = dict(base)
    for key, value in patch.items():
        if key == "containers":
            by_name = {c["name"]: c for c in base.get(key, [])}
            out[key] = [_merge(by_name.get(c["name"], {}), c) for c in value]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value)
        elif isinstance(value, list) and key != "args" and isinstance(base.get(key), list):
            out[key] = base[key] + value
        else:
            out[key] = value
    return out


def test_the_object_storage_overlay_streams_the_model_from_s3_into_a_node_cache():
    over = DIR / "object-storage"
    k = yaml.safe_load((over / "kustomization.yaml").read_text())
    assert "../" in k["resources"] and {p["path"] for p in k["patches"]} == {"pod-from-s3.yaml"}
    secret = yaml.safe_load((over / "s3-credentials.yaml").read_text())
    check_schema(secret, "V1Secret", "s3-credentials.yaml")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    pod = _merge(find("Deployment", "correct-pod"), yaml.safe_load((over / "pod-from-s3.yaml").read_text()))
    check_schema(pod, "V1Deployment", "object-storage: correct-pod")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    build_parser().parse_args(args[1:])
    assert args[2].startswith("s3://")
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [secret["metadata"]["name"]]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mount["block-cache"] == opt(args, "--cache-dir")
    assert "block-cache" in {v["name"] for v in pod["spec"]["template"]["spec"]["volumes"]}
