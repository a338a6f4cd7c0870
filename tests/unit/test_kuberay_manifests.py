"""The KubeRay manifests in deploy/kuberay, checked without a cluster or a network.

- every file parses as YAML into named Kubernetes objects;
- the core objects (ConfigMap, Secret, PersistentVolumeClaim) validate against the
  Kubernetes OpenAPI schemas that kubernetes-validate ships, in strict mode (an unknown
  field fails);
- the RayJob and RayCluster validate against deploy/kuberay/schema/kuberay-v1-subset
  .schema.json, a hand-written subset of the KubeRay v1 CRDs, and every pod template in
  them against the core PodTemplateSpec schema (strict);
- the objects agree: what the pods mount and read exists, the entrypoint is a valid
  ``rheostat run`` over the mounted flow with checkpoints on shared storage, every Ray
  container has token authentication, the worker pods fit the placement group;
- the flow in the ConfigMap loads as a rheostat flow and runs.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

import rheostat as rs
from rheostat.cli.main import find_flow, load_flow_module, module_name_for, run_command

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kuberay"
SCHEMA = DEPLOY / "schema" / "kuberay-v1-subset.schema.json"
#: The Kubernetes version whose schemas the core objects are checked against.
K8S_VERSION = "1.30"
CORE_KINDS = {"ConfigMap", "Secret", "PersistentVolumeClaim"}
RAY_KINDS = {"RayJob", "RayCluster"}
#: Objects the manifests use but do not define; README.md says how to create each.
CREATED_BY_HAND = {("Secret", "rheostat-ray-token")}
FLOW_MOUNT = "/app"


def load_all() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = load_all()


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] in kinds]


def the(kind: str) -> dict[str, Any]:
    (doc,) = of_kind(kind)
    return doc


def doc_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def pod_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = cluster_spec(doc)
    found = [("head", spec["headGroupSpec"]["template"])]
    found += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        found.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return found


def ray_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray container of each head and worker pod (KubeRay's convention: the first)."""
    return [t["spec"]["containers"][0] for name, t in pod_templates(doc) if name != "submitter"]


def rheostat_commands() -> list[tuple[str, list[str]]]:
    """Every ``rheostat run`` the deployment gives: the RayJob's entrypoint and the
    commands README.md tells users to submit to the RayCluster."""
    commands = [("rayjob.yaml", shlex.split(the("RayJob")["spec"]["entrypoint"]))]
    readme = (DEPLOY / "README.md").read_text()
    for block in re.findall(r"^```(?:bash)?\n(.*?)^```", readme, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if "rheostat run " in line:
                argv = shlex.split(line[line.index("rheostat run "):])
                commands.append(("README.md", argv))
    return commands


# --- parsing and schemas ------------------------------------------------------------


def test_every_manifest_parses_into_named_objects():
    names = {path.name for path in DEPLOY.glob("*.yaml")}
    assert {"rayjob.yaml", "raycluster.yaml", "flow-configmap.yaml"} <= names
    assert {name for name, _ in DOCS} == names, "a manifest file holds no object"
    seen = set()
    for name, doc in DOCS:
        assert isinstance(doc, dict), name
        assert doc["kind"] in CORE_KINDS | RAY_KINDS, f"{name}: nothing validates {doc['kind']}"
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{name}: {key} is defined twice"
        seen.add(key)
    assert {kind for kind, _ in seen} >= {"RayJob", "RayCluster", "ConfigMap"}


@pytest.mark.parametrize("item", [d for d in DOCS if d[1]["kind"] in CORE_KINDS], ids=doc_id)
def test_core_objects_validate_against_the_kubernetes_schemas(item):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(item[1], K8S_VERSION, strict=True)


def subset_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("item", [d for d in DOCS if d[1]["kind"] in RAY_KINDS], ids=doc_id)
def test_kuberay_objects_validate_against_the_subset_schema(item):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in subset_validator().iter_errors(item[1])]
    assert errors == []


@pytest.mark.parametrize("item", [d for d in DOCS if d[1]["kind"] in RAY_KINDS], ids=doc_id)
def test_every_pod_template_is_a_valid_core_pod_template(item):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name, template in pod_templates(item[1]):
        wrapper = {"apiVersion": "v1", "kind": "PodTemplate",
                   "metadata": {"name": f"{item[1]['metadata']['name']}-{name}"},
                   "template": template}
        kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "rayClusterSpec", "workerGroupSpec"), []),             # misspelt field
    (("spec", "rayClusterSpec", "authOptions", "mode"), "tokens"),   # not in the enum
    (("spec", "submissionMode"), "K8sMode"),
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "replicas"), "2"),
    (("apiVersion",), "ray.io/v1alpha1"),
])
def test_the_subset_schema_refuses_what_kuberay_would(path, value):
    doc = json.loads(json.dumps(the("RayJob")))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not subset_validator().is_valid(doc)


def test_the_kubernetes_validator_refuses_an_unknown_container_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    template = json.loads(json.dumps(pod_templates(the("RayJob"))[0][1]))
    template["spec"]["containers"][0]["imagePullPolice"] = "Always"
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
               "template": template}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)


# --- the objects agree with each other ------------------------------------------------


