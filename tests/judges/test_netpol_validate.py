"""validate_policy: what the API server rejects is rejected, naming object and field."""
from __future__ import annotations

import pytest

from agent.judges.netpol import PolicyError, validate_policy
from agent.model import NetworkPolicy


def policy(spec, name="db/allow-api"):
    ns, n = name.split("/")
    return NetworkPolicy(namespace=ns, name=n, spec=spec)


def ingress_from(peer):
    return {"podSelector": {}, "ingress": [{"from": [peer]}]}


def ingress_ports(*ports):
    return {"podSelector": {}, "ingress": [{"ports": list(ports)}]}


REJECTED = [
    (ingress_from({"ipBlock": {"cidr": "10.0.0.0/33"}}),
     'networkpolicy db/allow-api: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33"'),
    (ingress_from({"ipBlock": {"cidr": "10.0.0.1"}}), "spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR"),
    (ingress_from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
     "spec.ingress[0].from[0].ipBlock.except[0]: '11.0.0.0/16' must be a strict subset"),
    (ingress_from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}),
     "ipBlock.except[0]: '10.0.0.0/8' must be a strict subset"),
    (ingress_from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}), "except[0]"),
    (ingress_from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
     "spec.ingress[0].from[0]: may not specify both ipBlock and another peer"),
    (ingress_from({}), "spec.ingress[0].from[0]: must specify a peer"),
    ({"podSelector": {}, "egress": [{}, {"to": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "Foo"}]}}]}]},
     "spec.egress[1].to[0].podSelector.matchExpressions[0].operator: unsupported operator 'Foo'"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}},
     "spec.podSelector.matchExpressions[0].values: must be specified"),
    (ingress_from({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}),
     "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: may not be specified"),
    (ingress_ports({"port": "a-very-long-port-name"}),
     "spec.ingress[0].ports[0].port: port name 'a-very-long-port-name' must be no more than 15 characters"),
    (ingress_ports({"port": "HTTP"}), "must contain only lowercase"),
    (ingress_ports({"port": "80"}), "must contain at least one letter"),
    (ingress_ports({"port": "a--b"}), "consecutive hyphens"),
    (ingress_ports({"port": "-ab"}), "begin or end with a hyphen"),
    (ingress_ports({"port": 0}), "spec.ingress[0].ports[0].port: 0 must be between 1 and 65535"),
    (ingress_ports({"port": 65536}), "must be between 1 and 65535"),
    (ingress_ports({"port": 80, "protocol": "ICMP"}), "spec.ingress[0].ports[0].protocol: unsupported value 'ICMP'"),
    (ingress_ports({"port": 80, "protocol": "tcp"}), "protocol: unsupported value 'tcp'"),
    (ingress_ports({"port": 90, "endPort": 80}), "endPort: 80 must be greater than or equal to `port` 90"),
    (ingress_ports({"port": "http", "endPort": 80}), "endPort: may not be specified when `port` is non-numeric"),
    (ingress_ports({"endPort": 80}), "endPort: must be defined only if `port` is also defined"),
    (ingress_ports({"port": 80, "endPort": 70000}), "endPort: 70000 must be between 1 and 65535"),
    ({"podSelector": {}, "policyTypes": ["ingress"]}, "spec.policyTypes[0]: unsupported value 'ingress'"),
    ({"podSelector": {"matchLabels": {"bad key!": "x"}}}, "spec.podSelector.matchLabels: invalid label key"),
    ({"podSelector": {}, "ingres": []}, "spec.ingres: unknown field"),
]


@pytest.mark.parametrize("spec,message", REJECTED, ids=[m[:60] for _, m in REJECTED])
def test_a_policy_the_api_server_rejects_is_rejected_with_object_and_field(spec, message):
    with pytest.raises(PolicyError) as caught:
        validate_policy(policy(spec))
    assert str(caught.value).startswith("networkpolicy db/allow-api: ")
    assert message in str(caught.value)


ACCEPTED = [
    {"podSelector": {}},
    {},
    ingress_ports({"port": "serve-80-tcp"}, {"port": 80, "endPort": 90, "protocol": "SCTP"}, {"protocol": "UDP"}, {}),
    ingress_ports({"port": "a" * 15}),
    ingress_from({"ipBlock": {"cidr": "10.0.0.1/8", "except": ["10.1.0.0/16", "10.0.0.0/9"]}}),
    ingress_from({"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8::/33"]}}),
    ingress_from({"podSelector": {}, "namespaceSelector": {"matchExpressions": [
        {"key": "example.com/team", "operator": "DoesNotExist"}]}}),
    {"podSelector": {}, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": [{"to": []}]},
]


@pytest.mark.parametrize("spec", ACCEPTED)
def test_a_policy_the_api_server_accepts_validates(spec):
    validate_policy(policy(spec))
