"""Known answers for the NetworkPolicy evaluator (tests/k8s_netpol.py) that the security tests rely on: each
rule of networking.k8s.io/v1 ingress semantics, on hand-made policies.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_k8s_netpol.py
"""
from __future__ import annotations

import pytest

from k8s_netpol import ingress_allowed, selector_matches

pytestmark = pytest.mark.k8s

NS = "app"
WEB, DB = {"role": "web"}, {"role": "db", "tier": "data"}


def pod(labels: dict, namespace: str = NS, **ns_labels: str) -> dict:
    return {"labels": labels, "namespace": namespace,
            "namespace_labels": {"kubernetes.io/metadata.name": namespace, **ns_labels}}


def policy(selector: dict, ingress: list | None = None, *, namespace: str = NS,
           types: list[str] | None = None) -> dict:
    spec: dict = {"podSelector": selector, "policyTypes": types or ["Ingress"]}
    if ingress is not None:
        spec["ingress"] = ingress
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def allowed(policies: list[dict], src: dict, port: int = 80, dst: dict = DB) -> bool:
    return ingress_allowed(policies, dst_ns=NS, dst_labels=dst, src=src, port=port)


def test_unselected_pods_accept_everything_and_a_rule_less_policy_denies_all():
    assert allowed([], pod(WEB, "other"))
    assert allowed([policy({"matchLabels": WEB})], pod(WEB))  # selects web, not db
    deny = policy({})
    assert not allowed([deny], pod(WEB)) and not allowed([deny], pod(DB))


def test_policies_in_other_namespaces_and_egress_only_policies_do_not_restrict_ingress():
    assert allowed([policy({}, namespace="other")], pod(WEB))
    assert allowed([policy({}, types=["Egress"])], pod(WEB))
    assert not allowed([policy({}, types=["Ingress", "Egress"])], pod(WEB))


def test_a_rule_without_from_admits_every_source_and_without_ports_every_port():
    open_rule = [policy({}, [{}])]
    assert allowed(open_rule, pod({}, "other"), 1) and allowed(open_rule, pod(WEB), 65535)
    assert allowed([policy({}, [{"ports": [{"port": 80}]}])], pod({}, "other"), 80)
    assert not allowed([policy({}, [{"ports": [{"port": 80}]}])], pod({}, "other"), 81)


def test_a_pod_selector_peer_means_pods_of_the_policys_own_namespace():
    rule = [policy({}, [{"from": [{"podSelector": {"matchLabels": WEB}}]}])]
    assert allowed(rule, pod(WEB)) and not allowed(rule, pod(WEB, "other")) and not allowed(rule, pod(DB))
    everyone_here = [policy({}, [{"from": [{"podSelector": {}}]}])]
    assert allowed(everyone_here, pod({})) and not allowed(everyone_here, pod({}, "other"))


def test_namespace_and_pod_selector_in_one_peer_are_anded_in_two_peers_ored():
    ns_sel = {"namespaceSelector": {"matchLabels": {"team": "a"}}}
    pod_sel = {"podSelector": {"matchLabels": WEB}}
    anded = [policy({}, [{"from": [{**ns_sel, **pod_sel}]}])]
    ored = [policy({}, [{"from": [ns_sel, pod_sel]}])]
    web_a, db_a, web_here = pod(WEB, "x", team="a"), pod(DB, "x", team="a"), pod(WEB)
    assert allowed(anded, web_a) and not allowed(anded, db_a) and not allowed(anded, web_here)
    assert allowed(ored, web_a) and allowed(ored, db_a) and allowed(ored, web_here)
    assert not allowed(ored, pod(DB, "y", team="b"))
    assert allowed([policy({}, [{"from": [{"namespaceSelector": {}}]}])], pod({}, "anywhere"))


def test_ports_default_to_tcp_ranges_and_named_ports():
    def rule(*ports):
        return [policy({}, [{"from": [{"podSelector": {}}], "ports": list(ports)}])]
    assert allowed(rule({"port": 80}), pod(WEB), 80) and not allowed(rule({"port": 80}), pod(WEB), 8080)
    assert not allowed(rule({"port": 80, "protocol": "UDP"}), pod(WEB), 80)
    assert allowed(rule({"protocol": "TCP"}), pod(WEB), 12345)  # no port: all of that protocol
    ranged = rule({"port": 6000, "endPort": 6010})
    assert allowed(ranged, pod(WEB), 6000) and allowed(ranged, pod(WEB), 6010)
    assert not allowed(ranged, pod(WEB), 6011)
    assert allowed(rule({"port": 1}, {"port": 2}), pod(WEB), 2)
    with pytest.raises(NotImplementedError, match="named port 'http'"):
        allowed(rule({"port": "http"}), pod(WEB), 80)


def test_policies_are_additive_and_ip_blocks_never_match_pods():
    deny, admit_web = policy({}), policy({"matchLabels": {"role": "db"}}, [{"from": [{"podSelector":
                                                                                     {"matchLabels": WEB}}]}])
    assert allowed([deny, admit_web], pod(WEB)) and not allowed([deny, admit_web], pod(DB))
    assert allowed([admit_web], pod({}, "other"), dst=WEB)  # web is selected by no policy: open
    cidr = [policy({}, [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])]
    assert not allowed(cidr, pod(WEB))


@pytest.mark.parametrize("expr,labels,expected", [
    ({"key": "tier", "operator": "In", "values": ["data", "cache"]}, DB, True),
    ({"key": "tier", "operator": "In", "values": ["cache"]}, DB, False),
    ({"key": "tier", "operator": "In", "values": ["data"]}, WEB, False),
    ({"key": "tier", "operator": "NotIn", "values": ["data"]}, DB, False),
    ({"key": "tier", "operator": "NotIn", "values": ["data"]}, WEB, True),  # absent key: NotIn holds
    ({"key": "tier", "operator": "Exists"}, DB, True),
    ({"key": "tier", "operator": "Exists"}, WEB, False),
    ({"key": "tier", "operator": "DoesNotExist"}, WEB, True),
    ({"key": "tier", "operator": "DoesNotExist"}, DB, False),
])
def test_match_expressions(expr, labels, expected):
    assert selector_matches({"matchExpressions": [expr]}, labels) is expected


def test_selector_terms_are_anded_empty_selects_all_and_none_selects_nothing():
    assert selector_matches({}, {}) and selector_matches({}, DB)
    assert selector_matches(None, DB) is False
    both = {"matchLabels": {"role": "db"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert selector_matches(both, DB) and not selector_matches(both, {"role": "db"})
    assert not selector_matches({"matchLabels": {"role": "db", "tier": "x"}}, DB)
