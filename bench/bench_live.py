"""Live capture benchmark (root): real connections through veth pairs, the agent watching.

Builds a throw-away node namespace with a bridge and two pod namespaces (client,
server), starts `flowwarden run` inside the node namespace on `vh*,br0` (every
packet seen three times: the dedup is part of the cost), then

0. idle: nothing happens for `--seconds`;
1. short connections at each rate of `--rates` (0 = as fast as the clients can): client
   processes connect, send a request, read the reply and close, for `--seconds`;
2. bulk: one connection streams data as fast as it can for `--seconds`.

After each phase it scrapes /metrics and reports new connections/s handled (and
whether any kernel or queue drop happened), packets/s the agent saw (after the
kernel filter), agent CPU seconds per 10,000 connections, and RSS. Then, when the
`suricata` binary is there (`make bench-tools` installs Suricata 7 from Debian
bookworm-backports), Suricata runs alone in AF_PACKET mode on the same interfaces
(no rules, no eve output: capture, decode, flows, TCP reassembly and app-layer
parsing) under the same first short-connection load: its CPU and kernel drops.
Everything it creates is removed at the end.
Usage: bench_live.py [--seconds 8] [--clients 4] [--rates 5000,0] [--workers 1] [--ring SIZExBLOCKS]
[--no-suricata]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import yaml

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


def capture_cpu_seconds(pid: int) -> float:
    """CPU of the agent's capture worker threads (named fw-capture-N): ring reading, dedup, budget."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("fw-capture"):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLK
        except OSError:
            pass
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Lab:
    """A node namespace with a bridge and two pod namespaces (client 10.88.0.2, server 10.88.0.3 serving
    short replies on 8080 and a sink on 9000), removed on exit. Each tool is measured on a fresh one:
    tens of thousands of connections leave state behind (TIME_WAIT, the bridge's conntrack entries)."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.node, self.client, self.server = (f"fwbench-{tag}-{x}" for x in ("node", "client", "server"))
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Lab":
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        node, client, server = self.node, self.client, self.server
        for ns in (node, client, server):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
        sh(*in_ns(node, "ip", "link", "add", "br0", "type", "bridge"))
        sh(*in_ns(node, "ip", "link", "set", "br0", "up"))
        sh(*in_ns(node, "ip", "link", "set", "lo", "up"))
        for i, ns in enumerate((client, server), start=2):
            sh("ip", "link", "add", f"vh{i}", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(*in_ns(node, "ip", "link", "set", f"vh{i}", "master", "br0", "up"))
            sh(*in_ns(ns, "ip", "addr", "add", f"10.88.0.{i}/24", "dev", "eth0"))
            sh(*in_ns(ns, "ip", "link", "set", "eth0", "up"))
            sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        # Phase after phase, thousands of connections a second would run the client out of
        # ephemeral ports held in TIME_WAIT: a wider range, reused (namespace-local settings).
        sh(*in_ns(client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65535", "net.ipv4.tcp_tw_reuse=1"))
        for port in (8080, 9000):
            self.procs.append(subprocess.Popen(in_ns(server, sys.executable, "-c", SERVER, str(port), "2")))

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in self.made:  # the server's forked workers die with their namespace's pids killed first
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--interfaces", default="vh*,br0", help="what the agent captures on (br0 adds a third copy)")
    ap.add_argument("--rates", default="5000,0", help="connections/s of each short phase (0: as fast as possible)")
    ap.add_argument("--workers", type=int, default=1, help="capture.workers of the agent")
    ap.add_argument("--ring", default="", help="capture.ring_block_size x ring_blocks, e.g. 1048576x8 (default: "
                    "the shipped settings)")
    ap.add_argument("--no-suricata", action="store_true", help="skip the Suricata comparison")
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    if os.geteuid() != 0:
        print("bench_live: skipped (needs root for network namespaces)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="fwbench-"))
    with Lab() as lab:
        flowwarden_phases(args, lab, tmp)
    if not args.no_suricata:
        for stock in (True, False):
            with Lab() as lab:
                suricata_phase(args, lab.node, lab.client, tmp, lab.procs, stock=stock)


def flowwarden_phases(args, lab: Lab, tmp: Path) -> None:
    node, client = lab.node, lab.client
    cluster = tmp / "cluster.json"
    cluster.write_bytes(orjson.dumps({"kind": "List", "items": [
        {"kind": "Namespace", "metadata": {"name": "bench"}},
        *({"kind": "Pod", "metadata": {"name": n, "namespace": "bench", "uid": n, "labels": {"app": n}},
           "status": {"phase": "Running", "podIPs": [{"ip": f"10.88.0.{i}"}]}}
          for i, n in ((2, "client"), (3, "server")))]}))
    config = tmp / "flowwarden.yaml"
    ring = ("  ring_block_size: {}\n  ring_blocks: {}\n".format(*args.ring.split("x"))) if args.ring else ""
    config.write_text(f"flows:\n  closed_linger: 0.5\n  tcp_timeout: 30\ncapture:\n  workers: {args.workers}\n{ring}")
    port = 9847
    agent = subprocess.Popen(in_ns(node, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                                   "--config", str(config), "--interfaces", args.interfaces,
                                   "--listen", f"127.0.0.1:{port}", "--events", os.devnull),
                             cwd=ROOT, stderr=open(tmp / "agent.log", "wb"))
    lab.procs.append(agent)
    deadline = time.time() + 20
    want = 3 if "br0" in args.interfaces else 2
    while metrics(node, port).get("flowwarden_capture_interfaces", 0) < want and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    print(f"live: capturing on {args.interfaces} with {args.workers} capture worker(s)"
          f"{f', rings {args.ring}' if args.ring else ''}; "
          f"{args.clients} client processes")
    idle_phase(args, node, port, agent.pid)
    for rate in args.rates:
        short_phase(args, node, client, port, agent.pid, rate)
    bulk_phase(args, node, client, port, agent.pid)
    agent.send_signal(signal.SIGTERM)
    started = time.time()
    agent.wait(10)
    print(f"live: SIGTERM -> exit {agent.returncode} in {time.time() - started:.2f} s")


def idle_phase(args, node: str, port: int, pid: int) -> None:
    before, cpu0, t0 = metrics(node, port), cpu_seconds(pid), time.time()
    time.sleep(args.seconds)
    elapsed = time.time() - t0
    after, cpu1 = metrics(node, port), cpu_seconds(pid)  # the scrapes themselves are in it
    report("idle", before, after, cpu1 - cpu0, elapsed, pid)


def load(args, client: str, rate: float) -> tuple[int, float]:
    """Short connections from the client namespace for --seconds: (made, seconds taken)."""
    t0 = time.time()
    done = sh(*in_ns(client, sys.executable, "-c", CLIENT, "10.88.0.3", str(args.seconds),
                     str(args.clients), str(rate)), text=True)
    return int(done.stdout.strip()), time.time() - t0


def short_phase(args, node: str, client: str, port: int, pid: int, rate: float) -> None:
    before, cpu0, cap0 = metrics(node, port), cpu_seconds(pid), capture_cpu_seconds(pid)
    connections, elapsed = load(args, client, rate)
    time.sleep(2.5)  # closed flows end after closed_linger on the next tick
    after, cpu1, cap1 = metrics(node, port), cpu_seconds(pid), capture_cpu_seconds(pid)
    report(f"short connections ({f'{rate:,.0f}/s aimed' if rate else 'as fast as possible'})", before, after,
           cpu1 - cpu0, elapsed, pid, connections=connections, capture=cap1 - cap0)


def suricata_phase(args, node: str, client: str, tmp: Path, procs: list, *, stock: bool) -> None:
    """Suricata alone in AF_PACKET mode on the same interfaces, under the first short load: with the
    Debian package's configuration (eve.json with its default event types; no rules installed), or
    (`stock` False) with no output but stats (capture, decode, flows, TCP reassembly, app-layer parsing)."""
    binary = shutil.which("suricata")
    if binary is None:
        print("suricata: not installed (`make bench-tools` installs it from bookworm-backports); not compared")
        return
    names = [n for n in subprocess.run(in_ns(node, "ls", "/sys/class/net"), capture_output=True, text=True)
             .stdout.split() if any(Path(n).match(g) for g in args.interfaces.split(","))]
    conf = yaml.safe_load(Path("/etc/suricata/suricata.yaml").read_text())
    conf["af-packet"] = [{"interface": n, "cluster-id": 90 + i, "cluster-type": "cluster_flow", "threads": 1,
                          "defrag": True, "use-mmap": True, "tpacket-v3": True} for i, n in enumerate(names)]
    if not stock:
        conf["outputs"] = [{"stats": {"enabled": True, "filename": "stats.log", "totals": True, "threads": False}}]
    out = tmp / ("suricata-stock" if stock else "suricata-lean")
    out.mkdir()
    conf["default-log-dir"] = str(out)
    log = out / "suricata.log"
    conf["logging"]["outputs"] = [{"file": {"enabled": True, "level": "info", "filename": str(log)}}]
    path = out / "suricata.yaml"
    path.write_text("%YAML 1.1\n---\n" + yaml.safe_dump(conf, sort_keys=False))
    ids = subprocess.Popen(in_ns(node, binary, "-c", str(path), "--af-packet", "-k", "none", "-l", str(out),
                                 *(() if stock else ("-S", "/dev/null"))),
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    procs.append(ids)
    deadline = time.time() + 60
    while time.time() < deadline and "engine started" not in (log.read_text().lower() if log.exists() else ""):
        time.sleep(0.5)
    rate = args.rates[0]
    cpu0 = cpu_seconds(ids.pid)
    connections, elapsed = load(args, client, rate)
    time.sleep(2.5)
    cpu = cpu_seconds(ids.pid) - cpu0
    rss = rss_mb(ids.pid)
    ids.send_signal(signal.SIGTERM)
    ids.wait(30)
    stats = re.findall(r"device: (\S+): packets: (\d+), drops: (\d+)", log.read_text())
    packets, drops = sum(int(p) for _n, p, _d in stats), sum(int(d) for _n, _p, d in stats)
    print(f"suricata {'stock config (eve.json)' if stock else 'lean (no rules, no eve)'} short connections "
          f"({f'{rate:,.0f}/s aimed' if rate else 'unpaced'}; AF_PACKET cluster_flow on {','.join(names)}): "
          f"{connections:,} connections made = {connections / elapsed:,.0f}/s; read {packets:,} packets, "
          f"kernel drops {drops:,}; CPU {cpu:.2f} s ({cpu / elapsed:.0%} of a core) = "
          f"{cpu / connections * 10000:.2f} s per 10,000 connections; RSS {rss:.0f} MiB")


def bulk_phase(args, node: str, client: str, port: int, pid: int) -> None:
    before, cpu0, cap0, t0 = metrics(node, port), cpu_seconds(pid), capture_cpu_seconds(pid), time.time()
    done = sh(*in_ns(client, sys.executable, "-c", BULK, "10.88.0.3", str(args.seconds)), text=True)
    elapsed = time.time() - t0
    sent = int(done.stdout.strip())
    time.sleep(2.5)
    after, cpu1, cap1 = metrics(node, port), cpu_seconds(pid), capture_cpu_seconds(pid)
    print(f"live bulk: {sent * 8 / elapsed / 1e9:.2f} Gbit/s over one connection for {elapsed:.1f} s")
    report("bulk", before, after, cpu1 - cpu0, elapsed, pid, capture=cap1 - cap0)


def report(phase: str, before: dict, after: dict, cpu: float, elapsed: float, pid: int, *,
           connections: int | None = None, capture: float | None = None) -> None:
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
                                                if connections else "")
          + (f", of which capture threads {capture:.2f} s" if capture is not None else "")
          + f"; RSS {rss_mb(pid):.0f} MiB")


if __name__ == "__main__":
    main()
