"""`docker-daemon`: the Docker Engine API is reached over the network (judges stage, Container layer).

Port 2375 is the Docker API without TLS: whoever reaches it is root on that host. 2376 is the same
API over TLS; no workload should drive a container runtime.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule
from agent.model import ANSWER, CRITICAL, POD, TCP, Endpoint, Flow

PLAIN_PORT, TLS_PORT = 2375, 2376


class DockerDaemon(Rule):
    id = "docker-daemon"
    severity = CRITICAL
    stage = ANSWER
    reached = True
    key_ports = frozenset((PLAIN_PORT, TLS_PORT))
    rationale = ("Container layer: never expose the container runtime's socket or API to workloads "
                 "(Kubernetes docs, Cloud Native Security: Container; Docker docs, Protect the Docker daemon socket)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if flow.protocol != TCP:
            return None
        if flow.dst_port == PLAIN_PORT:
            return f"the Docker API without TLS ({PLAIN_PORT}) reached", {}
        if flow.dst_port == TLS_PORT and src.kind == POD:
            return f"a pod reached the Docker API ({TLS_PORT})", {}
        return None
