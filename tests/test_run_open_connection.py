"""`flowwarden run` judges a connection at first sight, while it is still open.

In the namespaces of tests/test_run.py (its `node` fixture and cluster objects),
the client pod opens ONE TCP connection to each of

- db:5432, denied by data/deny-all: a `policy-violation` (critical, the CNI of
  this bare bridge lets it through: an enforcement gap);
- secure:8080, whose pod requires TLS (flowwarden.io/require-tls=true): a
  `plaintext` finding, its first client bytes being an HTTP request line;

and keeps both open and busy for 20 s (one line each way every 0.5 s, both at
once). The client records the wall time its connect() returned; the test polls
the events file every 0.05 s. Each connection's line must be there within 2 s
of that moment, with /metrics counting the violation by then and the
connection still open; it stays the only line for that connection after the
connection closed and after SIGTERM (one connection: no follow-up line).
"""
from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tests.test_run import (  # noqa: F401 (node is a fixture)
    PODS, ROOT, V4, Node, _free_port, _get, _samples, _wait, cluster_objects, node,
)

SECONDS, EVERY = 20.0, 0.5  # how long each connection stays open, and its pace
FIRST_SIGHT = 2.0  # seconds from connect() to the event line
POLL = 0.05

# A line echo server: every line a client sends comes back.
SERVER = """
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
def serve(c):
    with c, c.makefile("rb") as lines:
        for line in lines:
            c.sendall(line)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# One connection, kept open SECONDS, one request line and its echo every EVERY s.
# First stdout line: the local port, the wall time connect() returned and the time the
# first bytes were sent; last line: the exchanges made and when the socket closed.
CLIENT = """
import json, socket, sys, time
host, port, seconds, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=5)
connected = time.time()
start = time.monotonic()
lines = s.makefile("rb")
for n in range(round(seconds / every)):
    line = b"GET /tick/%d HTTP/1.1\\r\\n" % n
    s.sendall(line + b"\\r\\n")  # a whole request head: its first segment classifies it
    if n == 0:
        print(json.dumps({"port": s.getsockname()[1], "connected": connected, "first_bytes": time.time()}),
              flush=True)
    if lines.readline() != line or lines.readline() != b"\\r\\n":
        sys.exit("bad echo")
    time.sleep(max(0.0, start + (n + 1) * every - time.monotonic()))
