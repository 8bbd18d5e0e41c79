"""`flowwarden run` keeps the flows whose outcome it knows in the compact table, live.

In the lab of tests/test_run.py, with conntrack off (the compact table is not used with the
conntrack merge), client probes 200 closed ports of db (data/deny-all: each a refused, denied
attempt) and makes 40 HTTP requests to web (allowed). Every connection is judged, the probes are
one event group (its first line at once, the other 199 in one follow-up at SIGTERM), and nearly
every flow lived in the compact table, never a Python object.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import orjson

from tests.test_run import (  # noqa: F401 (node is a fixture)
    ROOT, Node, _free_port, _get, _samples, _wait, cluster_objects, node,
)

PROBES, REQUESTS = 200, 40
CLIENT = f"""
import socket, urllib.request
for port in range(6000, 6000 + {PROBES}):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("10.77.0.5", port))
    except OSError:
        pass
    s.close()
for _ in range({REQUESTS}):
    urllib.request.urlopen("http://10.77.0.3:8080/", timeout=5).read()
"""


def test_known_outcomes_keep_flows_compact_and_every_connection_is_judged(node, tmp_path):
    for pod in ("client", "web", "db"):
        node.add_pod(pod)
    node.start(node.pod_ns("web"), sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0",
               "--directory", str(tmp_path))
    _wait(lambda: ":8080 " in node.run(node.pod_ns("web"), "ss", "-ltnH").stdout.decode(), 10, "web:8080")
    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text("capture:\n  conntrack: false\nflows:\n  closed_linger: 0.5\nevents:\n  window: 600\n")
    events, port = tmp_path / "events.jsonl", _free_port()
    agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                       "--config", str(config), "--interfaces", "vh*", "--listen", f"127.0.0.1:{port}",
                       "--events", str(events), stderr=open(tmp_path / "agent.log", "wb"), cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")

    node.run(node.pod_ns("client"), sys.executable, "-c", CLIENT, timeout=60)
    metrics = lambda: _samples(_get(node, port, "/metrics")[1])  # noqa: E731
    _wait(lambda: metrics().get(("flowwarden_flows_total", (("verdict", "deny"),))) == PROBES, 15, "every probe")
    _wait(lambda: metrics().get(("flowwarden_flows_total", (("verdict", "allow"),))) == REQUESTS, 15, "every request")
    # Closed flows end after closed_linger: then they have lived in the compact table to their end.
    _wait(lambda: metrics()[("flowwarden_compact_flows_total", ())] >= PROBES + REQUESTS - 10, 15, "compact flows")
    assert events.read_bytes().count(b"\n") == 1  # the group's first line, at once

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    first, follow_up = map(orjson.loads, events.read_bytes().splitlines())
    assert (first["follow_up"], first["count"], follow_up["follow_up"], follow_up["count"]) == (
        False, 1, True, PROBES - 1)
    assert follow_up["ports"] == {"count": PROBES - 1, "min": 6001, "max": 6000 + PROBES - 1}
