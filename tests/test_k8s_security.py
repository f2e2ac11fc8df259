"""Security properties of the k8s/ manifests: Ray token auth everywhere, nothing exposed outside the cluster,
NetworkPolicies that admit only this deployment's pods, locked-down containers, no API credentials.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_k8s_security.py
"""
from __future__ import annotations

import pytest

from k8s_helpers import (containers, ingress_allowed, kustomizations, mounts_by_path, pod_templates,
                         ray_cluster_specs, render)

pytestmark = pytest.mark.k8s

SERVICE_ACCOUNT = "c3dhash"
AUTOSCALER_ACCOUNT = "c3dhash-autoscaler"  # Ray heads with the in-tree autoscaler (its sidecar patches pods)
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
RAY_USER = 1000  # the rayproject/ray image's `ray` user


@pytest.fixture(scope="module")
def every() -> list[dict]:
    return [doc for d in kustomizations() for doc in render(d)]


def labels_of(every: list[dict], role: str) -> dict[str, str]:
    """Pod labels of one role (head|worker|submitter) as KubeRay creates them: ours plus its ray.io/* ones."""
    found = [t["metadata"]["labels"] for _, r, t in pod_templates(every) if r == role]
    assert found and all(f == found[0] for f in found), f"{role} pods carry different labels: {found}"
    return {**found[0], "ray.io/node-type": role, "app.kubernetes.io/created-by": "kuberay-operator"}


def test_token_auth_on_every_ray_cluster(every):
    specs = list(ray_cluster_specs(every))
    assert {w.split("/")[0] for w, _ in specs} == {"RayJob", "RayCluster", "RayService"}
    for where, spec in specs:
        assert spec.get("authOptions") == {"mode": "token"}, f"{where}: set authOptions: {{mode: token}}"
        as_cluster = {"kind": "RayCluster", "metadata": {"name": where}, "spec": spec}
        for _, _, template in pod_templates([as_cluster]):
            for c in containers(template):
                # an explicit RAY_AUTH_MODE would override what the operator injects
                assert not [e for e in c.get("env", []) if e["name"].startswith("RAY_AUTH")], where


def test_nothing_is_exposed_outside_the_cluster(every):
    kinds = {d["kind"] for d in every}
    assert not kinds & {"Ingress", "Gateway", "HTTPRoute", "Route"}
    for svc in (d for d in every if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        assert svc["spec"]["type"] == "ClusterIP" and not svc["spec"].get("externalIPs"), name
    for where, spec in ray_cluster_specs(every):
        head = spec["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress"), where
        assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP", where
    for where, _, template in pod_templates(every):
        spec = template["spec"]
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), where
        assert not [p for c in containers(template) for p in c.get("ports", []) if "hostPort" in p], where


def test_containers_are_locked_down(every):
    templates = list(pod_templates(every))
    assert {role for _, role, _ in templates} == {"head", "worker", "submitter", "deployment"}
    for where, _, template in templates:
        spec = template["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == RAY_USER, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["serviceAccountName"] in (SERVICE_ACCOUNT, AUTOSCALER_ACCOUNT), where
        assert spec["automountServiceAccountToken"] is False, where
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], where
        for c in containers(template):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{where}/{c['name']}"
            assert not sc.get("privileged"), f"{where}/{c['name']}"
            assert sc["capabilities"] == {"drop": ["ALL"]}, f"{where}/{c['name']}"
            assert sc.get("runAsUser", RAY_USER) != 0, f"{where}/{c['name']}"


def token_volumes(template: dict) -> list[str]:
    return [v["name"] for v in template["spec"].get("volumes", [])
            if any("serviceAccountToken" in src for src in (v.get("projected") or {}).get("sources", []))]