def test_what_the_pods_mount_and_read_is_defined_or_created_by_hand():
    defined = {(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCS}
    readme = (DEPLOY / "README.md").read_text()
    for _, name in CREATED_BY_HAND:
        assert f"kubectl create secret generic {name}" in readme
    for doc in of_kind(*RAY_KINDS):
        for _, template in pod_templates(doc):
            spec = template["spec"]
            wanted = set()
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    wanted.add(("ConfigMap", volume["configMap"]["name"]))
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    wanted.add(("PersistentVolumeClaim", claim))
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for container in spec["containers"]:
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"no volume {mount['name']}"
                for source in container.get("envFrom", []):
                    wanted.add(("Secret", source["secretRef"]["name"]))
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        wanted.add(("Secret", ref["name"]))
            missing = wanted - defined - CREATED_BY_HAND
            assert not missing, f"{doc['kind']} uses {missing}, which nothing defines"


def test_the_flow_is_mounted_where_every_command_reads_it():
    flow_map = the("ConfigMap")
    for doc in of_kind(*RAY_KINDS):
        for name, template in pod_templates(doc):
            container = template["spec"]["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volume = next(v for v in template["spec"]["volumes"] if v["name"] == mounts[FLOW_MOUNT])
            assert volume["configMap"]["name"] == flow_map["metadata"]["name"], name
    commands = rheostat_commands()
    assert len(commands) >= 2, "README.md gives no `rheostat run` to submit"
    for where, argv in commands:
        path = argv[2]
        assert path.startswith(FLOW_MOUNT + "/"), where
        assert path.removeprefix(FLOW_MOUNT + "/") in flow_map["data"], where


@pytest.mark.parametrize(("where", "argv"), rheostat_commands(),
                         ids=[f"{w}-{i}" for i, (w, _) in enumerate(rheostat_commands())])
def test_every_rheostat_command_parses_and_checkpoints_to_shared_storage(
    where, argv, tmp_path
):
    assert argv[:2] == ["rheostat", "run"]
    flow_file = tmp_path / "flow.py"
    flow_file.write_text(the("ConfigMap")["data"][Path(argv[2]).name])
    ctx = run_command.make_context("run", [str(flow_file), *argv[3:]])
    params = ctx.params
    assert params["backend"] == "ray"
    assert params["ray_address"] == "auto"
    assert params["no_http"] and params["no_progress"]
    assert params["checkpoint_interval"], f"{where}: no checkpoints, so no recovery"
    store = params["checkpoint_dir"]
    shared = [m["mountPath"] for c in ray_containers(the("RayCluster"))
              for m in c.get("volumeMounts", []) if m["name"] == "shared"]
    assert store.startswith("s3://") or any(store.startswith(p + "/") for p in shared), (
        f"{where}: --checkpoint-dir {store} is not shared storage")


def test_every_ray_container_has_token_authentication():
    job = the("RayJob")
    assert cluster_spec(job)["authOptions"] == {"mode": "token"}
    cluster = the("RayCluster")
    tokens = set()
    for container in ray_containers(cluster):
        env = {var["name"]: var for var in container.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        tokens.add((ref["name"], ref["key"]))
    assert tokens == {("rheostat-ray-token", "auth_token")}
    for doc in (job, cluster):  # token authentication came with Ray 2.52
        version = tuple(int(p) for p in cluster_spec(doc)["rayVersion"].split("."))
        assert version >= (2, 52, 0)


def test_the_image_and_the_manifests_name_the_same_ray_version():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG RAY_IMAGE=rayproject/ray:([0-9.]+)-py3(\d+)$", dockerfile,
                         re.MULTILINE)
    assert int(base[1]) >= 11, "rheostat needs Python 3.11 or later"
    images = set()
    for doc in of_kind(*RAY_KINDS):
        assert cluster_spec(doc)["rayVersion"] == base[0]
        images |= {c["image"] for c in ray_containers(doc)}
    assert len(images) == 1, "every Ray pod should run the same image"


def worker_cpus_default() -> float:
    """RayBackend's default worker_cpus, read from its source (importing it needs ray)."""
    source = (ROOT / "src" / "rheostat" / "backends" / "ray" / "backend.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            names = [a.arg for a in node.args.kwonlyargs]
            return ast.literal_eval(node.args.kw_defaults[names.index("worker_cpus")])
    raise AssertionError("RayBackend.__init__ not found")


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_worker_pods_fit_the_jobs_placement_group():
    job = the("RayJob")
    spec = cluster_spec(job)
    (_, argv), *_ = rheostat_commands()
    workers = int(argv[argv.index("--workers") + 1])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    offered = sum(
        group["minReplicas"] * cpus(group["template"]["spec"]["containers"][0]
                                    ["resources"]["limits"]["cpu"])
        for group in spec["workerGroupSpecs"]
    )
    assert offered >= workers * worker_cpus_default()


def test_no_real_credentials_are_committed():
    for secret in of_kind("Secret"):
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {"CHANGE-ME"}


# --- the flow it runs ---------------------------------------------------------------


def test_the_flow_in_the_configmap_loads_and_runs(tmp_path, monkeypatch):
    source = the("ConfigMap")["data"]["flow.py"]
    path = tmp_path / "flow.py"
    path.write_text(source)
    out = tmp_path / "out"
    monkeypatch.setenv("HOT_ITEMS_OUT", str(out) + "/")
    monkeypatch.setenv("HOT_ITEMS_EVENTS", "20000")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, module_name_for(path), raising=False)
    try:
        flow = find_flow(load_flow_module(path), None, str(path))
    finally:
        sys.modules.pop(module_name_for(path), None)
    assert isinstance(flow, rs.Flow)
    assert flow.name == "hot-items"
    result = rs.run(flow, backend="inline", parallelism=2)
    assert result.state == "finished"
    counts = pq.read_table(out)
    assert counts.num_rows > 0
    assert {"auction", "bids", "window_start", "window_end"} <= set(counts.column_names)
