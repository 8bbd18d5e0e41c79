"""Generate, deterministically, the "verdict at first sight" replay benchmarks and their cluster file.

Four classic pcaps (Ethernet, IPv4) and one cluster.json, in OUT_DIR:

- flood.pcap: 2,000,000 TCP SYNs from random public IPv4 sources and ports to one pod
  port (team-0/app-0 10.0.0.2:8080, whose namespace admits ingress only from pods of
  same-tier namespaces), never answered, ~200,000 packets/s of capture time: every SYN
  is a denied attempt from outside;
- scan.pcap: `nmap -sS -p-` from team-1/app-3 to team-6/app-4 (isolated, other tier):
  a SYN to each of the 65,535 ports in random order from one source port, each answered
  by a RST+ACK (closed port): 131,070 packets, every probe denied;
- allowed.pcap: 1,000,000 distinct UDP flows of 3 packets (DNS: A query, answer, AAAA
  query; or a gossip-like ping, ack, ack on 7946) between pods of namespaces no policy
  selects: nothing to report;
- mix20.pcap: a node's mix of ~1,000,000 packets in 50,000 flows of ~20 packets: 40 %
  TLS 1.3 (handshake, then encrypted application data records), 35 % HTTP, 25 % DNS
  (a resolver socket asking ~10 questions); pod to pod, pod to Service ClusterIP, pod to
  external; 3 % of flows 802.1Q-tagged and 3 % VXLAN-encapsulated; ~2 % of the pod/Service
  flows are denied by policy, as on a real node;
- cluster.json: gen_replay.py's cluster (20 namespaces x 100 pods, "tier-only" policies on
  every third namespace) plus kube-system with CoreDNS and the kube-dns Service, one
  Service and EndpointSlice per app of each namespace, and the two nodes whose addresses
  carry the VXLAN traffic; a `kubectl get -A -o json` List;
- attacks.json: packets and flows of each capture (written last: its presence means the
  set is complete).

Frames are packed with struct, as gen_replay.py does (whose helpers are reused); the
same seed gives the same bytes. `--scale` shrinks every capture for quick trials.

    python bench/gen_attacks.py OUT_DIR [--scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_replay import (  # noqa: E402  (after the path: bench/ is not a package)
    EPOCH, ETH, NAMESPACES, PODS_PER_NS, SERVER_HELLO, client_hello, cluster as replay_cluster, frame, ip4,
    pod_ip, tcp, udp)

SEED = 2026
FLOOD_PACKETS = 2_000_000
FLOOD_GAP_US = 5  # 200,000 packets/s of capture time
SCAN_PORTS = 65_535
SCAN_GAP_US = 20  # 50,000 probes/s (nmap -T4 against a pod on the node)
SCAN_RTT_US = 70
ALLOWED_FLOWS = 1_000_000
ALLOWED_GAP_US = 10  # 100,000 packets/s
MIX_FLOWS = 50_000
MIX_GAP_US = 20  # 50,000 packets/s, as gen_replay.py
START_US = int(EPOCH) * 1_000_000

# Who is who (pod_ip(namespace index, pod index) of gen_replay.py).
FLOOD_DST = (0, 0, 8080)  # team-0/app-0:8080 ("http"), team-0 is tier b and isolated
SCAN_SRC, SCAN_DST = (1, 3), (6, 4)  # team-1 (tier a) -> team-6 (tier b, isolated)
KUBE_SYSTEM = NAMESPACES  # namespace index of kube-system, after the team-N namespaces
COREDNS_PODS = 2
KUBE_DNS_IP = "10.96.0.10"
APPS_PER_NS = 10  # pods of team-N are labelled app: app-(pod % 10); one Service each
NODE_IPS = ("192.168.0.1", "192.168.0.2")  # the VXLAN ends of gen_replay.frame(style=2)
EXTERNAL_TLS = (("151.101.1.69", "registry.npmjs.org"), ("142.250.74.78", "storage.googleapis.com"),
                ("52.216.8.189", "s3.amazonaws.com"), ("140.82.121.4", "api.github.com"),
                ("104.16.133.229", "hooks.slack.com"), ("34.120.177.193", "sentry.io"))
EXTERNAL_HTTP = ("93.184.215.14", "151.101.2.132", "199.232.34.132")
UPSTREAM_DNS = ("1.1.1.1", "8.8.8.8")
# First octets never drawn as flood sources: this network, private, CGNAT, loopback,
# link-local, 172.16/12 and 192.168/16 (whole /8s, to stay simple), benchmarking, multicast and up.
NOT_PUBLIC = frozenset((0, 10, 100, 127, 169, 172, 192, 198, *range(224, 256)))

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # as gen_replay.py, Ethernet
RECORD = struct.Struct("<IIII")
# frame(tcp(src, dst, sport, dport, seq, ack, flags)) of gen_replay.py in one pack, for the flood.
ETH_IP_TCP = struct.Struct("!14sBBHHHBBH4s4sHHIIBBHHH")


class PcapWriter:
    """Classic pcap, microsecond timestamps, written in large chunks."""

    def __init__(self, path: Path):
        self.file = path.open("wb")
        self.file.write(PCAP_HEADER)
        self.chunk: list[bytes] = []
        self.packets = 0

    def add(self, ts_us: int, data: bytes) -> None:
        self.chunk.append(RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(data), len(data)))
        self.chunk.append(data)
        if len(self.chunk) >= 131_072:
            self._flush()

    def _flush(self) -> None:
        self.packets += len(self.chunk) // 2
        self.file.write(b"".join(self.chunk))
        self.chunk.clear()

    def close(self) -> int:
        self._flush()
        self.file.close()
        return self.packets


def ip_of(ns: int, pod: int) -> bytes:
    return ip4(pod_ip(ns, pod))


def isolated(ns: int) -> bool:
    """gen_replay.cluster(): every third namespace admits ingress only from its tier."""
    return ns < NAMESPACES and ns % 3 == 0


def admitted(src_ns: int, dst_ns: int) -> bool:
    """Does the cluster's policy admit a pod of src_ns to a pod of dst_ns on http/https?"""
    return not isolated(dst_ns) or (src_ns < NAMESPACES and src_ns % 2 == dst_ns % 2)


