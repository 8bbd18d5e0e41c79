"""Live capture benchmark (root): real connections through veth pairs, the agent watching.

Builds a throw-away node namespace with a bridge and two pod namespaces (client,
server), starts `flowwarden run` inside the node namespace on `vh*,br0` (every
packet seen twice: the dedup is part of the cost), then

1. short connections: client processes connect, send a request, read the reply
   and close, as fast as they can (or at `--rate` per second) for `--seconds`;
2. bulk: one connection streams data as fast as it can for `--seconds`.

After each phase it scrapes /metrics and reports new connections/s handled (and
whether any kernel or queue drop happened), packets/s the agent saw (after the
kernel filter), agent CPU seconds per 10,000 connections, and RSS. Everything it
creates is removed at the end. Usage: bench_live.py [--seconds 10] [--clients 2] [--rate 0]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")

SERVER = r"""
import os, socket, sys
port, workers = int(sys.argv[1]), int(sys.argv[2])
for _ in range(workers - 1):
    if os.fork() == 0:
        break
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("0.0.0.0", port)); s.listen(4096)
while True:
    c, _ = s.accept()
    if port == 9000:
        while c.recv(1 << 20):
            pass
    else:
        c.recv(256); c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
    c.close()
"""

CLIENT = r"""
import os, socket, sys, time
host, seconds, procs, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r, w = os.pipe()
for i in range(procs):
    if os.fork() == 0:
        os.close(r)
        n, end, gap = 0, time.time() + seconds, (procs / rate) if rate else 0
        nxt = time.time()
        while time.time() < end:
            c = socket.create_connection((host, 8080))
            c.sendall(b"GET / HTTP/1.0\r\n\r\n"); c.recv(256); c.close()
            n += 1
            if gap:
                nxt += gap
                d = nxt - time.time()
                if d > 0:
                    time.sleep(d)
        os.write(w, b"%d\n" % n)
        os._exit(0)
