"""The Kubernetes manifests under deploy/k8s agree with the code: files, ports, probes, settings.

No cluster needed. When kubectl is on PATH, each overlay is also rendered with its Kustomize.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from carelake.config import Settings
from carelake.services import DEFAULT_METRICS_PORTS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = {"local": "carelake-dev", "production": "carelake"}  # overlay -> its namespace

# The port table the manifests, Prometheus and the runtime share (DESIGN.md "Services").
PORTS = {
    "ingest-gateway": 9101, "normalizer": 9102, "dedup-mpi": 9103, "quality-monitor": 9104,
    "feature-store": 9105, "scorer": 9106, "lake-writer": 9107,
}
EXTRA_PORTS = {"ingest-gateway": {"http": 8080, "mllp": 2575}, "dedup-mpi": {"api": 8090}}

SETTINGS = {f"CARELAKE_{name.upper()}" for name in Settings.model_fields}
SECRET_SETTINGS = {f"CARELAKE_{name.upper()}" for name, field in Settings.model_fields.items()
                   if field.annotation is SecretStr}


# ---- YAML ---------------------------------------------------------------------------------------


def load_yaml(text: str) -> list[Any]:
    """Every non-empty document of a (multi-document) YAML text."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# ---- the manifests ------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])


def docs_in(path: Path) -> list[Any]:
    return load_yaml(path.read_text())


def kustomizations() -> dict[Path, dict]:
    return {p.parent: docs_in(p)[0] for p in yaml_files() if p.name == "kustomization.yaml"}


def base_objects(kind: str) -> list[dict]:
    files = [BASE / name for name in kustomizations()[BASE]["resources"]]
    return [d for f in files for d in docs_in(f) if d["kind"] == kind]