def test_service_accounts_carry_no_api_credentials(every):
    accounts = {d["metadata"]["name"]: d for d in every if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {SERVICE_ACCOUNT, AUTOSCALER_ACCOUNT}
    assert all(sa["automountServiceAccountToken"] is False for sa in accounts.values())
    granting = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret"}
    assert not {d["kind"] for d in every} & granting


def test_only_the_autoscaler_sidecar_gets_an_api_token(every):
    """KubeRay binds its autoscaler Role to the head's ServiceAccount; the token reaches the sidecar alone."""
    specs = list(ray_cluster_specs(every))
    assert any(spec.get("enableInTreeAutoscaling") for _, spec in specs)
    for where, spec in specs:
        head = spec["headGroupSpec"]["template"]
        for c in containers(head):
            assert not [m for m in c.get("volumeMounts", []) if m["name"] in token_volumes(head)], where
            assert TOKEN_PATH not in {m["mountPath"] for m in c.get("volumeMounts", [])}, where
        for g in spec.get("workerGroupSpecs", []):
            assert g["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT, where
            assert not token_volumes(g["template"]), where
        if not spec.get("enableInTreeAutoscaling"):
            assert head["spec"]["serviceAccountName"] == SERVICE_ACCOUNT and not token_volumes(head), where
            continue
        assert head["spec"]["serviceAccountName"] == AUTOSCALER_ACCOUNT, where
        options = spec["autoscalerOptions"]
        (mount,) = options["volumeMounts"]
        assert mount == {"name": token_volumes(head)[0], "mountPath": TOKEN_PATH, "readOnly": True}, where
        # the operator builds the sidecar from these; Pod Security "restricted" rejects the pod otherwise
        assert options["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert options["resources"]["limits"], where
    for where, role, template in pod_templates(every):
        if role not in ("head",):
            assert not token_volumes(template), where


def test_namespace_enforces_restricted_pod_security(every):
    (ns,) = [d for d in every if d["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_tensorboard_mounts_results_read_only(every):
    (template,) = [t for w, _, t in pod_templates(every) if w == "Deployment/c3dhash-tensorboard"]
    for c in containers(template):
        assert c["securityContext"].get("readOnlyRootFilesystem") is True
        for path, (mount, vol) in mounts_by_path(template, c).items():
            if "persistentVolumeClaim" in vol:
                assert mount.get("readOnly") is True, path
                assert vol["persistentVolumeClaim"].get("readOnly") is True, path


def test_ray_pods_mount_datasets_read_only(every):
    for where, role, template in pod_templates(every):
        if role in ("head", "worker"):
            mount, vol = mounts_by_path(template, template["spec"]["containers"][0])["/data"]
            assert mount.get("readOnly") is True, where
            assert vol["persistentVolumeClaim"].get("readOnly") is True, where


def test_network_policies_use_selectors_only(every):
    policies = [d for d in every if d["kind"] == "NetworkPolicy"]
    assert policies
    for p in policies:
        peers = [peer for rule in p["spec"].get("ingress") or [] for peer in rule.get("from") or [{}]]
        name = p["metadata"]["name"]
        assert peers or p["spec"]["podSelector"] == {}, f"{name}: a rule without `from` admits everyone"
        assert not [peer for peer in peers if "ipBlock" in peer or peer == {}], p["metadata"]["name"]


def test_network_policies_admit_only_this_deployment(every):
    policies = [d for d in every if d["kind"] == "NetworkPolicy"]
    ns = policies[0]["metadata"]["namespace"]
    head, worker, submitter = (labels_of(every, r) for r in ("head", "worker", "submitter"))
    deployments = {w: t["metadata"]["labels"] for w, role, t in pod_templates(every) if role == "deployment"}
    tb, loader = deployments["Deployment/c3dhash-tensorboard"], deployments["Deployment/c3dhash-data"]

    def pod(labels: dict, namespace: str = ns) -> dict:
        return {"labels": labels, "namespace": namespace,
                "namespace_labels": {"kubernetes.io/metadata.name": namespace}}

    operator = pod({"app.kubernetes.io/name": "kuberay-operator"}, "kuberay-system")

    def allowed(dst: dict, src: dict, port: int) -> bool:
        return ingress_allowed(policies, dst_ns=ns, dst_labels=dst, src=src, port=port)

    for port in (6379, 8265, 10001):  # GCS, dashboard / job API, Ray client
        assert allowed(head, pod(worker), port) and allowed(head, pod(submitter), port)
        assert not allowed(head, pod({}), port), "an unlabelled pod of the namespace"
        assert not allowed(head, pod(tb), port) and not allowed(head, pod(loader), port)
        assert not allowed(head, pod(worker, "elsewhere"), port), "the same labels in another namespace"
        assert allowed(head, operator, port) == (port == 8265), "the operator polls the dashboard only"
        assert not allowed(worker, operator, port)
    assert allowed(worker, pod(head), 12345) and not allowed(worker, pod(loader), 12345)
    assert allowed(tb, pod({}), 6006) and allowed(tb, pod(loader), 6006)
    assert not allowed(tb, pod({}, "elsewhere"), 6006) and not allowed(tb, pod({}), 22)
    assert not allowed(submitter, pod(head), 80) and not allowed(loader, pod(head), 80), "default deny"
