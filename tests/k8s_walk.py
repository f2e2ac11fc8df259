"""Walking rendered manifests: Ray cluster specs, every pod template with its role, containers, mounts,
resources.

    for where, role, template in pod_templates(docs): ...   # role: head|worker|submitter|deployment
"""
from __future__ import annotations

from typing import Any, Iterator


def ray_cluster_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "RayCluster":
            yield f"RayCluster/{d['metadata']['name']}", d["spec"]
        elif d["kind"] == "RayJob":
            yield f"RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"]
        elif d["kind"] == "RayService":
            yield f"RayService/{d['metadata']['name']}", d["spec"]["rayClusterConfig"]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, role, template) of every pod the manifests create; role: head|worker|submitter|deployment."""
    for d in docs:
        if d["kind"] == "Deployment":
            yield f"Deployment/{d['metadata']['name']}", "deployment", d["spec"]["template"]
        if d["kind"] == "RayJob" and d["spec"].get("submitterPodTemplate"):
            yield f"RayJob/{d['metadata']['name']}/submitter", "submitter", d["spec"]["submitterPodTemplate"]
    for where, spec in ray_cluster_specs(docs):
        yield f"{where}/head", "head", spec["headGroupSpec"]["template"]
        for g in spec.get("workerGroupSpecs", []):
            yield f"{where}/{g['groupName']}", "worker", g["template"]


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def mounts_by_path(template: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) for one container of a pod template."""
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    return {m["mountPath"]: (m, volumes.get(m["name"], {})) for m in container.get("volumeMounts", [])}


def gpus(container: dict[str, Any]) -> int:
    return int((container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


def cpus(container: dict[str, Any]) -> float:
    value = str((container.get("resources", {}).get("limits") or {}).get("cpu", "0"))
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)