def service_ip(ns: int, app: int) -> str:
    return f"10.96.{ns + 1}.{app + 10}"


# --- flood -----------------------------------------------------------------------------

def write_flood(path: Path, packets: int, rng: random.Random) -> tuple[int, int]:
    """SYNs from random public sources to one pod port; nothing answers."""
    eth = ETH + b"\x08\x00"
    dst = ip_of(FLOOD_DST[0], FLOOD_DST[1])
    dport = FLOOD_DST[2]
    pack, bits, randrange = ETH_IP_TCP.pack, rng.getrandbits, rng.randrange
    size = ETH_IP_TCP.size
    rec = RECORD.pack
    with path.open("wb") as out:
        out.write(PCAP_HEADER)
        chunk = []
        for i in range(packets):
            src = bits(32)
            while src >> 24 in NOT_PUBLIC:
                src = bits(32)
            ts = START_US + i * FLOOD_GAP_US
            chunk.append(rec(ts // 1_000_000, ts % 1_000_000, size, size))
            # The bytes of frame(tcp(src, dst, sport, dport, seq, 0, SYN), style=0).
            chunk.append(pack(eth, 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src.to_bytes(4, "big"), dst,
                              randrange(1024, 65536), dport, bits(32), 0, 5 << 4, 0x02, 65535, 0, 0))
            if len(chunk) >= 131_072:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))
    return packets, packets


# --- scan ------------------------------------------------------------------------------

