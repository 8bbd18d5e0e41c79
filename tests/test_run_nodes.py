"""Two agents on one machine, each the agent of one simulated node: each reports its own pods' sides.

The lab of tests/test_run.py (one bridge, pods in network namespaces), with the cluster file placing
client on node-1 and web, secure and db on node-2. client may send only to shop (frontend/client-egress);
in shop, secure admits frontend and web only shop's own pods; data admits nothing (data/deny-all); secure
requires TLS. agent-1 (`NODE_NAME=node-1`) captures client's veth and the bridge, agent-2
(`--node node-2`) the veths of node-2's pods. Then:

- client -> db:5432 (nobody listens: SYN, RST) is denied at client's egress AND db's ingress: agent-1
  reports the egress side, agent-2 the ingress side, and `merge` of both makes it one line;
- client -> web:8080 is denied at web's ingress only: agent-2 alone reports it;
- client -> secure:8080 is allowed by policy but plaintext: TLS is the destination's expectation, agent-2
  alone reports it;
- web -> db:5432, two node-2 pods, crosses the bridge agent-1 captures: agent-1 counts it as transit
  and reports nothing, agent-2 judges it whole.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.test_run import (  # noqa: F401 (node is a fixture)
    ROOT, Node, _free_port, _get, _samples, _wait, cluster_objects, node,
)

NODES = {"client": "node-1", "web": "node-2", "secure": "node-2", "db": "node-2"}
FRONTEND = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}
POLICIES = {  # (namespace, name): spec, over tests/test_run.py's
    ("frontend", "client-egress"): {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
                                        "kubernetes.io/metadata.name": "shop"}}}]}]},
    ("shop", "allow-frontend"): {"podSelector": {"matchLabels": {"app": "secure"}}, "policyTypes": ["Ingress"],
                                 "ingress": [{"from": [FRONTEND]}]},
    ("shop", "web-from-shop"): {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                                "ingress": [{"from": [{"podSelector": {}}]}]},
}


def _cluster(path: Path) -> Path:
    items = [i for i in cluster_objects() if i["metadata"]["name"] != "late" and
             (i["kind"], i["metadata"].get("namespace"), i["metadata"]["name"]) != ("NetworkPolicy", "shop", "allow-frontend")]
    for item in items:
        if item["kind"] == "Pod":
            item["spec"]["nodeName"] = NODES[item["metadata"]["name"]]
    items += [{"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns, "uid": f"np-{ns}-{name}"},
               "spec": spec} for (ns, name), spec in POLICIES.items()]
    items.append({"kind": "Node", "metadata": {"name": "node-2", "uid": "node-2"},
                  "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}]}})
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def _start_agent(node: Node, tmp_path: Path, name: str, cluster: Path, interfaces: str, *,
                 env: dict | None = None, args: tuple = ()) -> tuple[subprocess.Popen, int, Path]:
    port, events = _free_port(), tmp_path / f"{name}.jsonl"
    log = open(tmp_path / f"{name}.log", "wb")
    agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                       "--interfaces", interfaces, "--listen", f"127.0.0.1:{port}", "--events", str(events),
                       *args, stderr=log, cwd=str(ROOT), env={**os.environ, **(env or {})})
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, f"{name} /readyz")
    return agent, port, events


def _sides(events: Path) -> list[tuple]:
    return sorted((e["kind"], e["src"]["pod"], e["dst"]["pod"], e["observer"]["node"], e["observer"]["side"])
                  for e in map(orjson.loads, events.read_bytes().splitlines()))


def test_two_agents_each_report_their_own_pods_sides_once(node, tmp_path):
    for pod in NODES:
        node.add_pod(pod)
    for pod in ("web", "secure"):
        node.start(node.pod_ns(pod), sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0")
        _wait(lambda: ":8080 " in node.run(node.pod_ns(pod), "ss", "-ltnH").stdout.decode(), 10, f"{pod}:8080")
    cluster = _cluster(tmp_path / "cluster.json")
    one, port1, events1 = _start_agent(node, tmp_path, "node-1", cluster, "vh-client,br0",
                                       env={"NODE_NAME": "node-1"})
    two, port2, events2 = _start_agent(node, tmp_path, "node-2", cluster, "vh-web,vh-secure,vh-db",
                                       args=("--node", "node-2"))
    client, web = node.pod_ns("client"), node.pod_ns("web")
    assert node.run(client, "curl", "-s", "-m", "5", "http://10.77.0.5:5432/", check=False).returncode == 7
    assert node.run(client, "curl", "-sf", "-o", "/dev/null", "-m", "5", "http://10.77.0.4:8080/").returncode == 0
    assert node.run(client, "curl", "-sf", "-o", "/dev/null", "-m", "5", "http://10.77.0.3:8080/").returncode == 0
    assert node.run(web, "curl", "-s", "-m", "5", "http://10.77.0.5:5432/", check=False).returncode == 7

    # Each verdict is out within a couple of seconds; then the agents stop and flush.
    _wait(lambda: events1.read_bytes().count(b"\n") == 1 and events2.read_bytes().count(b"\n") == 4, 10,
          "each agent's events")
    # web -> db makes no event on node-1 (transit): its count is what says node-1 has judged it.
    _wait(lambda: _samples(_get(node, port1, "/metrics")[1]).get(("flowwarden_transit_flows_total", ()), 0) >= 1,
          10, "node-1 to count the transit flow")
    metrics1, metrics2 = (_samples(_get(node, port, "/metrics")[1]) for port in (port1, port2))
    for agent in (one, two):
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0

    assert _sides(events1) == [("policy-violation", "client", "db", "node-1", "egress")]
    assert _sides(events2) == sorted([("policy-violation", "client", "db", "node-2", "ingress"),
                                      ("policy-violation", "client", "web", "node-2", "ingress"),
                                      ("plaintext", "client", "secure", "node-2", "ingress"),
                                      ("policy-violation", "web", "db", "node-2", "both")])
    assert metrics1[("flowwarden_transit_flows_total", ())] >= 1  # web -> db, seen on the bridge
    assert metrics2[("flowwarden_transit_flows_total", ())] == 0
    assert any(name == "flowwarden_build_info" and ("node", "node-1") in labels for name, labels in metrics1)
    violations = lambda m: {labels: v for (n, labels), v in m.items() if n == "flowwarden_violations_total"}  # noqa: E731
    assert [dict(labels)["side"] for labels in violations(metrics1)] == ["egress"]
    assert sorted((dict(labels)["kind"], dict(labels)["side"], dict(labels)["dst_namespace"], v)
                  for labels, v in violations(metrics2).items()) == [
        ("plaintext", "ingress", "shop", 1), ("policy-violation", "both", "data", 1),
        ("policy-violation", "ingress", "data", 1), ("policy-violation", "ingress", "shop", 1)]

    merged = subprocess.run([sys.executable, "-m", "agent.cli", "merge", str(events1), str(events2)],
                            capture_output=True, check=True, cwd=str(ROOT)).stdout
    lines = [orjson.loads(line) for line in merged.splitlines()]
    assert sorted((e["kind"], e["src"]["pod"], e["dst"]["pod"], e["observer"]["side"]) for e in lines) == sorted([
        ("policy-violation", "client", "db", "both"), ("policy-violation", "client", "web", "ingress"),
        ("plaintext", "client", "secure", "ingress"), ("policy-violation", "web", "db", "both")])
    [joined] = [e for e in lines if "observers" in e]
    assert (joined["src"]["pod"], joined["observers"]) == (
        "client", [{"node": "node-1", "side": "egress"}, {"node": "node-2", "side": "ingress"}])
    assert joined["egress"]["allowed"] is False and joined["ingress"]["allowed"] is False
