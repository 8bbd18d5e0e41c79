"""`dns-exfil-shape`: a pod's DNS query has the shape of data carried out in names (judges stage, off by default).

DNS tunnels and exfiltration tools (iodine, dnscat2, DNSExfiltrator) pack data into the labels of
queries to a domain they control: names far longer than people write, labels near the 63-byte
limit, and random-looking characters. The flow table keeps the first query's name of a UDP/53 flow
for this rule alone (`Flow.dns_query`); the event carries its shape and the domain asked, never
the name. A heuristic, so off by default and tunable.
"""
from __future__ import annotations

import math
import re
from collections import Counter

from agent.judges.rules.base import Rule
from agent.model import ANSWER, POD, UDP, WARNING, Endpoint, Flow

# Search-path expansions a pod's resolver tries first (<name>.<namespace>.svc.cluster.local, ...).
CLUSTER_SUFFIX = re.compile(r"(?:\.[a-z0-9-]+)?\.svc\.cluster\.local$|\.cluster\.local$")


def shape(name: str) -> dict:
    """Length, longest label, Shannon entropy (bits per character) of the labels left of the domain
    (the last two labels), and the domain."""
    name = CLUSTER_SUFFIX.sub("", name.rstrip(".").lower()) or name
    labels = name.split(".")
    left = "".join(labels[:-2])
    counts = Counter(left)
    entropy = -sum(n / len(left) * math.log2(n / len(left)) for n in counts.values()) if left else 0.0
    return {"length": len(name), "longest_label": max(map(len, labels)), "entropy": round(entropy, 2),
            "subdomain_length": len(left), "domain": ".".join(labels[-2:])}


class DnsExfilShape(Rule):
    id = "dns-exfil-shape"
    severity = WARNING
    stage = ANSWER
    key_ports = frozenset((53,))  # other ports' flows carry no name
    rationale = ("Code layer: workloads do not tunnel data out through DNS names (MITRE ATT&CK T1048.003, "
                 "T1071.004; Kubernetes docs, Cloud Native Security: Code)")
    enabled_by_default = False
    needs_dns_query = True  # the flow table keeps the first query's name of UDP/53 flows, which stay Python flows
    options = {"max_name_length": (100, "number"), "max_label_length": (50, "number"),
               "min_entropy": (4.0, "number"), "entropy_min_length": (24, "number")}

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if src.kind != POD or flow.protocol != UDP or not flow.dns_query:
            return None
        s, o = shape(flow.dns_query), self.settings.options
        why = [what for what, broken in (
            (f"a name of {s['length']} characters", s["length"] > o["max_name_length"]),
            (f"a label of {s['longest_label']} characters", s["longest_label"] > o["max_label_length"]),
            (f"{s['entropy']} bits of entropy per character in {s['subdomain_length']} characters",
             s["subdomain_length"] >= o["entropy_min_length"] and s["entropy"] >= o["min_entropy"])) if broken]
        if not why:
            return None
        return f"a DNS query for a name under {s['domain']} with {', '.join(why)}", {"dns": s}