os.close(w)
total = sum(int(x) for x in os.fdopen(r).read().split())
print(total)
"""

BULK = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], 9000))
buf, end, sent = b"x" * (1 << 20), time.time() + float(sys.argv[2]), 0
while time.time() < end:
    c.sendall(buf); sent += len(buf)
c.close()
print(sent)
"""


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def metrics(node: str, port: int) -> dict[str, float]:
    text = subprocess.run(in_ns(node, "curl", "-s", "-m", "10", f"http://127.0.0.1:{port}/metrics"),
                          capture_output=True, text=True)
    text = text.stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            base = name.split("{")[0]
            out[base] = out.get(base, 0.0) + float(value)
            out[name] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--interfaces", default="vh*,br0", help="what the agent captures on (br0 adds a third copy)")
    ap.add_argument("--rate", type=float, default=0.0, help="connections/s to aim at (0: as fast as possible)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_live: skipped (needs root for network namespaces)")
        return
    tag = uuid.uuid4().hex[:6]
    node, client, server = (f"fwbench-{tag}-{x}" for x in ("node", "client", "server"))
    made: list[str] = []
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="fwbench-"))
    try:
        for ns in (node, client, server):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh(*in_ns(node, "ip", "link", "add", "br0", "type", "bridge"))
        sh(*in_ns(node, "ip", "link", "set", "br0", "up"))
        sh(*in_ns(node, "ip", "link", "set", "lo", "up"))
        for i, ns in enumerate((client, server), start=2):
            sh("ip", "link", "add", f"vh{i}", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(*in_ns(node, "ip", "link", "set", f"vh{i}", "master", "br0", "up"))
            sh(*in_ns(ns, "ip", "addr", "add", f"10.88.0.{i}/24", "dev", "eth0"))
            sh(*in_ns(ns, "ip", "link", "set", "eth0", "up"))
            sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        for port in (8080, 9000):
            procs.append(subprocess.Popen(in_ns(server, sys.executable, "-c", SERVER, str(port), "2")))
        cluster = tmp / "cluster.json"
        cluster.write_bytes(orjson.dumps({"kind": "List", "items": [
            {"kind": "Namespace", "metadata": {"name": "bench"}},
            *({"kind": "Pod", "metadata": {"name": n, "namespace": "bench", "uid": n, "labels": {"app": n}},
               "status": {"phase": "Running", "podIPs": [{"ip": f"10.88.0.{i}"}]}}
              for i, n in ((2, "client"), (3, "server")))]}))
        config = tmp / "flowwarden.yaml"
        config.write_text("flows:\n  closed_linger: 0.5\n  tcp_timeout: 30\n")
        port = 9847
        agent = subprocess.Popen(in_ns(node, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                                       "--config", str(config), "--interfaces", args.interfaces,
                                       "--listen", f"127.0.0.1:{port}", "--events", os.devnull),
                                 cwd=ROOT, stderr=open(tmp / "agent.log", "wb"))
        procs.append(agent)
        deadline = time.time() + 20
        want = 3 if "br0" in args.interfaces else 2
        while metrics(node, port).get("flowwarden_capture_interfaces", 0) < want and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        print(f"live: capturing on {args.interfaces}; {args.clients} client processes"
              + (f" at {args.rate:,.0f} connections/s" if args.rate else " as fast as they can"))
        short_phase(args, node, client, port, agent.pid)
        bulk_phase(args, node, client, port, agent.pid)
        agent.send_signal(signal.SIGTERM)
        started = time.time()
        agent.wait(10)
        print(f"live: SIGTERM -> exit {agent.returncode} in {time.time() - started:.2f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in made:  # the server's forked workers die with their namespace's pids killed first
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def short_phase(args, node: str, client: str, port: int, pid: int) -> None:
    before, cpu0, t0 = metrics(node, port), cpu_seconds(pid), time.time()
    done = sh(*in_ns(client, sys.executable, "-c", CLIENT, "10.88.0.3", str(args.seconds),
                     str(args.clients), str(args.rate)), text=True)
    elapsed = time.time() - t0
    connections = int(done.stdout.strip())
    time.sleep(2.5)  # closed flows end after closed_linger on the next tick
    after, cpu1 = metrics(node, port), cpu_seconds(pid)
    report("short connections", before, after, cpu1 - cpu0, elapsed, pid, connections=connections)


def bulk_phase(args, node: str, client: str, port: int, pid: int) -> None:
    before, cpu0, t0 = metrics(node, port), cpu_seconds(pid), time.time()
    done = sh(*in_ns(client, sys.executable, "-c", BULK, "10.88.0.3", str(args.seconds)), text=True)
    elapsed = time.time() - t0
    sent = int(done.stdout.strip())
    time.sleep(2.5)
    after, cpu1 = metrics(node, port), cpu_seconds(pid)
    print(f"live bulk: {sent * 8 / elapsed / 1e9:.2f} Gbit/s over one connection for {elapsed:.1f} s")
    report("bulk", before, after, cpu1 - cpu0, elapsed, pid)


def report(phase: str, before: dict, after: dict, cpu: float, elapsed: float, pid: int, *,
           connections: int | None = None) -> None:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    if not after:
        print(f"live {phase}: /metrics did not answer")
    flows = d.get("flowwarden_flows_total", 0.0)
    kernel = d.get("flowwarden_capture_kernel_packets_total", 0.0)
    kdrops = d.get("flowwarden_capture_kernel_drops_total", 0.0)
    qdrops = d.get('flowwarden_packets_dropped_total{reason="full",stage="queue"}', 0.0)
    packets = d.get("flowwarden_packets_total", 0.0)
    print(f"live {phase}: " + (f"{connections:,} connections made = {connections / elapsed:,.0f}/s; " if connections
                               else "") +
          f"{flows:,.0f} flows judged; kernel passed {kernel:,.0f} packets ({kernel / elapsed:,.0f}/s), "
          f"{d.get('flowwarden_capture_duplicates_total', 0):,.0f} duplicates skipped, "
          f"{packets:,.0f} packets into the flow table ({packets / elapsed:,.0f}/s); "
          f"kernel drops {kdrops:,.0f}, queue drops {qdrops:,.0f}; agent CPU {cpu:.2f} s "
          f"({cpu / elapsed:.0%} of a core)" + (f" = {cpu / connections * 10000:.2f} s per 10,000 connections"
                                                if connections else "") + f"; RSS {rss_mb(pid):.0f} MiB")


if __name__ == "__main__":
    main()
