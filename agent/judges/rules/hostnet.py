"""`host-network-listener`: a pod reaches a listener in a node's network namespace (judges stage).

hostNetwork pods and node daemons listen on the node's addresses, outside every pod's network
namespace and usually outside NetworkPolicy's reach. A pod that connects to one (answered: there
is a listener) on a port not in the rule's `ports` allow-list is reported. Ports other rules judge
(kubelet, etcd, Docker, the API server) and Services' NodePorts are left to those.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule
from agent.judges.rules.docker import PLAIN_PORT, TLS_PORT
from agent.judges.rules.etcd import ETCD_PORTS
from agent.judges.rules.kubelet import KUBELET_PORT, READ_ONLY_PORT
from agent.model import ANSWER, NODE, POD, WARNING, Endpoint, Flow

OTHER_RULES_PORTS = frozenset((KUBELET_PORT, READ_ONLY_PORT, PLAIN_PORT, TLS_PORT, *ETCD_PORTS))


class HostNetworkListener(Rule):
    id = "host-network-listener"
    severity = WARNING
    stage = ANSWER
    reached = True
    rationale = ("Cluster layer: pods reach host-network services only where allowed; they sit outside "
                 "NetworkPolicy (Kubernetes docs, Pod Security Standards: host namespaces)")
    options = {"ports": ([], "ports")}  # [9100, {port: 53, protocol: UDP}]: a number alone, every protocol

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        port = flow.dst_port
        if (src.kind != POD or dst.kind != NODE or port in OTHER_RULES_PORTS
                or self._allowed_port(port, flow.protocol) or self.facts.node_port(port, flow.protocol)
                or (port in self.facts.api_ports and self.facts.is_api_server(dst))):
            return None
        who = f"hostNetwork pod {dst.namespace}/{dst.pod}" if dst.pod else f"node {dst.node or dst.ip}"
        return f"a pod reached a listener of {who} on {port}/{flow.protocol}", {}

    def _allowed_port(self, port: int, protocol: str) -> bool:
        return any(p == port if isinstance(p, int) else (p["port"] == port and p.get("protocol", protocol) == protocol)
                   for p in self.settings.options["ports"])

    def key_classes(self):
        networks, _ = super().key_classes()
        ports = {p if isinstance(p, int) else p["port"] for p in self.settings.options["ports"]}
        return networks, frozenset(ports | OTHER_RULES_PORTS | set(self.facts.node_ports) | self.facts.api_ports)