s.close()
print(json.dumps({"exchanges": n + 1, "closed": time.time()}), flush=True)
"""


@dataclass
class Connection:
    """One client connection and what the test saw of it."""
    kind: str  # the finding expected
    dst_pod: str
    dst_port: int
    process: subprocess.Popen
    src_port: int = 0
    connected: float = 0.0  # wall time connect() returned
    first_bytes: float = 0.0
    seen: float | None = None  # wall time the test first saw its event line
    seen_while_open: bool = False
    metrics_then: dict = field(default_factory=dict)
    lines_while_open: int = 0

    def mine(self, event: dict) -> bool:
        return (event["kind"] == self.kind and event["src"]["port"] == self.src_port
                and event["dst"]["port"] == self.dst_port and event["dst"]["ip"] == V4.format(PODS[self.dst_pod][3]))

    @property
    def delay(self) -> float | None:
        return None if self.seen is None else self.seen - self.connected

    @property
    def labels(self) -> tuple:
        return (("dst_namespace", PODS[self.dst_pod][0]), ("kind", self.kind), ("rule", ""),
                ("severity", "critical"), ("side", "both"), ("src_namespace", PODS["client"][0]))


def _events(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]


def _first_line(process: subprocess.Popen, timeout: float, what: str) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode() if ready else ""
    assert line, f"{what}: no output within {timeout} s (exit code {process.poll()})"
    return line


def _start_server(node: Node, pod: str, port: int) -> None:
    server = node.start(node.pod_ns(pod), sys.executable, "-c", SERVER, str(port), stdout=subprocess.PIPE)
    assert _first_line(server, 10, f"server on {pod}:{port}") == "listening\n"


def _violations(node: Node, port: int) -> dict:
    return {labels: value for (name, labels), value in _samples(_get(node, port, "/metrics")[1]).items()
            if name == "flowwarden_violations_total"}


def test_an_open_connection_is_judged_within_two_seconds_and_reported_once(node, tmp_path):
    for pod in ("client", "secure", "db"):
        node.add_pod(pod)
    _start_server(node, "db", 5432)
    _start_server(node, "secure", 8080)
    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text("flows:\n  closed_linger: 0.5\nevents:\n  window: 600\n")  # no window closes in this test
    events, port = tmp_path / "events.jsonl", _free_port()
    stderr = open(tmp_path / "agent.log", "wb")
    agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                       "--config", str(config), "--interfaces", "vh*,br0", "--listen", f"127.0.0.1:{port}",
                       "--events", str(events), stderr=stderr, cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")
    assert events.read_bytes() == b""

    client = node.pod_ns("client")
    connections = [
        Connection("policy-violation", "db", 5432, node.start(
            client, sys.executable, "-c", CLIENT, V4.format(PODS["db"][3]), "5432", str(SECONDS), str(EVERY),
            stdout=subprocess.PIPE)),
        Connection("plaintext", "secure", 8080, node.start(
            client, sys.executable, "-c", CLIENT, V4.format(PODS["secure"][3]), "8080", str(SECONDS), str(EVERY),
            stdout=subprocess.PIPE)),
    ]
    for c in connections:
        started = json.loads(_first_line(c.process, 10, f"client to {c.dst_pod}:{c.dst_port}"))
        c.src_port, c.connected, c.first_bytes = started["port"], started["connected"], started["first_bytes"]

    # Watch the events file while both connections are open (and for as long as they are).
    deadline = time.monotonic() + SECONDS + 10
    while any(c.process.poll() is None for c in connections) and time.monotonic() < deadline:
        now, got = time.time(), _events(events)
        for c in connections:
            if c.process.poll() is not None:  # closed: what it wrote since is checked below
                continue
            c.lines_while_open = sum(map(c.mine, got))
            if c.seen is None and c.lines_while_open:
                c.seen, c.metrics_then = now, _violations(node, port)
                c.seen_while_open = c.process.poll() is None  # still open after the scrape
        time.sleep(POLL)
    for c in connections:
        assert c.process.wait(timeout=10) == 0, f"client to {c.dst_pod}:{c.dst_port} failed"
        done = json.loads(c.process.stdout.readline())
        assert done["exchanges"] == round(SECONDS / EVERY) and done["closed"] - c.connected >= SECONDS - EVERY
    for c in connections:
        when = "never while it was open" if c.delay is None else f"{c.delay:.3f} s"
        print(f"\n{c.kind} {c.dst_pod}:{c.dst_port} (src port {c.src_port}): event line after connect() {when}"
              + ("" if c.delay is None else f", after the first client bytes {c.seen - c.first_bytes:.3f} s"))

    for c in connections:
        first = f"after {c.delay:.3f} s" if c.delay is not None else f"never during its {SECONDS:g} s"
        assert c.delay is not None and c.delay <= FIRST_SIGHT, (
            f"{c.kind}: no event line within {FIRST_SIGHT:g} s of connect() to {c.dst_pod}:{c.dst_port} "
            f"(first seen: {first})")
        assert c.seen_while_open, f"{c.kind}: the connection had closed when its line appeared"
        assert c.lines_while_open == 1, f"{c.kind}: {c.lines_while_open} lines while the connection was open"
        assert c.metrics_then.get(c.labels) == 1, (c.kind, c.metrics_then)
        assert sum(v for labels, v in c.metrics_then.items() if ("kind", c.kind) in labels) == 1, c.metrics_then

    # The connections have closed: once the agent ended their flows, still one line each.
    _wait(lambda: _samples(_get(node, port, "/metrics")[1]).get(("flowwarden_flows_active", ())) == 0, 10,
          "the closed flows to end")
    time.sleep(1.5)  # a tick of the agent's loop after that
    _check_events(events, connections)

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=5) == 0
    stderr.close()
    _check_events(events, connections)


def _check_events(path: Path, connections: list[Connection]) -> None:
    """Exactly one line per connection, and no other line."""
    got = _events(path)
    assert len(got) == len(connections), got
    for c in connections:
        mine = [e for e in got if c.mine(e)]
        assert len(mine) == 1, (c.kind, got)
        event = mine[0]
        assert {"kind": event["kind"], "severity": event["severity"], "protocol": event["protocol"],
                "established": event["established"], "follow_up": event.get("follow_up"),
                "src": (event["src"]["namespace"], event["src"]["pod"]),
                "dst": (event["dst"]["namespace"], event["dst"]["pod"], event["dst"]["port"])} == {
            "kind": c.kind, "severity": "critical", "protocol": "TCP", "established": True, "follow_up": False,
            "src": (PODS["client"][0], "client"), "dst": (PODS[c.dst_pod][0], c.dst_pod, c.dst_port)}
        if c.kind == "policy-violation":
            assert event["policies"] == ["data/deny-all"]
        else:
            assert event["app"] == "http"
