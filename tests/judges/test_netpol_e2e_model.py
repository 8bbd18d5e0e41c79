"""Conformance: the upstream e2e network policy model (test/e2e/network/netpol).

Each case installs policies into the x/y/z × a/b/c model and states, as a
predicate over (source, destination), which of the 81 pairs may talk on a
given port/protocol; every pair is checked. Pods always reach themselves
(the e2e truth table's AllowLoopback).
"""
from __future__ import annotations

from collections import namedtuple

import pytest

from agent.judges.netpol import NetpolEngine
from agent.model import ALLOW, DENY

P = namedtuple("P", "ns pod")
ALL = [P(ns, pod) for ns in "xyz" for pod in "abc"]


def e2e_ip(ns, pod):
    """Pod IPs of the model, as the `e2e` fixture assigns them."""
    return f"192.168.{'xyz'.index(ns) + 1}.{'abc'.index(pod) + 10}"
XA = P("x", "a")


def pod_sel(**labels):
    return {"matchLabels": labels}


def ns_sel(**labels):
    return {"matchLabels": labels}


def into_xa_only_from(ok):
    """Ingress of x/a is limited to sources satisfying `ok`; all else open."""
    return lambda s, d: d != XA or ok(s)


def ingress_only(target, peers=None, ports=None):
    rule = {}
    if peers is not None:
        rule["from"] = peers
    if ports is not None:
        rule["ports"] = ports
    return {"podSelector": target, "policyTypes": ["Ingress"], "ingress": [rule]}


def egress_only(target, peers=None, ports=None):
    rule = {}
    if peers is not None:
        rule["to"] = peers
    if ports is not None:
        rule["ports"] = ports
    return {"podSelector": target, "policyTypes": ["Egress"], "egress": [rule]}


XA_SEL = pod_sel(pod="a")

