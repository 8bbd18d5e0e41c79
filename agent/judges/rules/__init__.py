"""Built-in rules for the network-visible controls of the 4C's of cloud native security (judges stage).

Each rule is a judge in a module of its own (`base.Rule`); this registry names them by id, the
contract of `rule` events and of the `rule` label of flowwarden_violations_total. `rules:` in the
config enables, disables and scopes them (`settings.py`); docs/rules.md documents each one.
"""
from __future__ import annotations

from agent.judges.rules.apiserver import ApiserverPlaintext
from agent.judges.rules.base import ClusterFacts, Rule
from agent.judges.rules.cloud import CloudMetadata
from agent.judges.rules.credentials import PlaintextCredentials
from agent.judges.rules.dns import DnsExfilShape
from agent.judges.rules.docker import DockerDaemon
from agent.judges.rules.etcd import EtcdAccess, EtcdPlaintext
from agent.judges.rules.hostnet import HostNetworkListener
from agent.judges.rules.kubelet import KubeletAccess
from agent.judges.rules.nodeport import NodePortExternal
from agent.judges.rules.settings import load_settings
from agent.model import ClusterView

# Rule id -> its judges (etcd-access speaks at the first packet and again at classification).
RULES: dict[str, tuple[type[Rule], ...]] = {
    "cloud-metadata": (CloudMetadata,),
    "etcd-access": (EtcdAccess, EtcdPlaintext),
    "kubelet-access": (KubeletAccess,),
    "docker-daemon": (DockerDaemon,),
    "apiserver-plaintext": (ApiserverPlaintext,),
    "plaintext-credentials-protocol": (PlaintextCredentials,),
    "nodeport-external": (NodePortExternal,),
    "host-network-listener": (HostNetworkListener,),
    "dns-exfil-shape": (DnsExfilShape,),
}


def build_rules(doc: object, view: ClusterView, *, source: str) -> list[Rule]:
    """The enabled rules' judges, sharing one `ClusterFacts`; a bad `rules:` entry is a ConfigError."""
    settings = load_settings({rule_id: judges[0] for rule_id, judges in RULES.items()}, doc, source=source)
    facts = ClusterFacts(view)
    return [judge(view, facts, settings[rule_id]) for rule_id, judges in RULES.items()
            if settings[rule_id].enabled for judge in judges]