def write_scan(path: Path, ports: int, rng: random.Random) -> tuple[int, int]:
    """nmap -sS -p-: one SYN per port in random order, each closed port answers RST+ACK."""
    src, dst = ip_of(*SCAN_SRC), ip_of(*SCAN_DST)
    sport = 40000 + rng.randrange(20000)  # nmap keeps one source port for a scan
    order = list(range(1, ports + 1))
    rng.shuffle(order)
    packets = []
    for i, port in enumerate(order):
        seq = rng.getrandbits(32)
        ts = START_US + i * SCAN_GAP_US
        packets.append((ts, 0, frame(tcp(src, dst, sport, port, seq, 0, 0x02), 0)))
        packets.append((ts + SCAN_RTT_US, 1, frame(tcp(dst, src, port, sport, 0, seq + 1 & 0xFFFFFFFF, 0x14), 0)))
    packets.sort(key=lambda p: (p[0], p[1]))
    out = PcapWriter(path)
    for ts, _, data in packets:
        out.add(ts, data)
    return out.close(), ports


# --- allowed ---------------------------------------------------------------------------

def dns_query(qid: int, name: bytes, qtype: int) -> bytes:
    """RFC 1035 §4.1: one question, recursion desired. `name` is already in label form."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", qtype, 1)


def dns_answer(query: bytes, address: bytes) -> bytes:
    """The answer to `query` (an A question): one A record pointing at the question's name."""
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), 0x8180, 1, 1, 0, 0)
    return header + query[12:] + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + address


def labels(name: str) -> bytes:
    return b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\x00"


def write_allowed(path: Path, flows: int, rng: random.Random) -> tuple[int, int]:
    """Three-packet UDP flows between pods no policy selects, each 5-tuple once."""
    pods = [ip_of(ns, p) for ns in range(NAMESPACES) if not isolated(ns) for p in range(PODS_PER_NS)]
    rng.shuffle(pods)
    names = [labels(f"app-{a}.team-{n}.svc.cluster.local") for n in range(NAMESPACES) for a in range(APPS_PER_NS)]
    gossip = [rng.randbytes(n) for n in (52, 64, 77, 90)]
    out = PcapWriter(path)
    ts = START_US
    group = 1000  # flows in flight at once
    for base in range(0, flows, group):
        convs = []
        for i in range(base, min(base + group, flows)):
            # A distinct (source pod, source port) per flow: distinct 5-tuples by construction
            # (7919 is prime to the 28,232 ephemeral ports, so ports never repeat for one pod).
            k = i // len(pods)
            src = pods[i % len(pods)]
            sport = 32768 + (k * 7919) % 28232
            dst = pods[(i % len(pods) + 1 + rng.randrange(len(pods) - 1)) % len(pods)]
            if i % 2 == 0:  # a resolver's A then AAAA from one socket
                qid = rng.getrandbits(16)
                name = names[rng.randrange(len(names))]
                q = dns_query(qid, name, 1)
                convs.append((udp(src, dst, sport, 53, q),
                              udp(dst, src, 53, sport, dns_answer(q, rng.randbytes(4))),
                              udp(src, dst, sport, 53, dns_query(qid ^ 1, name, 28))))
            else:  # memberlist-style gossip: ping, ack, ack
                convs.append((udp(src, dst, sport, 7946, gossip[i % 4]),
                              udp(dst, src, 7946, sport, gossip[(i + 1) % 4]),
                              udp(dst, src, 7946, sport, gossip[(i + 2) % 4])))
        for step in range(3):
            for conv in convs:
                out.add(ts, frame(conv[step], 0))
                ts += ALLOWED_GAP_US
    return out.close(), flows


# --- mix20 -----------------------------------------------------------------------------

class Bytes:
    """Incompressible-looking payload slices (TLS ciphertext) from one random pool."""

    def __init__(self, rng: random.Random):
        self.pool = rng.randbytes(1 << 16)
        self.rng = rng

    def take(self, n: int) -> bytes:
        start = self.rng.randrange(len(self.pool) - n)
        return self.pool[start:start + n]


