"""`kubelet-access`: a pod reaches a node's kubelet API, or anything its read-only port (judges stage).

The kubelet API (10250) runs commands in every container of its node; the API server and
monitoring agents reach it, workloads should not. The read-only port (10255) answers anyone,
unauthenticated, with the node's pods and their specs, and should be off.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule
from agent.model import ANSWER, CRITICAL, NODE, POD, TCP, Endpoint, Flow

KUBELET_PORT, READ_ONLY_PORT = 10250, 10255


class KubeletAccess(Rule):
    id = "kubelet-access"
    severity = CRITICAL
    stage = ANSWER
    reached = True
    key_ports = frozenset((KUBELET_PORT, READ_ONLY_PORT))
    rationale = ("Cluster layer: restrict access to the kubelet API and turn its read-only port off "
                 "(Kubernetes docs, Kubelet authentication/authorization; Security checklist)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if flow.protocol != TCP:
            return None
        if flow.dst_port == READ_ONLY_PORT:
            return f"the kubelet's unauthenticated read-only port {READ_ONLY_PORT} reached", {}
        if flow.dst_port == KUBELET_PORT and src.kind == POD and dst.kind == NODE:
            return f"a pod reached the kubelet API of node {dst.node or dst.ip}", {}
        return None
