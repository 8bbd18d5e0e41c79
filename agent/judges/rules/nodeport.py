"""`nodeport-external`: a source outside the cluster reaches a Service's NodePort (judges stage).

A NodePort (or LoadBalancer) Service opens its port on every node's addresses; reached from
outside the cluster it bypasses whatever fronts the Service on purpose. A Service meant to be
reached so says it with the `flowwarden.io/expose: "true"` annotation.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule
from agent.model import ANSWER, EXTERNAL, EXPOSE_ANNOTATION, NODE, WARNING, Endpoint, Flow


class NodePortExternal(Rule):
    id = "nodeport-external"
    severity = WARNING
    stage = ANSWER
    reached = True
    rationale = ("Cluster layer: expose Services outside the cluster only on purpose (Kubernetes docs, "
                 "Service: type NodePort; Security checklist: network)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if src.kind != EXTERNAL:
            return None
        if dst.kind == NODE:
            port = flow.dst_port
        elif flow.orig_dst is not None and self.view.endpoint(flow.orig_dst[0], flow.first_seen).kind == NODE:
            port = flow.orig_dst[1]  # conntrack saw the node port translated to a backend
        else:
            return None
        service = self.facts.node_port(port, flow.protocol)
        if service is None or service[1]:
            return None
        return (f"NodePort {port}/{flow.protocol} of Service {service[0]} reached from outside the cluster "
                f"(not annotated {EXPOSE_ANNOTATION}: \"true\")"), {"node_port_service": service[0]}

    def key_classes(self):
        networks, _ = super().key_classes()
        return networks, frozenset(self.facts.node_ports)