def the_container(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container per pod"
    return containers[0]


def service_of(deployment: dict) -> str:
    args = the_container(deployment)["args"]
    assert len(args) == 2 and args[0] == "run", f"{deployment['metadata']['name']}: args {args}"
    return args[1]


def deployments() -> dict[str, dict]:
    return {service_of(d): d for d in base_objects("Deployment")}


def env_names() -> list[tuple[str, str]]:
    """(where, name) of every environment variable the manifests set."""
    found = []
    for path in yaml_files():
        for doc in docs_in(path):
            if not isinstance(doc, dict):
                continue  # a JSON 6902 patch: a list of operations
            where = str(path.relative_to(REPO))
            if doc.get("kind") == "ConfigMap":
                found += [(where, k) for k in doc.get("data") or {}]
            if doc.get("kind") == "Secret":
                keys = [*(doc.get("data") or {}), *(doc.get("stringData") or {})]
                found += [(where, k) for k in keys]
            for gen in [*doc.get("configMapGenerator", []), *doc.get("secretGenerator", [])]:
                found += [(where, literal.partition("=")[0]) for literal in gen.get("literals", [])]
                assert not gen.get("envs") and not gen.get("files"), f"{where}: use literals"
            if doc.get("kind") in ("Deployment", "Job"):
                found += [(where, e["name"]) for e in the_container(doc).get("env", [])]
    return found


# ---- tests --------------------------------------------------------------------------------------

def test_every_manifest_parses() -> None:
    files = yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = docs_in(path)
        assert docs, f"{path}: no documents"
        for doc in docs:
            if isinstance(doc, list):  # JSON 6902 patch
                assert all({"op", "path"} <= set(op) for op in doc), path
            else:
                assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"


def test_every_kustomization_reference_exists() -> None:
    assert set(kustomizations()) == {BASE, *(K8S / "overlays" / o for o in OVERLAYS)}
    for folder, kust in kustomizations().items():
        for ref in kust.get("resources", []):
            target = (folder / ref).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{folder}: {ref}"
        for patch in kust.get("patches", []):
            assert "path" in patch and (folder / patch["path"]).is_file(), f"{folder}: {patch}"
        for old in ("patchesStrategicMerge", "patchesJson6902", "bases", "vars"):
            assert old not in kust, f"{folder}: {old} is deprecated in Kustomize v5"


def test_base_lists_every_manifest_except_the_secret_example() -> None:
    listed = set(kustomizations()[BASE]["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert "secret.example.yaml" not in listed, "the example Secret must never be applied"
    assert listed == on_disk - {"secret.example.yaml"}


def test_port_table_is_the_runtimes() -> None:
    assert PORTS == DEFAULT_METRICS_PORTS


def test_every_service_has_exactly_one_deployment_in_the_base() -> None:
    counts = Counter(service_of(d) for d in base_objects("Deployment"))
    assert counts == Counter(list(PORTS))
    for service, deployment in deployments().items():
        assert (BASE / f"{service}.yaml").is_file()
        assert deployment["metadata"]["name"] == service


@pytest.mark.parametrize("service", list(PORTS))
def test_deployment_serves_metrics_and_health_on_its_port(service: str) -> None:
    deployment = deployments()[service]
    pod = deployment["spec"]["template"]
    container = the_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": PORTS[service], **EXTRA_PORTS.get(service, {})}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("CARELAKE_METRICS_PORT") == str(PORTS[service])
    assert "CARELAKE_INSTANCE_ID" not in env, "a Deployment's pod name is no stable member id"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"] == {"path": "/healthz", "port": "metrics"}, kind
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORTS[service])


@pytest.mark.parametrize("service", list(PORTS))
def test_deployment_runs_the_image_safely(service: str) -> None:
    deployment = deployments()[service]
    labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "carelake"}
    pod = deployment["spec"]["template"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    assert "app.kubernetes.io/component" in pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    spec = pod["spec"]
    container = the_container(deployment)
    assert container["image"] == "carelake:latest"
    assert spec["terminationGracePeriodSeconds"] == 45
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
    refs = {(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()}
    assert refs == {("configMapRef", "carelake-config"), ("secretRef", "carelake-secrets")}
    assert {"requests", "limits"} <= set(container["resources"])


@pytest.mark.parametrize("service", list(PORTS))
def test_headless_service_exposes_the_ports(service: str) -> None:
    [svc] = [s for s in base_objects("Service") if s["metadata"]["name"] == service]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == deployments()[service]["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    expected = {"metrics": PORTS[service], **EXTRA_PORTS.get(service, {})}
    assert ports == {name: (port, name) for name, port in expected.items()}


def test_topics_job_creates_the_topics() -> None:
    [job] = base_objects("Job")
    container = the_container(job)
    assert container["args"] == ["topics", "create"]
    assert container["image"] == "carelake:latest"
    assert {"configMapRef": {"name": "carelake-config"}} in container["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_every_environment_variable_is_a_real_setting() -> None:
    found = env_names()
    assert len(found) > 10
    unknown = [(where, name) for where, name in found if name not in SETTINGS]
    assert not unknown, f"not a field of carelake.config.Settings: {unknown}"


def test_secrets_stay_out_of_configmaps() -> None:
    assert SECRET_SETTINGS == {"CARELAKE_PG_DSN", "CARELAKE_REDIS_URL", "CARELAKE_S3_ACCESS_KEY_ID",
                               "CARELAKE_S3_SECRET_ACCESS_KEY", "CARELAKE_API_KEY_HASHES",
                               "CARELAKE_MPI_API_KEY_HASHES"}
    [example] = docs_in(BASE / "secret.example.yaml")
    assert example["kind"] == "Secret" and example["metadata"]["name"] == "carelake-secrets"
    assert set(example["stringData"]) == SECRET_SETTINGS
    for path in yaml_files():
        for doc in docs_in(path):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                assert not SECRET_SETTINGS & set(doc.get("data") or {}), path


def test_overlays_pin_their_image_and_name_real_deployments() -> None:
    tags = {}
    for overlay in OVERLAYS:
        kust = kustomizations()[K8S / "overlays" / overlay]
        assert kust["resources"] == ["../../base"]
        assert kust["namespace"] == OVERLAYS[overlay]
        [image] = kust["images"]
        assert image["name"] == "carelake"
        tags[overlay] = str(image["newTag"])
        assert {r["name"] for r in kust["replicas"]} <= set(PORTS), overlay
    assert tags["local"] == "dev"
    assert tags["production"] not in ("latest", "dev")
    production = kustomizations()[K8S / "overlays" / "production"]["replicas"]
    assert {r["name"]: r["count"] for r in production} == {
        "ingest-gateway": 2, "normalizer": 3, "dedup-mpi": 2, "quality-monitor": 1,
        "feature-store": 2, "scorer": 1, "lake-writer": 2,
    }


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_overlay_renders_with_kustomize(overlay: str) -> None:
    kust = kustomizations()[K8S / "overlays" / overlay]
    proc = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    objects = load_yaml(proc.stdout)
    assert Counter(o["kind"] for o in objects)["Deployment"] == len(PORTS)
    replicas = {r["name"]: r["count"] for r in kust["replicas"]}
    image = kust["images"][0]
    for obj in objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == OVERLAYS[overlay]
            continue
        assert obj["metadata"]["namespace"] == OVERLAYS[overlay], obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "Job"):
            name = image.get("newName", "carelake")
            assert the_container(obj)["image"] == f"{name}:{image['newTag']}"
        if obj["kind"] == "Deployment":
            assert obj["spec"]["replicas"] == replicas.get(obj["metadata"]["name"], 1)
