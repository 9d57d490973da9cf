"""The cluster files in bertflow/infra/deploy agree with the recipe they ship for: the KubeRay
worker group holds every Ray step of workflows.yaml's `bert-base`, and the two images
carry the same Beam (Dataflow runs a job only on workers of the SDK that submitted it)."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bertflow.infra.spec import load

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "bertflow" / "infra" / "deploy"


def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "raycluster.yaml").read_text()) if doc}


def quantity(value) -> float:
    """A Kubernetes CPU quantity: "8", "500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_the_gpu_worker_group_holds_every_ray_step_of_the_recipe():
    cluster = manifests()["RayCluster"]["spec"]
    (group,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    # What Ray sees in a pod: its start parameters when given, else the container's limits.
    pod_cpus = quantity(group["rayStartParams"].get("num-cpus", limits["cpu"]))
    pod_gpus = quantity(group["rayStartParams"].get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    assert pod_cpus <= quantity(limits["cpu"]) and pod_gpus <= quantity(limits["nvidia.com/gpu"])

    wf = load(ROOT / "workflows.yaml").workflow("bert-base")
    ray_steps = {name: s.resources for name, s in wf.steps.items() if s.kind in ("pretrain", "finetune")}
    assert set(ray_steps) == {"phase1", "phase2", "finetune"}
    for name, r in ray_steps.items():
        # A worker is one Ray actor: it fits in one pod, and the pods the group may grow to hold them all.
        per_pod = min(math.floor(pod_cpus / r.cpus_per_worker),
                      math.floor(pod_gpus / r.gpus_per_worker) if r.gpus_per_worker else math.inf)
        assert per_pod >= 1, f"{name}: a worker ({r.cpus_per_worker} CPUs, {r.gpus_per_worker} GPUs) fits no pod"
        pods = math.ceil(r.workers / per_pod)
        assert pods <= group["maxReplicas"], (
            f"{name}: {r.workers} workers x ({r.cpus_per_worker} CPUs, {r.gpus_per_worker} GPUs) need {pods} pods "
            f"of ({pod_cpus} CPUs, {pod_gpus} GPUs); the group has at most {group['maxReplicas']}")
    assert ray_steps["phase1"].workers == group["maxReplicas"] * pod_gpus  # every GPU of the full group trains


def test_the_pods_have_shared_memory_bucket_credentials_autoscaling_and_token_auth():
    docs = manifests()
    cluster = docs["RayCluster"]["spec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    account = docs["ServiceAccount"]["metadata"]
    assert "iam.gke.io/gcp-service-account" in account["annotations"]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == account["name"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
        assert any(e["secretRef"].get("optional") for e in container["envFrom"])
        assert container["image"] == "REGISTRY/bertflow:0.1"  # the Dockerfile's tag
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert cluster["authOptions"]["mode"] == "token"


def test_the_images_carry_the_same_beam_python_and_ray_and_every_package():
    ray_image = (DEPLOY / "Dockerfile").read_text()
    beam_image = (DEPLOY / "Dockerfile.dataflow").read_text()
    beam = {name: re.search(r"ARG BEAM_VERSION=(\S+)", text).group(1)
            for name, text in (("ray", ray_image), ("dataflow", beam_image))}
    assert beam["ray"] == beam["dataflow"], beam
    assert 'apache-beam[gcp]==${BEAM_VERSION}' in ray_image
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in beam_image
    ray_version, minor = re.search(r"FROM rayproject/ray:([\d.]+)-py3(\d+)", ray_image).groups()
    assert f"FROM apache/beam_python3.{minor}_sdk:" in beam_image  # one Python on both sides
    assert manifests()["RayCluster"]["spec"]["rayVersion"] == ray_version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {re.match(r"[A-Za-z0-9_.-]+", d).group(0): d for d in project["dependencies"]}
    for name, version in (("apache-beam", beam["ray"]), ("ray", ray_version)):
        spec = SpecifierSet(re.sub(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?", "", pins[name]).split(";")[0])
        assert Version(version) in spec, f"the images' {name} {version} is outside pyproject's {pins[name]}"

    # Every folder the wheel's packages come from (bertflow/, and data/ for bertflow.sample_data)
    # is copied into both images.
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {setup.get("package-dir", {}).get(p, p.replace(".", "/")).split("/")[0] for p in setup["packages"]}
    assert folders == {"bertflow", "data"}, folders
    for folder in folders:
        for name, text in (("Dockerfile", ray_image), ("Dockerfile.dataflow", beam_image)):
            assert f"COPY {folder} ./{folder}" in text, f"{name} does not copy {folder}/"
