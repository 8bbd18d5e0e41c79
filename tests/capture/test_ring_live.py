"""Thousands of real connections through the rings of `flowwarden run`: every one judged, none lost.

The agent runs in a throw-away node namespace (tests/test_run.py's `Node`: a bridge and
one veth per pod) on `vh*,br0`, so every packet is read three times; a client pod makes
CONNECTIONS short connections to a server pod as fast as it can. /metrics must then
count each connection as one judged flow with no kernel drop and no queue drop, with
one capture worker and with two in a PACKET_FANOUT group, and six packets per connection
reaching the flow table (SYN, SYN-ACK, request, reply, two FINs: pure ACKs stay in the
kernel): with two workers every copy of a packet must reach the worker that saw the first,
or its dedup would let the copies through. Namespaces and processes go in the fixture teardown.
"""
from __future__ import annotations

import sys

import orjson
import pytest

from tests.test_run import ROOT, _free_port, _get, _samples, _wait, cluster_objects, node  # noqa: F401 (fixture)

CONNECTIONS = 3000
SERVER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(4096)
while True:
    c, _ = s.accept()
    c.recv(256); c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok"); c.close()
"""
CLIENT = r"""
import socket, sys
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("10.77.0.3", 8080))
    c.sendall(b"GET / HTTP/1.0\r\n\r\n"); c.recv(256); c.close()
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_thousands_of_connections_through_the_rings_are_all_judged_with_no_drop(node, tmp_path, workers):
    client, web = node.add_pod("client"), node.add_pod("web")
    node.start(web, sys.executable, "-c", SERVER)
    _wait(lambda: ":8080 " in node.run(web, "ss", "-ltnH").stdout.decode(), 10, "the server")
    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text(f"flows:\n  closed_linger: 0.2\ncapture:\n  conntrack: false\n  workers: {workers}\n")
    port = _free_port()
    node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster), "--config", str(config),
               "--interfaces", "vh*,br0", "--listen", f"127.0.0.1:{port}", "--events", str(tmp_path / "events"),
               stderr=open(tmp_path / "agent.log", "wb"), cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")
    metrics = lambda: _samples(_get(node, port, "/metrics")[1])
    _wait(lambda: metrics().get(("flowwarden_capture_interfaces", ())) == 3, 10, "three interfaces")

    node.run(client, sys.executable, "-c", CLIENT, str(CONNECTIONS), timeout=120)

    judged = lambda m: sum(v for (name, _labels), v in m.items() if name == "flowwarden_flows_total")
    _wait(lambda: judged(metrics()) >= CONNECTIONS, 15, f"{CONNECTIONS} judged flows")
    m = metrics()
    assert judged(m) == CONNECTIONS  # each once: no copy from the bridge or the peer veth counted again
    kernel = {labels: v for (name, labels), v in m.items() if name == "flowwarden_capture_kernel_drops_total"}
    assert set(kernel) >= {(("interface", i),) for i in ("vh-client", "vh-web", "br0")}
    assert sum(kernel.values()) == 0
    assert ("flowwarden_packets_dropped_total", (("reason", "full"), ("stage", "queue"))) not in m
    assert m[("flowwarden_capture_duplicates_total", ())] >= 2 * 5 * CONNECTIONS  # 3 copies of >= 5 packets each
    assert 6 * CONNECTIONS <= m[("flowwarden_packets_total", ())] <= 6 * CONNECTIONS + 20
    assert m[("flowwarden_capture_workers", ())] == workers
    frames = [v for (name, _l), v in m.items() if name == "flowwarden_capture_worker_frames_total"]
    assert len(frames) == workers and all(f > 0 for f in frames)  # the fanout spreads the connections
    assert 0 <= m[("flowwarden_capture_ring_fill_ratio", ())] <= 1
