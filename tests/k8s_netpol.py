"""Kubernetes NetworkPolicy ingress semantics, for pod-to-pod traffic judged by selectors (ipBlock peers
never match: the security tests refuse them).

    ingress_allowed(policies, dst_ns="ns", dst_labels={...}, src=pod, port=6379)
    # src = {"labels": {...}, "namespace": "ns", "namespace_labels": {"kubernetes.io/metadata.name": "ns"}}

Rules implemented (networking.k8s.io/v1): a pod selected by no Ingress policy accepts everything; a pod
selected by at least one accepts only what some rule of one of them admits (policies are additive); a rule
with no `from` admits every source, with no `ports` every port; a peer with only podSelector means pods of
the policy's namespace; namespaceSelector (+ podSelector) means those pods of the selected namespaces; an
empty selector {} selects everything; matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)
are ANDed; a port entry matches TCP by default, every port when it names none, port..endPort for a range;
a named port raises NotImplementedError (resolving it needs the pod's container ports), so a manifest that
uses one fails loudly. tests/test_k8s_netpol.py holds known answers for each rule.
"""
from __future__ import annotations

from typing import Any


def selector_matches(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if sel is None:
        return False
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        values = e.get("values", [])
        ok = {"In": has and value in values, "NotIn": not has or value not in values,
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, src: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic is judged by selectors; ipBlock peers are reported by the tests
    if "namespaceSelector" in peer:
        ns_ok = selector_matches(peer["namespaceSelector"], src["namespace_labels"])
    else:
        ns_ok = src["namespace"] == policy_ns
    pod_ok = selector_matches(peer["podSelector"], src["labels"]) if "podSelector" in peer else True
    return ns_ok and pod_ok


def _port_matches(entry: dict[str, Any], port: int) -> bool:
    if entry.get("protocol", "TCP") != "TCP":
        return False
    first = entry.get("port")
    if first is None:
        return True
    if isinstance(first, str):
        raise NotImplementedError(f"named port {first!r} in a NetworkPolicy: not implemented by k8s_netpol.py")
    return first <= port <= entry.get("endPort", first)


def ingress_allowed(policies: list[dict[str, Any]], *, dst_ns: str, dst_labels: dict[str, str],
                    src: dict[str, Any], port: int) -> bool:
    """Kubernetes semantics: a pod selected by an Ingress policy accepts only what some rule of one admits."""
    selecting = [p for p in policies if p["metadata"].get("namespace") == dst_ns
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(_port_matches(pp, port) for pp in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(peer, p["metadata"]["namespace"], src) for peer in peers):
                return True
    return False
