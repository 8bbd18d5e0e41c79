"""`apiserver-plaintext`: plaintext to the Kubernetes API server (judges stage, Cluster layer).

The API server is reached through the `kubernetes` Service (its ClusterIP, usually 443) or its
endpoints (usually 6443): bearer tokens and Secrets cross that connection, so it is TLS always.
Judged once the first bytes are classified.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule, networks_of, plaintext
from agent.model import CLASSIFIED, CRITICAL, TCP, Endpoint, Flow


class ApiserverPlaintext(Rule):
    id = "apiserver-plaintext"
    severity = CRITICAL
    stage = CLASSIFIED
    rationale = ("Cluster layer: all API traffic is TLS (Kubernetes docs, Controlling Access to the "
                 "Kubernetes API: Transport security)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if not self._api(flow, dst) or not plaintext(flow):
            return None
        return f"plaintext ({flow.app}) to the API server at {dst.ip}:{flow.dst_port}", {}

    def _api(self, flow: Flow, dst: Endpoint) -> bool:
        return (flow.protocol == TCP and flow.dst_port in self.facts.api_ports
                and (self.facts.is_api_server(dst) or (flow.orig_dst is not None
                                                       and flow.orig_dst[0] in self.facts.api_addresses)))

    def key_classes(self):
        networks, _ = super().key_classes()
        return networks + networks_of(self.facts.api_addresses), self.facts.api_ports

    def dst_profile(self, ep: Endpoint) -> object:
        return self.facts.is_api_server(ep)

    def silent_on_plaintext(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        return not self._api(flow, dst) or self.allowed(src)
