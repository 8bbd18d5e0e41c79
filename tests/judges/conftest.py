"""An in-memory ClusterView and the upstream e2e network policy model.

`MemoryView` is a test implementation of model.ClusterView (not a patch of
ours): it keeps pods, namespaces, nodes and policies in dicts and answers
`endpoint(ip)` the way the inventory must: a hostNetwork pod is its node, a
pod in phase Succeeded/Failed owns no IP. The e2e model is the one of
kubernetes test/e2e/network/netpol: namespaces x, y, z (label ns=<name>) with
pods a, b, c (label pod=<name>), each serving 80 and 81 on TCP, UDP and SCTP
under the names serve-80-tcp, serve-81-udp, ...
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from agent.judges.netpol import policy_subject
from agent.model import (
    EXTERNAL, NODE, POD, SCTP, TCP, UDP, ContainerPort, Endpoint, Namespace, NetworkPolicy, Node,
    Pod)


@dataclass
class MemoryView:
    pods: dict[str, Pod] = field(default_factory=dict)  # by uid
    ns: dict[str, Namespace] = field(default_factory=dict)
    node_objects: dict[str, Node] = field(default_factory=dict)  # by name
    netpols: dict[tuple[str, str], NetworkPolicy] = field(default_factory=dict)
    synced: bool = True

    def endpoint(self, ip: str, at: float = 0.0) -> Endpoint:
        for node in self.node_objects.values():
            if ip in node.internal_ips:
                return Endpoint(ip=ip, kind=NODE, node=node.name)
        for pod in self.pods.values():
            if ip not in pod.ips or pod.phase in ("Succeeded", "Failed"):
                continue
            if not policy_subject(pod):
                return Endpoint(ip=ip, kind=NODE, node=pod.node)
            return pod_endpoint(pod, ip)
        return Endpoint(ip=ip, kind=EXTERNAL)

    def namespace(self, name: str) -> Namespace | None:
        return self.ns.get(name)

    def namespaces(self):
        return list(self.ns.values())

    def policies(self, namespace: str):
        return [p for (ns, _), p in self.netpols.items() if ns == namespace]

    def services_for_pod(self, uid: str):
        return []

    def nodes(self):
        return list(self.node_objects.values())

    def services(self):
        return []

    def service_backends(self, namespace: str, name: str):
        return []

    # -- helpers for tests --
    def add_pod(self, pod: Pod) -> Pod:
        self.pods[pod.uid] = pod
        return pod

    def add_policy(self, policy: NetworkPolicy) -> NetworkPolicy:
        self.netpols[(policy.namespace, policy.name)] = policy
        return policy

    def policy(self, ref: str, spec: dict) -> NetworkPolicy:
        """Add (or replace) the policy "ns/name" with `spec`; returns it."""
        return self.add_policy(netpol(ref, spec))

    def add_namespace(self, name: str, **labels: str) -> Namespace:
        self.ns[name] = Namespace(name=name, labels=labels)
        return self.ns[name]

    def new_pod(self, ref: str, ip: str, *, labels: dict | None = None, ports=(),
                **kw) -> Pod:
        ns, name = ref.split("/")
        return self.add_pod(Pod(namespace=ns, name=name, uid=f"uid-{ns}-{name}",
                                labels=labels or {}, ips=(ip,), ports=tuple(ports), **kw))

    def pod(self, ref: str) -> Pod:
        ns, name = ref.split("/")
        return next(p for p in self.pods.values() if p.namespace == ns and p.name == name)

    def ep(self, ref: str) -> Endpoint:
        """Endpoint of "ns/pod" (via its first IP), or of a bare IP."""
        if "/" in ref and ":" not in ref and not ref[0].isdigit():
            return self.endpoint(self.pod(ref).ips[0])
        return self.endpoint(ref)


def pod_endpoint(pod: Pod, ip: str) -> Endpoint:
    return Endpoint(ip=ip, kind=POD, namespace=pod.namespace, pod=pod.name, uid=pod.uid,
                    node=pod.node, labels=dict(pod.labels), ports=pod.ports)


def netpol(ref: str, spec: dict) -> NetworkPolicy:
    ns, name = ref.split("/")
    return NetworkPolicy(namespace=ns, name=name, spec=spec, uid=f"uid-{ns}-{name}")


E2E_NAMESPACES = ("x", "y", "z")
E2E_PODS = ("a", "b", "c")
E2E_PORTS = tuple(
    ContainerPort(port=port, protocol=proto, name=f"serve-{port}-{proto.lower()}")
    for port, proto in itertools.product((80, 81), (TCP, UDP, SCTP)))


def e2e_ip(ns: str, pod: str) -> str:
    return f"192.168.{E2E_NAMESPACES.index(ns) + 1}.{E2E_PODS.index(pod) + 10}"


def e2e_view() -> MemoryView:
    view = MemoryView()
    view.node_objects["node-1"] = Node(name="node-1", internal_ips=("10.10.0.1",))
    for ns in E2E_NAMESPACES:
        view.ns[ns] = Namespace(name=ns, labels={"ns": ns})
        for pod in E2E_PODS:
            view.add_pod(Pod(namespace=ns, name=pod, uid=f"uid-{ns}-{pod}", labels={"pod": pod},
                             ips=(e2e_ip(ns, pod),), node="node-1", ports=E2E_PORTS))
    return view


@pytest.fixture
def e2e() -> MemoryView:
    """A fresh e2e model cluster (x/y/z × a/b/c) with no policies."""
    return e2e_view()


@pytest.fixture
def view() -> MemoryView:
    """An empty cluster."""
    return MemoryView()
