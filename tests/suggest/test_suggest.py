"""`flowwarden suggest` on a crafted shop (pcaps/suggest-shop): the suggestions admit every observed flow,
deny the held-out flows between workloads that never talked, keep DNS, validate strictly, and are the
same bytes every time, from the capture or from its flow records."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from agent.config import Config
from agent.evaluate import load_policy_files
from agent.inventory.snapshot import load_cluster
from agent.judges.netpol import NetpolEngine
from agent.model import ALLOW, DENY
from agent.suggest.command import SuggestOptions, run_suggest
from agent.suggest.observe import observe_captures
from tests.deploy.helpers import tool

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "pcaps" / "suggest-shop"
CLUSTER = str(SHOP / "cluster.json")
K8S_VERSIONS = ("1.29", "1.37")


def flowwarden(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, input=stdin, capture_output=True,
                          timeout=60)


@pytest.fixture(scope="module")
def suggested(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suggested")
    done = flowwarden("suggest", str(SHOP / "train.pcap"), "--cluster", CLUSTER, "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("records")
    for name in ("train", "heldout"):
        done = flowwarden("replay", str(SHOP / f"{name}.pcap"), "--cluster", CLUSTER, "--events", "/dev/null",
                          "--flows", str(out / f"{name}.jsonl"))
        assert done.returncode == 0, done.stderr.decode()
    return {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl"}


def policies(folder: Path) -> list[dict]:
    return [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def judge_all(records: Path, folder: Path) -> list[tuple[str, str, int, str]]:
    """`evaluate --flows RECORDS --with-policies FOLDER`: (src pod or ip, dst pod or ip, port, verdict) per flow."""
    done = flowwarden("evaluate", "--cluster", CLUSTER, "--flows", str(records), "--with-policies", str(folder),
                      "-o", "json")
    assert done.returncode == 0, done.stderr.decode()
    out = []
    for line in done.stdout.splitlines():
        r = orjson.loads(line)
        out.append((r["src"]["pod"] or r["src"]["ip"], r["dst"]["pod"] or r["dst"]["ip"], r["dst"]["port"],
                    r["verdict"]))
    return out


def test_every_established_training_flow_stays_allowed(suggested, records):
    flows = [orjson.loads(x) for x in records["train"].read_bytes().splitlines()]
    verdicts = judge_all(records["train"], suggested)
    assert sum(r["established"] for r in flows) == 12 and len(verdicts) == 14
    for r, (_, _, _, verdict) in zip(flows, verdicts):
        if r["established"]:
            assert verdict == ALLOW, r
    # The two attempts (a refusal, an unanswered SYN) are not admitted: they become denied.
    assert sorted(v for r, (*_, v) in zip(flows, verdicts) if not r["established"]) == [DENY, DENY]


def test_held_out_flows_between_workloads_that_never_talked_are_denied(suggested, records):
    verdicts = judge_all(records["heldout"], suggested)
    assert verdicts == [
        ("frontend-6b8f9c7d5-aaaaa", "redis-0", 6379, DENY),  # frontend never talked to redis
        ("192.0.2.1", "checkout-7d9c8b6f5-ccccc", 8080, DENY),  # no external source reached checkout
        ("prometheus-0", "redis-0", 6379, DENY),  # prometheus scraped shop, not data
        ("203.0.113.77", "frontend-6b8f9c7d5-aaaaa", 8080, DENY),  # same /24 as the seen clients, not their /28
        ("frontend-6b8f9c7d5-bbbbb", "checkout-7d9c8b6f5-ccccc", 8080, ALLOW),  # an edge that was seen
        ("checkout-7d9c8b6f5-ccccc", "coredns-5d78c9869d-h7kzp", 53, ALLOW),  # DNS over TCP: never seen, kept
    ]


def test_without_the_suggestions_the_held_out_flows_were_all_allowed(records):
    store = load_cluster(CLUSTER)
    engine = NetpolEngine(store)
    for line in records["heldout"].read_bytes().splitlines():
        r = orjson.loads(line)
        src, dst = store.endpoint(r["src"]["ip"], 0), store.endpoint(r["dst"]["ip"], 0)
        assert engine.decide_flow(src, dst, r["dst"]["port"], r["protocol"]).verdict == ALLOW


def test_every_egress_policy_keeps_dns_and_the_dns_pods_ingress_is_not_narrowed(suggested):
    docs = policies(suggested)
    egress = [d for d in docs if d["spec"]["policyTypes"] == ["Egress"]]
    assert len(egress) == 5
    dns_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    for d in egress:
        dns = [r for r in d["spec"]["egress"] if r["to"] == [dns_peer]]
        assert len(dns) == 1, d["metadata"]["name"]
        assert {(p["port"], p["protocol"]) for p in dns[0]["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert not list(suggested.glob("kube-system.yaml"))
    assert not [d for d in docs if d["spec"]["podSelector"]["matchLabels"].get("k8s-app") == "kube-dns"]


def test_shape_selectors_named_ports_and_merged_ip_blocks(suggested):
    by_name = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in policies(suggested)}
    assert sorted(by_name) == [
        ("data", "postgres-0-egress"), ("data", "redis-egress"), ("data", "redis-ingress"),
        ("monitoring", "prometheus-0-egress"), ("monitoring", "prometheus-0-ingress"),
        ("shop", "checkout-egress"), ("shop", "checkout-ingress"), ("shop", "frontend-egress"),
        ("shop", "frontend-ingress")]  # postgres' ingress already has a policy: not narrowed again
    # The StatefulSet's per-pod labels are not in its selector; the Deployment's pod-template-hash neither.
    assert by_name[("data", "redis-ingress")]["spec"]["podSelector"] == {"matchLabels": {"app": "redis"}}
    frontend = by_name[("shop", "frontend-ingress")]
    assert frontend["spec"]["podSelector"] == {"matchLabels": {"app": "frontend", "tier": "web"}}
    blocks = [r["from"][0]["ipBlock"]["cidr"] for r in frontend["spec"]["ingress"] if "ipBlock" in r["from"][0]]
    assert blocks == ["203.0.113.0/28", "2001:db8::5/128"]
    ports = {p["port"] for r in frontend["spec"]["ingress"] for p in r["ports"]}
    assert ports == {"http", "metrics"}  # the container ports' names
    assert by_name[("monitoring", "prometheus-0-ingress")]["spec"]["ingress"] == []  # nothing reached it


def test_comments_say_what_each_rule_admits_and_nothing_else(suggested):
    text = (suggested / "shop.yaml").read_text()
    assert "# from shop/Deployment/frontend\n  #   8080/TCP (http): 2 flows, first 2026-01-01T00:00:00Z" in text
    assert "# to 198.51.100.7\n  #   443/TCP: 1 flow" in text


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_suggested_object_passes_kubernetes_validate_strict(suggested, version, tmp_path):
    files = sorted(str(f) for f in suggested.glob("*.yaml"))
    assert len(files) == 3
    done = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *files],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yaml"  # the validator does reject a misspelt field
    broken.write_text((suggested / "shop.yaml").read_text().replace("protocol: TCP", "protocl: TCP", 1))
    done = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_the_same_input_gives_the_same_bytes_from_the_capture_or_its_records(suggested, records):
    again = flowwarden("suggest", str(SHOP / "train.pcap"), "--cluster", CLUSTER)
    from_records = flowwarden("suggest", "--flows", "-", "--cluster", CLUSTER, stdin=records["train"].read_bytes())
    assert again.returncode == from_records.returncode == 0
    stream = "".join((suggested / f"{ns}.yaml").read_text() for ns in ("data", "monitoring", "shop")).encode()
    assert again.stdout == stream == from_records.stdout
    assert again.stderr == from_records.stderr  # the proof too
    assert (suggested / "PROOF.txt").read_bytes() == again.stderr


def test_the_proof_says_what_is_admitted_refused_and_newly_isolated(suggested):
    proof = (suggested / "PROOF.txt").read_text()
    assert "14 observed flows with a pod at either end" in proof
    assert "admitted: 12; allowed before and denied after: 0 (the suggestions break no admitted flow)" in proof
    assert proof.count("never established (refused or unanswered)") == 2
    assert "shop/Deployment/frontend (2 pods): egress, ingress" in proof
    assert "data/Pod/postgres-0 (1 pod): egress\n" in proof  # its ingress had a policy already
    assert "shop/Deployment/frontend -> shop/Deployment/checkout 8080/TCP (now selected: egress, ingress)" in proof


def test_the_proof_reads_back_the_bytes_written(suggested):
    """The engine judges what was written, read as --with-policies reads it."""
    store = load_cluster(CLUSTER)
    observed = observe_captures([str(SHOP / "train.pcap")], view=store, config=Config(), damaged=[])
    after = NetpolEngine(store, extra_policies=load_policy_files([str(suggested)]))
    established = [o for o in observed if o.established]
    assert len(established) == 12
    assert all(after.decide_flow(o.src, o.dst, o.port, o.protocol).verdict == ALLOW for o in established)


def test_ingress_only_and_namespace_narrow_what_is_written():
    out = io.BytesIO()
    status = run_suggest(SuggestOptions(captures=[str(SHOP / "train.pcap")], ingress_only=True, namespaces=("data",)),
                         store=load_cluster(CLUSTER), config=Config(), out=out, err=io.StringIO())
    assert status == 0
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs] == [("data", "redis-ingress")]
