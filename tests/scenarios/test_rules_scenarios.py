"""The built-in rules on the bundled captures (pcaps/rules-4c recorded, pcaps/rules-crafted crafted;
pcaps/README.md lists every flow): each rule fires on exactly its flows, and the config disables,
scopes and tunes them. The exact lines are in tests/scenarios/rules-*/ (test_scenarios.py); this
file states the intent, flow by flow, so a regenerated golden file cannot quietly lose a finding."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agent.cli import main

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
CLIENT, CLIENT6 = "10.244.1.110", "fd00:10:244:1::110"
NODE1, CP1, CP2, OUTSIDE = "172.18.0.2", "172.18.0.4", "172.18.0.5", "172.18.0.100"

# (rule, check or credentials, src, dst, dst port) of every first line, recorded capture.
RECORDED = sorted([
    ("cloud-metadata", None, CLIENT, "169.254.169.254", 80),
    ("cloud-metadata", None, CLIENT6, "fd00:ec2::254", 80),
    ("etcd-access", "access", CLIENT, CP1, 2379),
    ("etcd-access", "access", NODE1, CP1, 2379),  # a worker node
    ("etcd-access", "plaintext", CP2, CP1, 2380),  # plaintext from the control plane itself
    ("kubelet-access", None, CLIENT, NODE1, 10250),
    ("kubelet-access", None, CLIENT, NODE1, 10255),
    ("kubelet-access", None, CP1, NODE1, 10255),
    ("docker-daemon", None, CLIENT, NODE1, 2375),
    ("docker-daemon", None, CLIENT, NODE1, 2376),
    ("docker-daemon", None, CP1, NODE1, 2375),
    ("apiserver-plaintext", None, CLIENT, CP1, 6443),
    ("plaintext-credentials-protocol", "http-basic", CLIENT, "10.244.1.111", 8080),
    ("plaintext-credentials-protocol", "ftp-login", CLIENT, "10.244.1.115", 21),
    ("plaintext-credentials-protocol", "imap-auth", CLIENT, "10.244.1.113", 143),
    ("plaintext-credentials-protocol", "pop3-auth", CLIENT, "10.244.1.113", 110),
    ("plaintext-credentials-protocol", "smtp-auth", CLIENT, "10.244.1.114", 25),
    ("nodeport-external", None, OUTSIDE, NODE1, 30080),
    ("host-network-listener", None, CLIENT, NODE1, 9100),
])
CRAFTED = sorted([
    ("plaintext-credentials-protocol", "telnet", CLIENT, "10.244.1.123", 23),
    ("plaintext-credentials-protocol", "smtp-auth", CLIENT, "10.244.1.114", 25),  # not the STARTTLS session
    ("plaintext-credentials-protocol", "pop3-login", CLIENT, "10.244.1.113", 110),
    ("plaintext-credentials-protocol", "imap-login", CLIENT, "10.244.1.113", 143),
    ("plaintext-credentials-protocol", "http-basic", CLIENT, "10.244.1.128", 3128),  # header in a 2nd segment
    ("cloud-metadata", None, CLIENT6, "fd00:ec2::254", 80),
    ("cloud-metadata", None, CLIENT6, "fd00:ec2::254", 123),  # UDP
    ("nodeport-external", None, "198.51.100.23", "172.18.0.3", 30053),  # UDP NodePort
    ("apiserver-plaintext", None, CLIENT, "10.96.0.1", 443),  # the ClusterIP
])


def _rule_events(tmp_path: Path, scenario: str, config: str | None = None) -> list[tuple]:
    events = tmp_path / "events.jsonl"
    args = ["replay", str(PCAPS / scenario / "capture.pcap"), "--cluster", str(PCAPS / scenario / "cluster.json"),
            "--events", str(events)]
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
        args += ["--config", str(tmp_path / "config.yaml")]
    assert main(args) == 0
    lines = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    return sorted((e["rule"], e.get("check") or e.get("credentials"), e["src"]["ip"], e["dst"]["ip"], e["dst"]["port"])
                  for e in lines if e["kind"] == "rule" and not e["follow_up"])


@pytest.mark.parametrize("scenario, want", [("rules-4c", RECORDED), ("rules-crafted", CRAFTED)])
def test_each_rule_fires_on_its_flows_and_nowhere_else(tmp_path, scenario, want):
    assert _rule_events(tmp_path, scenario) == want


def test_a_disabled_rule_is_silent_and_the_others_unchanged(tmp_path):
    got = _rule_events(tmp_path, "rules-4c", "rules:\n  docker-daemon: {enabled: false}\n")
    assert got == [e for e in RECORDED if e[0] != "docker-daemon"]


def test_allow_entries_scope_rules_to_sources(tmp_path):
    config = """
rules:
  kubelet-access:
    allow: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}]
  nodeport-external:
    allow: [{ipBlock: {cidr: 172.18.0.0/24}}]
  host-network-listener:
    ports: [9100]
"""
    got = _rule_events(tmp_path, "rules-4c", config)
    assert got == [e for e in RECORDED if not (e[0] == "kubelet-access" and e[2] == CLIENT)
                   and e[0] not in ("nodeport-external", "host-network-listener")]


def test_dns_exfil_shape_when_enabled_names_the_domain_and_never_the_query(tmp_path):
    events = tmp_path / "events.jsonl"
    (tmp_path / "config.yaml").write_text("rules:\n  dns-exfil-shape: {enabled: true}\n")
    for scenario, domain, queries in (("rules-4c", "example.com", 3), ("rules-crafted", "example.com", 3)):
        assert main(["replay", str(PCAPS / scenario / "capture.pcap"), "--cluster",
                     str(PCAPS / scenario / "cluster.json"), "--config", str(tmp_path / "config.yaml"),
                     "--events", str(events), "--flows", str(tmp_path / "flows.jsonl")]) == 0
        found = [orjson.loads(line) for line in events.read_bytes().splitlines()]
        exfil = [e for e in found if e.get("rule") == "dns-exfil-shape"]
        assert sum(e["count"] for e in exfil) == queries and {e["dns"]["domain"] for e in exfil} == {domain}
        assert all(e["dns"]["longest_label"] >= 50 for e in exfil)
        written = events.read_bytes() + (tmp_path / "flows.jsonl").read_bytes()
        assert b"exfil.example.com" not in written and b"dns_query" not in written  # the name is the data