CASES = [
    ("default-deny-ingress",
     [("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
     [(80, "TCP", lambda s, d: d.ns != "x"), (81, "UDP", lambda s, d: d.ns != "x")]),
    ("default-deny-ingress without policyTypes",
     [("x/deny", {"podSelector": {}})],
     [(80, "TCP", lambda s, d: d.ns != "x")]),
    ("default-deny-all",
     [("x/deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
     [(80, "TCP", lambda s, d: s.ns != "x" and d.ns != "x"),
      (81, "SCTP", lambda s, d: s.ns != "x" and d.ns != "x")]),
    ("allow-all ingress",
     [("x/allow-all", {"podSelector": {}, "ingress": [{}]})],
     [(80, "TCP", lambda s, d: True)]),
    ("ingress from pods within server namespace by podSelector",
     [("x/p", ingress_only(XA_SEL, [{"podSelector": pod_sel(pod="b")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s == P("x", "b")))]),
    ("ingress from pods in all namespaces",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": {}}]))],
     [(80, "TCP", lambda s, d: True)]),
    ("ingress only from a different namespace by namespaceSelector",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("podSelector with matchExpressions",
     [("x/p", ingress_only(XA_SEL, [{"podSelector": {"matchExpressions": [
         {"key": "pod", "operator": "In", "values": ["b"]}]}}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s == P("x", "b")))]),
    ("namespaceSelector with matchExpressions",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": {"matchExpressions": [
         {"key": "ns", "operator": "In", "values": ["y"]}]}}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("podSelector OR namespaceSelector (separate peers)",
     [("x/p", ingress_only(XA_SEL, [
         {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}},
         {"podSelector": pod_sel(pod="b")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns != "x" or s.pod == "b"))]),
    ("podSelector AND namespaceSelector (one peer)",
     [("x/p", ingress_only(XA_SEL, [{
         "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
         "podSelector": pod_sel(pod="b")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns != "x" and s.pod == "b"))]),
    ("multiple podSelectors and namespaceSelectors",
     [("x/p", ingress_only(XA_SEL, [{
         "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
         "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns != "x" and s.pod in "bc"))]),
    ("any of several podSelectors",
     [("x/p", ingress_only(XA_SEL, [{"podSelector": pod_sel(pod="b")}, {"podSelector": pod_sel(pod="c")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "x" and s.pod in "bc"))]),
    ("a pod in a different namespace by podSelector AND namespaceSelector",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y"), "podSelector": pod_sel(pod="a")}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s == P("y", "a")))]),
    ("namespaceSelector using the default kubernetes.io/metadata.name label",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("egress namespaceSelector NotIn the default namespace label",
     [("x/p", egress_only(XA_SEL, [{"namespaceSelector": {"matchExpressions": [
         {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["y"]}]}}]))],
     [(80, "TCP", lambda s, d: s != XA or d.ns != "y")]),
    ("ingress on ports",
     [("x/p", ingress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y")}], [{"port": 81, "protocol": "TCP"}]))],
     [(80, "TCP", into_xa_only_from(lambda s: False)),
      (81, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("stacked policies with overlapping podSelectors are a union",
     [("x/p80", ingress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y")}], [{"port": 80}])),
      ("x/p81", ingress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y")}], [{"port": 81}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "y")),
      (81, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("ingress on one named port",
     [("x/p", ingress_only(XA_SEL, None, [{"port": "serve-81-tcp"}]))],
     [(81, "TCP", lambda s, d: True), (80, "TCP", into_xa_only_from(lambda s: False))]),
    ("ingress from a namespace on one named port",
     [("x/p", ingress_only({}, [{"namespaceSelector": ns_sel(ns="y")}], [{"port": "serve-80-tcp"}]))],
     [(80, "TCP", lambda s, d: d.ns != "x" or s.ns == "y"),
      (81, "TCP", lambda s, d: d.ns != "x")]),
    ("egress on one named port",
     [("x/p", egress_only(XA_SEL, None, [{"port": "serve-80-tcp"}]))],
     [(80, "TCP", lambda s, d: True), (81, "TCP", lambda s, d: s != XA)]),
    ("a named port needs the matching protocol too",
     [("x/p", ingress_only(XA_SEL, None, [{"port": "serve-80-udp"}]))],
     [(80, "TCP", into_xa_only_from(lambda s: False)), (80, "UDP", into_xa_only_from(lambda s: False))]),
    ("a named port with its protocol",
     [("x/p", ingress_only(XA_SEL, None, [{"port": "serve-80-udp", "protocol": "UDP"}]))],
     [(80, "UDP", lambda s, d: True), (80, "TCP", into_xa_only_from(lambda s: False))]),
    ("a named port the destination does not define matches nothing",
     [("x/p", ingress_only(XA_SEL, None, [{"port": "serve-99-tcp"}]))],
     [(80, "TCP", into_xa_only_from(lambda s: False))]),
    ("deny ingress from pods of other namespaces",
     [("x/p", ingress_only({}, [{"podSelector": {}}]))],
     [(80, "TCP", lambda s, d: d.ns != "x" or s.ns == "x")]),
    ("deny egress of a pod by podSelector",
     [("x/p", {"podSelector": XA_SEL, "policyTypes": ["Egress"]})],
     [(80, "TCP", lambda s, d: s != XA)]),
    ("deny egress from all pods of a namespace",
     [("x/p", {"podSelector": {}, "policyTypes": ["Egress"]})],
     [(80, "TCP", lambda s, d: s.ns != "x")]),
    ("ingress and egress specified together",
     [("x/p", {"podSelector": XA_SEL, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": pod_sel(pod="b")}]}],
               "egress": [{"to": [{"podSelector": pod_sel(pod="c")}]}]})],
     [(80, "TCP", lambda s, d: (d != XA or s == P("x", "b")) and (s != XA or d == P("x", "c")))]),
    ("egress denied on the client side even if the server allows it",
     [("x/deny-egress", {"podSelector": XA_SEL, "policyTypes": ["Egress"]}),
      ("y/allow-all", {"podSelector": {}, "ingress": [{}]})],
     [(80, "TCP", lambda s, d: s != XA)]),
    ("egress to a server in another namespace by podSelector AND namespaceSelector",
     [("x/p", egress_only(XA_SEL, [{"namespaceSelector": ns_sel(ns="y"), "podSelector": pod_sel(pod="a")}]))],
     [(80, "TCP", lambda s, d: s != XA or d == P("y", "a"))]),
    ("ingress on any port of one protocol",
     [("x/p", ingress_only(XA_SEL, None, [{"protocol": "TCP"}]))],
     [(80, "TCP", lambda s, d: True), (81, "TCP", lambda s, d: True),
      (80, "UDP", into_xa_only_from(lambda s: False))]),
    ("a port without protocol is TCP",
     [("x/p", ingress_only(XA_SEL, None, [{"port": 81}]))],
     [(81, "TCP", lambda s, d: True), (81, "UDP", into_xa_only_from(lambda s: False)),
      (81, "SCTP", into_xa_only_from(lambda s: False))]),
    ("multiple ingress policies with allow-all taking precedence",
     [("x/p80", ingress_only(XA_SEL, None, [{"port": 80}])), ("x/all", ingress_only(XA_SEL))],
     [(81, "TCP", lambda s, d: True)]),
    ("multiple egress policies with allow-all taking precedence",
     [("x/p80", egress_only(XA_SEL, None, [{"port": 80}])), ("x/all", egress_only(XA_SEL))],
     [(81, "TCP", lambda s, d: True)]),
    ("egress to a server in a CIDR block",
     [("x/p", egress_only(XA_SEL, [{"ipBlock": {"cidr": e2e_ip("y", "b") + "/32"}}]))],
     [(80, "TCP", lambda s, d: s != XA or d == P("y", "b"))]),
    ("except clause of an egress CIDR block",
     [("x/p", egress_only(XA_SEL, [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [e2e_ip("y", "b") + "/32"]}}]))],
     [(80, "TCP", lambda s, d: s != XA or d != P("y", "b"))]),
    ("an IP in both a CIDR's except and another policy's CIDR is allowed",
     [("x/p1", egress_only(XA_SEL, [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [e2e_ip("y", "b") + "/32"]}}])),
      ("x/p2", egress_only(XA_SEL, [{"ipBlock": {"cidr": e2e_ip("y", "b") + "/32"}}]))],
     [(80, "TCP", lambda s, d: True)]),
    ("ingress from a CIDR block of pod IPs",
     [("x/p", ingress_only(XA_SEL, [{"ipBlock": {"cidr": "192.168.2.0/24"}}]))],
     [(80, "TCP", into_xa_only_from(lambda s: s.ns == "y"))]),
    ("SCTP is not TCP",
     [("x/p", ingress_only(XA_SEL, None, [{"port": 81, "protocol": "SCTP"}]))],
     [(81, "TCP", into_xa_only_from(lambda s: False)), (81, "SCTP", lambda s, d: True)]),
    ("UDP only does not allow TCP",
     [("x/p", ingress_only(XA_SEL, None, [{"port": 81, "protocol": "UDP"}]))],
     [(81, "TCP", into_xa_only_from(lambda s: False)), (81, "UDP", lambda s, d: True)]),
    ("a range of ports with endPort",
     [("x/p", ingress_only(XA_SEL, None, [{"port": 80, "endPort": 81}]))],
     [(80, "TCP", lambda s, d: True), (81, "TCP", lambda s, d: True),
      (81, "UDP", into_xa_only_from(lambda s: False))]),
    ("endPort range excluding the port",
     [("x/p", ingress_only(XA_SEL, None, [{"port": 81, "endPort": 90, "protocol": "UDP"}]))],
     [(80, "UDP", into_xa_only_from(lambda s: False)), (81, "UDP", lambda s, d: True)]),
    ("policies of one namespace never select pods of another",
     [("y/deny", {"podSelector": XA_SEL, "policyTypes": ["Ingress", "Egress"]})],
     [(80, "TCP", lambda s, d: P("y", "a") not in (s, d))]),
    ("egress present without policyTypes makes the policy Ingress and Egress",
     [("x/p", {"podSelector": XA_SEL, "egress": [{"to": [{"podSelector": pod_sel(pod="b")}]}]})],
     [(80, "TCP", lambda s, d: d != XA and (s != XA or d == P("x", "b")))]),
    ("an empty egress list without policyTypes does not isolate egress",
     [("x/p", {"podSelector": XA_SEL, "egress": []})],
     [(80, "TCP", lambda s, d: d != XA)]),
    ("an empty from list matches every peer",
     [("x/p", {"podSelector": XA_SEL, "ingress": [{"from": [], "ports": []}]})],
     [(80, "TCP", lambda s, d: True)]),
]


@pytest.mark.parametrize("policies,probes", [pytest.param(p, q, id=n) for n, p, q in CASES])
def test_e2e_model_case_matches_the_truth_table(e2e, policies, probes):
    view = e2e
    for ref, spec in policies:
        view.policy(ref, spec)
    engine = NetpolEngine(view)
    wrong = []
    for port, proto, allowed in probes:
        for s in ALL:
            for d in ALL:
                want = ALLOW if (s == d or allowed(s, d)) else DENY
                got = engine.decide(view.ep(f"{s.ns}/{s.pod}"), view.ep(f"{d.ns}/{d.pod}"), port, proto)
                if got.verdict != want:
                    wrong.append(f"{s.ns}/{s.pod} -> {d.ns}/{d.pod} {port}/{proto}: {got.verdict} "
                                 f"(want {want}) {got.reasons}")
    assert wrong == []


def test_updated_policy_is_enforced_after_on_change(e2e):
    old = e2e.policy("x/p", ingress_only(XA_SEL, [{"podSelector": pod_sel(pod="b")}]))
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    new = e2e.policy("x/p", ingress_only(XA_SEL, [{"podSelector": pod_sel(pod="c")}]))
    engine.on_change("NetworkPolicy", old, new)
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW
    assert engine.decide(e2e.ep("x/b"), e2e.ep("x/a"), 80, "TCP").verdict == DENY


def test_policies_stop_being_enforced_after_deletion(e2e):
    old = e2e.policy("x/deny", {"podSelector": {}})
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    del e2e.netpols[("x", "deny")]
    engine.on_change("NetworkPolicy", old, None)
    assert engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW


def test_model_ips_agree_with_the_fixture(e2e):
    assert [e2e.pod(f"{p.ns}/{p.pod}").ips[0] for p in ALL] == [e2e_ip(*p) for p in ALL]
