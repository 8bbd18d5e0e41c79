"""`cloud-metadata`: a pod reaches the cloud's instance metadata service (judges stage, Cloud layer).

The metadata service hands out the node's cloud credentials to whoever asks from the node; a pod
that reaches it can act as the node in the cloud account. hostNetwork pods are the node and are
not judged (their address is the node's).
"""
from __future__ import annotations

from agent.judges.rules.base import Rule, networks_of
from agent.model import ANSWER, CRITICAL, POD, Endpoint, Flow

# AWS, GCP, Azure, OpenStack and others: 169.254.169.254; AWS over IPv6 (Nitro): fd00:ec2::254.
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")


class CloudMetadata(Rule):
    id = "cloud-metadata"
    severity = CRITICAL
    stage = ANSWER
    reached = True
    rationale = ("Cloud layer: restrict pod access to the instance metadata API, which serves node credentials "
                 "(Kubernetes docs, Security checklist and Cloud Native Security)")
    options = {"addresses": (list(METADATA_ADDRESSES), "addresses")}

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if src.kind == POD and dst.ip in self.settings.options["addresses"]:
            return f"a pod reached the cloud metadata service at {dst.ip} ({flow.dst_port}/{flow.protocol})", {}
        return None

    def key_classes(self):
        networks, ports = super().key_classes()
        return networks + networks_of(self.settings.options["addresses"]), ports
