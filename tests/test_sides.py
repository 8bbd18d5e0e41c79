"""One cluster, many agents: each node judges its own pods' policy sides, and `merge` joins them.

A crafted two-node cluster: front/web runs on node-1, back/db on node-2 and back/cache on node-1; web
may not send anywhere (front/web-egress-none) and back admits nothing (back/deny-ingress). The same
capture is replayed as each node's agent (`replay --node`) and as a laptop would (no node).
"""
from __future__ import annotations

import struct
from pathlib import Path

import orjson
import pytest

from agent.cli import main
from agent.model import BOTH, EGRESS, INGRESS, NODE, POD, SERVICE, Endpoint, side_of
from tests.flows.test_table import SA, S, tcp

WEB, DB, CACHE, OUTSIDE, NODE_2 = "10.0.1.1", "10.0.2.1", "10.0.1.2", "203.0.113.5", "172.18.0.3"
POLICIES = [("back", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}),
            ("front", "web-egress-none", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]})]


def _cluster(path: Path) -> Path:
    meta = lambda name, ns=None, **extra: {"name": name, "uid": f"uid-{ns}-{name}",  # noqa: E731
                                           **({"namespace": ns} if ns else {}), **extra}
    items = [{"kind": "Namespace", "metadata": meta(ns)} for ns in ("back", "front", "monitoring")]
    for ns, name, node, ip in (("front", "web", "node-1", WEB), ("back", "db", "node-2", DB),
                               ("back", "cache", "node-1", CACHE)):
        items.append({"kind": "Pod", "metadata": meta(name, ns, labels={"app": name}), "spec": {"nodeName": node},
                      "status": {"phase": "Running", "podIPs": [{"ip": ip}]}})
    items.append({"kind": "Pod", "metadata": meta("exporter", "monitoring", labels={"app": "exporter"}),
                  "spec": {"nodeName": "node-2", "hostNetwork": True,
                           "containers": [{"name": "e", "ports": [{"containerPort": 9100}]}]},
                  "status": {"phase": "Running", "podIPs": [{"ip": NODE_2}]}})
    items += [{"kind": "NetworkPolicy", "metadata": meta(name, ns), "spec": spec} for ns, name, spec in POLICIES]
    items += [{"kind": "Node", "metadata": meta(n), "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
              for n, ip in (("node-1", "172.18.0.2"), ("node-2", "172.18.0.3"))]
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


FLOWS = ((WEB, DB, 5432), (WEB, CACHE, 6379), (DB, WEB, 8080), (OUTSIDE, DB, 5432), (DB, CACHE, 6379))


def _capture(path: Path, flows=FLOWS) -> Path:
    frames = []
    for i, (src, dst, port) in enumerate(flows):
        t = 1_767_225_600.0 + i
        frames += [(t, tcp(src, 40000 + i, dst, port, S, seq=1)), (t + 1e-3, tcp(dst, port, src, 40000 + i, SA))]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            f.write(struct.pack("<IIII", int(ts), round(ts % 1 * 1e6), len(frame), len(frame)) + frame)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("sides")
    return _capture(tmp / "capture.pcap"), _cluster(tmp / "cluster.json")


def _replay(lab, out: Path, node: str | None) -> tuple[list[dict], str]:
    pcap, cluster = lab
    args = ["replay", str(pcap), "--cluster", str(cluster), "--events", str(out), "--metrics", f"{out}.prom"]
    assert main(args + (["--node", node] if node else [])) == 0
    return [orjson.loads(line) for line in out.read_bytes().splitlines()], Path(f"{out}.prom").read_text()


def _seen(events: list[dict]) -> list[tuple]:
    return sorted((e["src"]["ip"], e["dst"]["ip"], e["observer"]["side"], e["egress"] is not None,
                   e["ingress"] is not None) for e in events)


def test_each_node_reports_its_own_pods_sides_and_nothing_else(lab, tmp_path):
    laptop, _ = _replay(lab, tmp_path / "laptop.jsonl", None)
    one, one_metrics = _replay(lab, tmp_path / "node-1.jsonl", "node-1")
    two, two_metrics = _replay(lab, tmp_path / "node-2.jsonl", "node-2")
    # No node: every flow judged whole, as before.
    assert sorted((e["src"]["ip"], e["dst"]["ip"], e["observer"]["side"]) for e in laptop) == sorted([
        (WEB, DB, BOTH), (WEB, CACHE, BOTH), (DB, CACHE, BOTH), (OUTSIDE, DB, BOTH)])
    # node-1 runs web and cache: web's egress to db (its ingress is node-2's), web -> cache whole, db's
    # flow into cache at cache's ingress; the outsider reaching db is node-2's alone.
    assert _seen(one) == sorted([(WEB, DB, EGRESS, True, False), (WEB, CACHE, BOTH, True, True),
                                 (DB, CACHE, INGRESS, False, True)])
    assert {e["observer"]["node"] for e in one} == {"node-1"}
    # node-2 runs db: web -> db at db's ingress, the outsider whole; db -> cache's egress side is open.
    assert _seen(two) == sorted([(WEB, DB, INGRESS, False, True), (OUTSIDE, DB, BOTH, True, True)])
    # Each saw one flow that is another node's alone: the outsider -> db on node-1, web -> cache on node-2.
    assert "flowwarden_transit_flows_total 1.0" in one_metrics and "flowwarden_transit_flows_total 1.0" in two_metrics
    assert ('flowwarden_violations_total{dst_namespace="back",kind="policy-violation",rule="",'
            'severity="critical",side="egress",src_namespace="front"} 1.0') in one_metrics
    reasons = {e["dst"]["ip"]: e["reasons"] for e in one}
    assert [r.split(":")[0] for r in reasons[DB]] == ["egress denied"]  # the ingress reason is node-2's


def test_merge_writes_each_connection_once_with_both_sides(lab, tmp_path, capsysbinary):
    one, _ = _replay(lab, tmp_path / "node-1.jsonl", "node-1")
    two, _ = _replay(lab, tmp_path / "node-2.jsonl", "node-2")
    assert main(["merge", str(tmp_path / "node-1.jsonl"), str(tmp_path / "node-2.jsonl")]) == 0
    merged = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert len(merged) == 4 == len(one) + len(two) - 1  # web -> db was reported by both nodes
    [both] = [e for e in merged if e["dst"]["ip"] == DB and e["src"]["ip"] == WEB]
    assert both["observer"] == {"node": None, "side": BOTH}
    assert both["observers"] == [{"node": "node-1", "side": EGRESS}, {"node": "node-2", "side": INGRESS}]
    assert both["egress"]["allowed"] is False and both["ingress"]["allowed"] is False
    assert [r.split(":")[0] for r in both["reasons"]] == ["egress denied", "ingress denied"]
    assert both["policies"] == ["front/web-egress-none", "back/deny-ingress"]
    alone = [e for e in merged if e is not both]
    assert all("observers" not in e for e in alone)  # one node saw them: unchanged


def test_merge_keeps_two_rules_of_one_connection_apart(tmp_path, capsysbinary):
    events = tmp_path / "events.jsonl"
    line = {"kind": "rule", "rule": "etcd-access", "community_id": "1:x", "time": "t", "observer": {"side": "both"}}
    events.write_bytes(b"".join(orjson.dumps({**line, "check": check}) + b"\n" for check in ("access", "plaintext")))
    assert main(["merge", str(events)]) == 0
    assert [orjson.loads(e)["check"] for e in capsysbinary.readouterr().out.splitlines()] == ["access", "plaintext"]


def test_merge_names_a_line_that_is_not_an_event(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "plaintext", "community_id": "1:x", "time": "t"}\nnot json\n')
    assert main(["merge", str(bad)]) == 1
    assert f"{bad}:2: not a flowwarden event" in capsys.readouterr().err
    bad.write_text("nope\n")
    assert main(["merge", str(bad)]) == 2


@pytest.mark.parametrize("src, dst, want", [
    (Endpoint("a", kind=POD, node="n1"), Endpoint("b", kind=POD, node="n1"), BOTH),
    (Endpoint("a", kind=POD, node="n1"), Endpoint("b", kind=POD, node="n2"), EGRESS),
    (Endpoint("a", kind=POD, node="n2"), Endpoint("b", kind=POD, node="n1"), INGRESS),
    (Endpoint("a", kind=POD, node="n2"), Endpoint("b", kind=POD, node="n3"), None),
    (Endpoint("a", kind=POD, node="n1"), Endpoint("b"), BOTH),  # external: the pod's node, whole
    (Endpoint("a", kind=POD, node="n2"), Endpoint("b"), None),
    (Endpoint("a", kind=NODE, node="n1"), Endpoint("b", kind=POD, node="n2"), None),  # hostNetwork = node
    (Endpoint("a"), Endpoint("b", kind=NODE, node="n1"), BOTH),  # no pod at either end
    (Endpoint("a", kind=POD, node="n1"),
     Endpoint("s", kind=SERVICE, candidates=(Endpoint("b", kind=POD, node="n1"),)), EGRESS),
])
def test_side_of_gives_a_node_its_pods_sides(src, dst, want):
    assert side_of("n1", src, dst) == want
    assert side_of(None, src, dst) == BOTH


def test_a_hostnetwork_pods_declared_port_is_that_pod_and_its_nodes_to_judge(lab, tmp_path):
    # node-2's address: port 9100 is the hostNetwork exporter's, port 22 the node's own. web may send
    # nowhere: node-1 reports both, naming the exporter on 9100; for node-2 they are node-1's (transit).
    pcap = _capture(tmp_path / "host.pcap", ((WEB, NODE_2, 9100), (WEB, NODE_2, 22)))
    one, _ = _replay((pcap, lab[1]), tmp_path / "node-1.jsonl", "node-1")
    two, two_metrics = _replay((pcap, lab[1]), tmp_path / "node-2.jsonl", "node-2")
    for kind in ("policy-violation", "rule"):  # the rule: host-network-listener, a pod reached the node's listeners
        assert sorted((e["dst"]["port"], e["dst"]["kind"], e["dst"]["namespace"], e["dst"]["pod"], e["dst"]["node"])
                      for e in one if e["kind"] == kind) == [
            (22, "node", None, None, "node-2"), (9100, "node", "monitoring", "exporter", "node-2")]
    assert {e.get("rule") for e in one if e["kind"] == "rule"} == {"host-network-listener"}
    assert two == [] and "flowwarden_transit_flows_total 2.0" in two_metrics
