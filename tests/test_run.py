"""`flowwarden run` end to end: real programs talking between network namespaces.

A throw-away "node" namespace holds a bridge (`br0`) and the host ends of one
veth per pod; each pod is a namespace with IPv4 and IPv6 addresses. The agent
runs inside the node namespace (`ip netns exec`) as a subprocess capturing on
`vh*,br0` (so every packet is seen twice and must be counted once), with a
static `--cluster` file. curl, python's http.server and openssl make the
traffic; /metrics is scraped over HTTP; SIGTERM must flush the events, which are
compared exactly. Namespaces and processes are removed in the fixture teardown.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rootonly import require_root

ROOT = Path(__file__).resolve().parents[1]
V4, V6 = "10.77.0.{}", "fd77::{}"
PODS = {  # name: (namespace, labels, annotations, host number)
    "client": ("frontend", {"app": "client"}, {}, 2),
    "web": ("shop", {"app": "web"}, {}, 3),
    "secure": ("shop", {"app": "secure"}, {"flowwarden.io/require-tls": "true",
                                           "flowwarden.io/tls-min-version": "1.3"}, 4),
    "db": ("data", {"app": "db"}, {}, 5),
    "late": ("frontend", {"app": "late"}, {}, 6),  # its interface appears after the agent started
}
POLICIES = [
    ("shop", "allow-frontend", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}]}]}),
    ("data", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]}),
]


def cluster_objects() -> list[dict]:
    meta = lambda name, ns=None, **extra: {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{ns}/{name}")),
                                           "creationTimestamp": "2025-12-01T00:00:00Z",
                                           **({"namespace": ns} if ns else {}), **extra}
    items = [{"kind": "Namespace", "metadata": meta(ns)} for ns in sorted({p[0] for p in PODS.values()})]
    for name, (ns, labels, annotations, n) in PODS.items():
        items.append({"kind": "Pod", "metadata": meta(name, ns, labels=labels, annotations=annotations),
                      "spec": {"nodeName": "node-1"},
                      "status": {"phase": "Running", "podIPs": [{"ip": V4.format(n)}, {"ip": V6.format(n)}]}})
    items += [{"kind": "NetworkPolicy", "metadata": meta(name, ns), "spec": spec} for ns, name, spec in POLICIES]
    items.append({"kind": "Node", "metadata": meta("node-1"),
                  "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}})
    return items


class Node:
    """The node namespace with its bridge, and pods attached to it."""

    def __init__(self, tag: str):
        self.tag, self.ns = tag, f"fwtest-{tag}-node"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self._netns(self.ns)
        self.run(self.ns, "ip", "link", "add", "br0", "type", "bridge")
        self.run(self.ns, "ip", "link", "set", "br0", "up")
        self.run(self.ns, "ip", "link", "set", "lo", "up")

    def _netns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=check, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, ns: str, *cmd: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        process = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdin=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def pod_ns(self, pod: str) -> str:
        return f"fwtest-{self.tag}-{pod}"

    def add_pod(self, pod: str) -> str:
        ns, n = self.pod_ns(pod), PODS[pod][3]
        self._netns(ns)
        subprocess.run(["ip", "link", "add", f"vh-{pod}", "netns", self.ns, "type", "veth",
                        "peer", "name", "eth0", "netns", ns], check=True)
        self.run(self.ns, "ip", "link", "set", f"vh-{pod}", "master", "br0", "up")
        for cmd in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                    ("addr", "add", V4.format(n) + "/24", "dev", "eth0"),
                    ("addr", "add", V6.format(n) + "/64", "dev", "eth0", "nodad")):
            self.run(ns, "ip", *cmd)
        return ns

    def close(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def node():
    require_root("network namespaces and the agent's capture")
    node = Node(uuid.uuid4().hex[:6])
    try:
        yield node
    finally:
        node.close()


def _free_port() -> int:
    with socket.socket() as s:  # inside the fresh node namespace every port is free; any number will do
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(node: Node, port: int, path: str) -> tuple[int, str]:
    done = node.run(node.ns, "curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}",
                    check=False, timeout=5)
    body, _, code = done.stdout.decode().rpartition("\n")
    return int(code or 0), body


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start_servers(node: Node, tmp_path: Path) -> None:
    web, secure = node.pod_ns("web"), node.pod_ns("secure")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=secure"],
                   check=True, capture_output=True)
    node.start(web, sys.executable, "-m", "http.server", "8080", "--bind", "::", "--directory", str(tmp_path))
    node.start(secure, sys.executable, "-m", "http.server", "8080", "--bind", "::", "--directory", str(tmp_path))
    node.start(secure, "openssl", "s_server", "-accept", "8443", "-cert", str(cert), "-key", str(key), "-quiet")
    for ns, port in ((web, 8080), (secure, 8080), (secure, 8443)):
        _wait(lambda: f":{port} " in node.run(ns, "ss", "-ltnH").stdout.decode(), 10, f"server on {port}")


def test_the_agent_judges_live_traffic_and_flushes_on_sigterm(node, tmp_path):
    for pod in ("client", "web", "secure", "db"):
        node.add_pod(pod)
    _start_servers(node, tmp_path)
    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text("flows:\n  closed_linger: 0.5\nevents:\n  window: 600\n")
    events, flows, port = tmp_path / "events.jsonl", tmp_path / "flows.jsonl", _free_port()
    stderr = open(tmp_path / "agent.log", "wb")
    agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                       "--config", str(config), "--interfaces", "vh*,br0", "--listen", f"127.0.0.1:{port}",
                       "--events", str(events), "--flows", str(flows), stderr=stderr, cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")
    assert _get(node, port, "/healthz") == (200, "ok\n")

    client, late = node.pod_ns("client"), None
    for url in ("http://10.77.0.3:8080/", "http://[fd77::3]:8080/", "http://10.77.0.4:8080/"):
        assert node.run(client, "curl", "-sf", "-o", "/dev/null", "-m", "5", url, check=False).returncode == 0, url
    for version in ("-tls1_3", "-tls1_2"):
        node.run(client, "openssl", "s_client", version, "-connect", "10.77.0.4:8443", timeout=10)
    for url in ("http://10.77.0.5:5432/", "http://[fd77::5]:5432/"):  # denied, and nobody listens: SYN, RST
        assert node.run(client, "curl", "-s", "-m", "5", url, check=False).returncode == 7

    late = node.add_pod("late")  # a pod started after the agent: its veth must be picked up
    metrics = lambda: _samples(_get(node, port, "/metrics")[1])
    _wait(lambda: metrics().get(("flowwarden_capture_interfaces", ())) == 6, 10, "the new interface")
    assert node.run(late, "curl", "-s", "-m", "5", "http://10.77.0.5:5432/", check=False).returncode == 7

    # Closed flows end on the wall clock (closed_linger) while the agent runs.
    _wait(lambda: metrics().get(("flowwarden_flows_total", (("verdict", "deny"),))) == 3, 10, "3 denied flows")
    m = metrics()
    assert m[("flowwarden_flows_total", (("verdict", "allow"),))] == 5
    assert m[("flowwarden_capture_kernel_drops_total", (("interface", "vh-client"),))] == 0
    assert m[("flowwarden_capture_kernel_drops_total", (("interface", "br0"),))] == 0
    assert m[("flowwarden_capture_duplicates_total", ())] > 0
    assert ("flowwarden_packets_dropped_total", (("reason", "full"), ("stage", "queue"))) not in m
    assert m[("process_resident_memory_bytes", ())] > 0
    assert any(name == "flowwarden_build_info" for name, _labels in m)
    assert m[("flowwarden_judge_duration_seconds_count", (("judge", "netpol"),))] == 8
    # Each group's first line is out within a second of its verdict; repeats wait for the window (600 s).
    _wait(lambda: events.read_bytes().count(b"\n") == 4, 2, "the first line of each event group")
    first_lines = sorted((_project(e) for e in map(orjson.loads, events.read_bytes().splitlines())), key=repr)
    assert first_lines == sorted((e for e in EXPECTED if not e["follow_up"]), key=repr)

    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    stderr.close()
    log_lines = (tmp_path / "agent.log").read_text().splitlines()
    assert all(json.loads(line)["msg"] for line in log_lines)  # structured, one object a line

    got = sorted((_project(e) for e in map(orjson.loads, events.read_bytes().splitlines())), key=repr)
    assert got == sorted(EXPECTED, key=repr)
    records = [orjson.loads(line) for line in flows.read_bytes().splitlines()]
    assert len(records) == 8
    denied = [r for r in records if r["verdict"] == "deny"]
    # Seen on the pod's veth, the bridge and the peer's veth: still one SYN and one RST each.
    assert [(r["packets_src"], r["packets_dst"]) for r in denied] == [(1, 1)] * 3


def _project(event: dict) -> dict:
    """The fields that are the same on every run (no ports, times or counters of ACKs)."""
    return {"kind": event["kind"], "severity": event["severity"], "protocol": event["protocol"],
            "src": {k: event["src"][k] for k in ("ip", "kind", "namespace", "pod")},
            "dst": {k: event["dst"][k] for k in ("ip", "port", "kind", "namespace", "pod")},
            "established": event["established"], "policies": event["policies"], "count": event["count"],
            "app": event["app"], "follow_up": event["follow_up"], **({"packets": event["packets"]} if event["kind"] == "policy-violation" else {})}


def _ep(pod: str, *, port: int | None = None, v6: bool = False) -> dict:
    ns, _labels, _ann, n = PODS[pod]
    ep = {"ip": (V6 if v6 else V4).format(n), "kind": "pod", "namespace": ns, "pod": pod}
    return {**ep, "port": port} if port else ep


_REFUSED = {"kind": "policy-violation", "severity": "warning", "protocol": "TCP", "established": False,
            "policies": ["data/deny-all"], "count": 1, "app": None, "packets": 2}  # judged at the RST: SYN, RST
EXPECTED = [
    # Refused (never established): a warning, not an enforcement gap. Over IPv4, then IPv6: one group
    # of attempts, its first line at once, the second attempt in a follow-up when the window ends.
    {**_REFUSED, "src": _ep("client"), "dst": _ep("db", port=5432), "follow_up": False},
    {**_REFUSED, "src": _ep("client"), "dst": _ep("db", port=5432), "follow_up": True},
    {**_REFUSED, "src": _ep("late"), "dst": _ep("db", port=5432), "follow_up": False},
    {"kind": "plaintext", "severity": "critical", "protocol": "TCP", "src": _ep("client"),
     "dst": _ep("secure", port=8080), "established": True, "policies": [], "count": 1, "app": "http",
     "follow_up": False},
    {"kind": "tls-version", "severity": "warning", "protocol": "TCP", "src": _ep("client"),
     "dst": _ep("secure", port=8443), "established": True, "policies": [], "count": 1, "app": "tls",
     "follow_up": False},
]


def test_a_bad_config_fails_at_start_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("events:\n  windw: 60\n")
    done = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--cluster", str(tmp_path / "none.json"),
                           "--config", str(config), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30, cwd=str(ROOT))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"flowwarden: error: {config}: events.windw: unknown setting (known: window, max_groups)"]


def test_the_shipped_configmap_is_a_valid_config(tmp_path):
    import yaml

    from agent.config import load_config
    doc = yaml.safe_load((ROOT / "daemonset" / "configmap.yaml").read_text())
    path = tmp_path / "flowwarden.yaml"
    path.write_text(doc["data"]["flowwarden.yaml"])
    config = load_config(path)
    assert config.flows.tcp_timeout == 120 and config.events.window == 60


def test_a_missing_kubeconfig_is_one_line_for_snapshot_and_replay(tmp_path, capsys):
    from agent.cli import main
    missing = tmp_path / "nope.kubeconfig"
    for argv in (["snapshot", "--kubeconfig", str(missing)],
                 ["evaluate", "--kubeconfig", str(missing), "--flows", str(tmp_path / "flows.jsonl")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"flowwarden: error: kubeconfig {missing}: no such file", err


def test_config_accepts_the_daemonsets_configmap_manifest_itself(tmp_path, capsys):
    from agent.cli import main
    from agent.config import load_config
    manifest = ROOT / "daemonset" / "configmap.yaml"
    config = load_config(manifest)
    assert config.flows.tcp_timeout == 120 and config.source == str(manifest)
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {other.yaml: 'a: 1'}\n")
    assert main(["replay", str(ROOT / "pcaps" / "dns" / "capture.pcap"), "--cluster",
                 str(ROOT / "pcaps" / "dns" / "cluster.json"), "--config", str(other)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"flowwarden: error: {other}: a ConfigMap without data.flowwarden.yaml")