def tls_records(content_type: int, payload_sizes: list[int], noise: Bytes) -> bytes:
    return b"".join(bytes((content_type, 3, 3)) + struct.pack("!H", n) + noise.take(n) for n in payload_sizes)


CCS = b"\x14\x03\x03\x00\x01\x01"  # TLS 1.3 middlebox-compatibility ChangeCipherSpec


def tcp_conversation(src: bytes, dst: bytes, sport: int, dport: int, request: bytes, answer: list[bytes],
                     client_more: bytes | None, body: list[bytes], rng: random.Random) -> list[bytes]:
    """Handshake, request, answer segments (acked), optional client flight, body (acked every
    other segment), FIN both ways and the last ACK: the ip packets of one TCP connection."""
    c, s = rng.getrandbits(31), rng.getrandbits(31)
    out = [tcp(src, dst, sport, dport, c, 0, 0x02), tcp(dst, src, dport, sport, s, c + 1, 0x12),
           tcp(src, dst, sport, dport, c + 1, s + 1, 0x10),
           tcp(src, dst, sport, dport, c + 1, s + 1, 0x18, request)]
    c += 1 + len(request)
    s += 1
    for i, seg in enumerate(answer):
        out.append(tcp(dst, src, dport, sport, s, c, 0x18 if i == len(answer) - 1 else 0x10, seg))
        s += len(seg)
    if client_more is not None:
        out.append(tcp(src, dst, sport, dport, c, s, 0x18, client_more))
        c += len(client_more)
    else:
        out.append(tcp(src, dst, sport, dport, c, s, 0x10))
    for i, seg in enumerate(body):
        out.append(tcp(dst, src, dport, sport, s, c, 0x18 if i == len(body) - 1 else 0x10, seg))
        s += len(seg)
        if i % 2 == 1 or i == len(body) - 1:
            out.append(tcp(src, dst, sport, dport, c, s, 0x10))
    out += [tcp(src, dst, sport, dport, c, s, 0x11), tcp(dst, src, dport, sport, s, c + 1, 0x11),
            tcp(src, dst, sport, dport, c + 1, s + 1, 0x10)]
    return out


def tls_flow(src, dst, sport, dport, sni, rng, noise) -> list[bytes]:
    """TLS 1.3: ClientHello; ServerHello + CCS + encrypted flight (two segments); client
    CCS + Finished + request; then the response as application data records."""
    flight = SERVER_HELLO + CCS + tls_records(0x17, [rng.randint(2400, 3600)], noise)
    answer = [flight[:1448], flight[1448:2896], flight[2896:]]
    client_more = CCS + tls_records(0x17, [53, rng.randint(120, 700)], noise)
    body = [tls_records(0x17, [1395], noise) for _ in range(rng.randint(3, 8))]
    return tcp_conversation(src, dst, sport, dport, client_hello(sni), [a for a in answer if a],
                            client_more, body, rng)


