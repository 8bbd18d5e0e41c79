"""Conformance: the examples of the Kubernetes NetworkPolicy documentation.

kubernetes.io/docs/concepts/services-networking/network-policies: the
`test-network-policy` example, AND vs OR of from-selectors, the default
policies, endPort ranges and namespaces targeted by label or by name.
Each row is (source, destination, port, protocol, expected verdict).
"""
from __future__ import annotations

import pytest

from agent.judges.netpol import NetpolEngine
from agent.model import ALLOW, DENY

TEST_NETWORK_POLICY = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{
        "from": [
            {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
            {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
            {"podSelector": {"matchLabels": {"role": "frontend"}}}],
        "ports": [{"protocol": "TCP", "port": 6379}]}],
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}],
}
AND_SELECTORS = {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"user": "alice"}}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}
OR_SELECTORS = {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"user": "alice"}}}, {"podSelector": {"matchLabels": {"role": "client"}}}]}]}
PORT_RANGE = {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"], "egress": [
    {"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]}
NOT_IN_NAMESPACES = {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"], "ingress": [
    {"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "namespace", "operator": "NotIn", "values": ["delta", "kube-system"]}]}}]}]}
BY_NAME = {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [
    {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "myproject"}}}]}]}
DEFAULT_DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}]}
DEFAULT_DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}
ALLOW_ALL_EGRESS = {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}
DEFAULT_DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

DB, FRONT, OTHER = "default/db", "default/frontend", "default/other"
MYPROJ, ALICE_CLIENT, ALICE_SERVER, DELTA = "myproject/app", "alice/client", "alice/server", "delta/app"

CASES = [
    (TEST_NETWORK_POLICY, [
        ("172.17.0.5", DB, 6379, "TCP", ALLOW),
        ("172.17.1.5", DB, 6379, "TCP", DENY),
        ("172.18.0.5", DB, 6379, "TCP", DENY),
        (MYPROJ, DB, 6379, "TCP", ALLOW),
        (FRONT, DB, 6379, "TCP", ALLOW),
        (OTHER, DB, 6379, "TCP", DENY),
        (FRONT, DB, 6380, "TCP", DENY),
        (FRONT, DB, 6379, "UDP", DENY),
        (DB, "10.0.0.7", 5978, "TCP", ALLOW),
        (DB, "10.0.1.7", 5978, "TCP", DENY),
        (DB, "10.0.0.7", 5979, "TCP", DENY),
        (DB, FRONT, 80, "TCP", DENY),
        (OTHER, FRONT, 80, "TCP", ALLOW)]),
    (AND_SELECTORS, [
        (ALICE_CLIENT, DB, 5432, "TCP", ALLOW),
        (ALICE_SERVER, DB, 5432, "TCP", DENY),
        ("default/client", DB, 5432, "TCP", DENY)]),
    (OR_SELECTORS, [
        (ALICE_CLIENT, DB, 5432, "TCP", ALLOW),
        (ALICE_SERVER, DB, 5432, "TCP", ALLOW),
        ("default/client", DB, 5432, "TCP", ALLOW),
        (MYPROJ, DB, 5432, "TCP", DENY)]),
    (PORT_RANGE, [
        (DB, "10.0.0.9", 32000, "TCP", ALLOW),
        (DB, "10.0.0.9", 32768, "TCP", ALLOW),
        (DB, "10.0.0.9", 32769, "TCP", DENY),
        (DB, "10.0.0.9", 31999, "TCP", DENY),
        (DB, "10.0.0.9", 32100, "UDP", DENY)]),
    (NOT_IN_NAMESPACES, [
        (MYPROJ, DB, 1, "TCP", ALLOW),  # no "namespace" label at all: NotIn matches
        (DELTA, DB, 1, "TCP", DENY),
        (FRONT, DB, 1, "TCP", ALLOW)]),
    (BY_NAME, [(MYPROJ, DB, 1, "TCP", ALLOW), (ALICE_CLIENT, DB, 1, "TCP", DENY)]),
    (DEFAULT_DENY_INGRESS, [
        (MYPROJ, DB, 80, "TCP", DENY), (FRONT, DB, 80, "TCP", DENY), (DB, MYPROJ, 80, "TCP", ALLOW)]),
    (ALLOW_ALL_INGRESS, [(MYPROJ, DB, 80, "TCP", ALLOW), ("8.8.8.8", DB, 80, "TCP", ALLOW)]),
    (DEFAULT_DENY_EGRESS, [
        (DB, "8.8.8.8", 53, "UDP", DENY), (DB, MYPROJ, 80, "TCP", DENY), (MYPROJ, DB, 80, "TCP", ALLOW)]),
    (ALLOW_ALL_EGRESS, [(DB, "8.8.8.8", 53, "UDP", ALLOW), (DB, MYPROJ, 80, "SCTP", ALLOW)]),
    (DEFAULT_DENY_ALL, [
        (DB, FRONT, 80, "TCP", DENY), (MYPROJ, DB, 80, "TCP", DENY), ("8.8.8.8", DB, 80, "TCP", DENY),
        (MYPROJ, ALICE_CLIENT, 80, "TCP", ALLOW)]),
]


@pytest.fixture
def docs(view):
    view.add_namespace("default")
    view.add_namespace("myproject", project="myproject")
    view.add_namespace("alice", user="alice")
    view.add_namespace("delta", namespace="delta")
    for i, (ref, labels) in enumerate([
            (DB, {"role": "db"}), (FRONT, {"role": "frontend"}), (OTHER, {}),
            ("default/client", {"role": "client"}), (MYPROJ, {}), (ALICE_CLIENT, {"role": "client"}),
            (ALICE_SERVER, {"role": "server"}), (DELTA, {})]):
        view.new_pod(ref, f"10.244.0.{i + 10}", labels=labels)
    return view


@pytest.mark.parametrize("spec,rows", [pytest.param(s, r, id=f"example-{i}") for i, (s, r) in enumerate(CASES)])
def test_documentation_example_gives_the_documented_verdicts(docs, spec, rows):
    docs.policy("default/example", spec)
    engine = NetpolEngine(docs)
    got = [(s, d, port, proto, engine.decide(docs.ep(s), docs.ep(d), port, proto).verdict)
           for s, d, port, proto, _ in rows]
    assert got == rows
