"""`etcd-access`: etcd is reached by anything but the control plane, or in plaintext (judges stage).

etcd holds every Secret of the cluster. Its client (2379) and peer (2380) ports are for the API
servers and the other members, over mutual TLS. Two judges share the rule id: who reached it is
known at the answer (`check: "access"`), whether it speaks plaintext once the first bytes are
classified (`check: "plaintext"`, from anyone, the control plane included).
"""
from __future__ import annotations

from agent.judges.rules.base import Rule, plaintext
from agent.model import ANSWER, CLASSIFIED, CRITICAL, TCP, Endpoint, Flow

ETCD_PORTS = frozenset((2379, 2380))  # client, peer (etcd's IANA ports)


class EtcdAccess(Rule):
    id = "etcd-access"
    severity = CRITICAL
    stage = ANSWER
    reached = True
    key_ports = ETCD_PORTS
    rationale = ("Cluster layer: etcd access is limited to the control plane, over TLS "
                 "(Kubernetes docs, Operating etcd clusters: Securing etcd clusters)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if flow.protocol != TCP or flow.dst_port not in ETCD_PORTS or self.facts.in_control_plane(src):
            return None
        return f"etcd port {flow.dst_port} reached from outside the control plane", {"check": "access"}

    def src_profile(self, ep: Endpoint) -> tuple:
        return super().src_profile(ep), self.facts.in_control_plane(ep)


class EtcdPlaintext(EtcdAccess):
    stage = CLASSIFIED
    reached = False  # plaintext bytes were sent: that is the finding, answered or not

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if flow.protocol != TCP or flow.dst_port not in ETCD_PORTS or not plaintext(flow):
            return None
        return f"plaintext ({flow.app}) on etcd port {flow.dst_port}", {"check": "plaintext"}

    def src_profile(self, ep: Endpoint) -> tuple:
        return Rule.src_profile(self, ep)

    def silent_on_plaintext(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        return flow.dst_port not in ETCD_PORTS or self.allowed(src)