def http_flow(src, dst, sport, dport, host, rng) -> list[bytes]:
    path = ("/api/v1/items", "/healthz", "/metrics", "/api/v1/orders?page=2", "/static/app.js")[rng.randrange(5)]
    length = rng.randint(5, 11) * 1400
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\nAccept: */*\r\n\r\n".encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
    body = [bytes(1400) for _ in range(length // 1400)]
    return tcp_conversation(src, dst, sport, dport, request, [head], None, body, rng)


def dns_flow(src, dst, sport, rng, names) -> list[bytes]:
    """A resolver socket: 7 to 13 questions, each answered."""
    out = []
    for _ in range(rng.randint(7, 13)):
        q = dns_query(rng.getrandbits(16), names[rng.randrange(len(names))], 1)
        out += [udp(src, dst, sport, 53, q), udp(dst, src, 53, sport, dns_answer(q, rng.randbytes(4)))]
    return out


def write_mix(path: Path, flows: int, rng: random.Random) -> tuple[int, int]:
    noise = Bytes(rng)
    names = [labels(f"app-{a}.team-{n}.svc.cluster.local") for n in range(NAMESPACES) for a in range(APPS_PER_NS)]
    names += [labels(host) for _, host in EXTERNAL_TLS]

    def client() -> tuple[int, int]:
        return rng.randrange(NAMESPACES), rng.randrange(PODS_PER_NS)

    def peer(src_ns: int) -> tuple[int, int]:
        """A server namespace and pod (or app): admitted by policy but for ~2 % of the picks."""
        while True:
            ns, p = rng.randrange(NAMESPACES), rng.randrange(PODS_PER_NS)
            if admitted(src_ns, ns) or rng.random() < 0.1:
                return ns, p

    out = PcapWriter(path)
    ts = START_US
    group = 1000
    for base in range(0, flows, group):
        convs = []
        for i in range(base, min(base + group, flows)):
            sport = 32768 + rng.randrange(28232)
            kind, r = i % 20, rng.random()
            ns, p = client()
            src = ip_of(ns, p)
            if kind < 8:  # TLS, 40 %
                if r < 0.4:  # to a Service's ClusterIP
                    peer_ns, app = peer(ns)
                    conv = tls_flow(src, ip4(service_ip(peer_ns, app % APPS_PER_NS)), sport, 443,
                                    f"app-{app % APPS_PER_NS}.team-{peer_ns}.svc", rng, noise)
                elif r < 0.7:  # to a pod
                    peer_ns, dp = peer(ns)
                    conv = tls_flow(src, ip_of(peer_ns, dp), sport, 443, f"app-{dp}.team-{peer_ns}", rng, noise)
                else:  # out of the cluster
                    ip, host = EXTERNAL_TLS[rng.randrange(len(EXTERNAL_TLS))]
                    conv = tls_flow(src, ip4(ip), sport, 443, host, rng, noise)
            elif kind < 15:  # HTTP, 35 %
                if r < 0.5:
                    peer_ns, app = peer(ns)
                    conv = http_flow(src, ip4(service_ip(peer_ns, app % APPS_PER_NS)), sport, 80,
                                     f"app-{app % APPS_PER_NS}.team-{peer_ns}", rng)
                elif r < 0.9:
                    peer_ns, dp = peer(ns)
                    conv = http_flow(src, ip_of(peer_ns, dp), sport, 8080, f"{pod_ip(peer_ns, dp)}:8080", rng)
                else:
                    conv = http_flow(src, ip4(EXTERNAL_HTTP[rng.randrange(len(EXTERNAL_HTTP))]), sport, 80,
                                     "example.com", rng)
            elif r < 0.9:  # DNS, 25 %: pods ask kube-dns
                conv = dns_flow(src, ip4(KUBE_DNS_IP), sport, rng, names)
            else:  # CoreDNS forwards upstream
                conv = dns_flow(ip_of(KUBE_SYSTEM, rng.randrange(COREDNS_PODS)),
                                ip4(UPSTREAM_DNS[rng.randrange(len(UPSTREAM_DNS))]), sport, rng, names)
            s = rng.random()
            convs.append((1 if s < 0.03 else 2 if s < 0.06 else 0, conv))
        step = 0
        while convs:  # concurrent connections interleave, as in gen_replay.py
            alive = []
            for style, conv in convs:
                if step < len(conv):
                    out.add(ts, frame(conv[step], style))
                    ts += MIX_GAP_US
                    alive.append((style, conv))
            convs = alive
            step += 1
    return out.close(), flows


# --- cluster ---------------------------------------------------------------------------

def cluster() -> dict:
    """gen_replay.cluster() plus kube-system/CoreDNS, Services with EndpointSlices, and nodes."""
    state = replay_cluster()
    items = state["items"]
    ns = "kube-system"
    items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "uid": "ns-kube-system", "labels": {"kubernetes.io/metadata.name": ns}}})
    dns_endpoints = []
    for p in range(COREDNS_PODS):
        name, ip = f"coredns-7db6d8ff4d-{p}", pod_ip(KUBE_SYSTEM, p)
        items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": ns, "uid": f"pod-coredns-{p}",
            "labels": {"k8s-app": "kube-dns", "pod-template-hash": "7db6d8ff4d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coredns-7db6d8ff4d",
                                 "uid": "rs-coredns", "controller": True}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "coredns", "ports": [
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
        dns_endpoints.append({"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                              "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": name, "namespace": ns,
                                                                  "uid": f"pod-coredns-{p}"}})
    items += _service(ns, "kube-dns", KUBE_DNS_IP, {"k8s-app": "kube-dns"},
                      [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                       {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}],
                      dns_endpoints, [{"name": "dns", "port": 53, "protocol": "UDP"},
                                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    for n in range(NAMESPACES):
        ns = f"team-{n}"
        for app in range(APPS_PER_NS):
            endpoints = [{"addresses": [pod_ip(n, p)], "conditions": {"ready": True, "serving": True,
                                                                     "terminating": False},
                          "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": f"app-{p}", "namespace": ns,
                                                              "uid": f"pod-{n}-{p}"}}
                         for p in range(app, PODS_PER_NS, APPS_PER_NS)]
            items += _service(ns, f"app-{app}", service_ip(n, app), {"app": f"app-{app}"},
                              [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                               {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}],
                              endpoints, [{"name": "http", "port": 8080, "protocol": "TCP"},
                                          {"name": "https", "port": 443, "protocol": "TCP"}])
    for i, ip in enumerate(NODE_IPS, 1):
        items.append({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": f"node-{i}", "uid": f"node-{i}", "labels": {"kubernetes.io/hostname": f"node-{i}"}},
            "spec": {"podCIDR": f"10.{i}.0.0/24"},
            "status": {"addresses": [{"address": ip, "type": "InternalIP"},
                                     {"address": f"node-{i}", "type": "Hostname"}]}})
    return state


def _service(ns: str, name: str, ip: str, selector: dict, ports: list, endpoints: list, slice_ports: list) -> list:
    uid = f"svc-{ns}-{name}"
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "uid": uid},
         "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                  "selector": selector, "ports": ports}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": f"{name}-abcde", "namespace": ns, "uid": f"eps-{ns}-{name}",
                      "labels": {"kubernetes.io/service-name": name,
                                 "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                      "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid,
                                           "controller": True}]},
         "endpoints": endpoints, "ports": slice_ports},
    ]


# --- main ------------------------------------------------------------------------------

CAPTURES = {  # name -> (writer, full size); each capture has its own seeded generator
    "flood.pcap": (write_flood, FLOOD_PACKETS),
    "scan.pcap": (write_scan, SCAN_PORTS),
    "allowed.pcap": (write_allowed, ALLOWED_FLOWS),
    "mix20.pcap": (write_mix, MIX_FLOWS),
}


def generate(out_dir: Path, *, scale: float = 1.0) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "attacks.json"
    manifest.unlink(missing_ok=True)
    (out_dir / "cluster.json").write_text(json.dumps(cluster()))
    summary = {}
    for i, (name, (write, size)) in enumerate(CAPTURES.items()):
        started = time.perf_counter()
        packets, flows = write(out_dir / name, max(1, int(size * scale)), random.Random(SEED + i))
        summary[name] = {"packets": packets, "flows": flows}
        print(f"wrote {out_dir / name}: {packets:,} packets, {flows:,} flows "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    manifest.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every capture (quick trials); 1 = the benchmark")
    args = ap.parse_args()
    generate(args.out, scale=args.scale)


if __name__ == "__main__":
    main()
