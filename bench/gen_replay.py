"""Generate, deterministically, the replay benchmark's capture and its cluster file.

A pcap of >= 1,000,000 packets over >= 50,000 flows: TCP handshakes with HTTP
requests/responses, TLS ClientHello/ServerHello exchanges, DNS over UDP, some
flows tagged with 802.1Q and some VXLAN-encapsulated (as on an overlay
device), interleaved as concurrent connections are. Frames are packed with
struct (scapy would take minutes for a million packets).

    python bench/gen_replay.py OUT_DIR [--flows 50000]
"""
from __future__ import annotations

import argparse
import json
import random
import struct
from pathlib import Path

NAMESPACES = 20
PODS_PER_NS = 100
PAIRS = 5000  # distinct (client pod, server pod) pairs
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"



def client_hello(sni: str) -> bytes:
    """A TLS 1.3 ClientHello with SNI, ALPN and supported_versions (RFC 8446 §4.1.2)."""
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    alpn = b"\x02h2\x08http/1.1"
    alpn_ext = struct.pack("!HHH", 16, len(alpn) + 2, len(alpn)) + alpn
    versions_ext = struct.pack("!HHB", 43, 5, 4) + b"\x03\x04\x03\x03"
    groups_ext = struct.pack("!HHH", 10, 4, 2) + b"\x00\x1d"
    sigalgs_ext = struct.pack("!HHH", 13, 4, 2) + b"\x04\x03"
    exts = sni_ext + alpn_ext + versions_ext + groups_ext + sigalgs_ext
    ciphers = b"\x13\x01\x13\x02\xc0\x2f"
    body = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", len(ciphers)) + ciphers + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


SERVER_HELLO = (lambda body: b"\x16\x03\x03" + struct.pack("!H", len(body) + 4) + b"\x02"
                + len(body).to_bytes(3, "big") + body)(
    b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + struct.pack("!H", 6)
    + struct.pack("!HHH", 43, 2, 0x0304))


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp_h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    return _ip(src, dst, 6, tcp_h + payload)


def udp(src, dst, sport, dport, payload):
    return _ip(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def _ip(src, dst, proto, l4):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst) + l4


def frame(ip_packet: bytes, style: int) -> bytes:
    if style == 1:  # 802.1Q tagged
        return ETH + b"\x81\x00\x00\x64\x08\x00" + ip_packet
    if style == 2:  # VXLAN on the overlay device, node to node
        inner = ETH + b"\x08\x00" + ip_packet
        vx = b"\x08\x00\x00\x00\x00\x00\x01\x00" + inner
        return ETH + b"\x08\x00" + udp(ip4("192.168.0.1"), ip4("192.168.0.2"), 40000, 4789, vx)
    return ETH + b"\x08\x00" + ip_packet


def conversation(kind: int, src: bytes, dst: bytes, sport: int, rng: random.Random) -> list[tuple[bool, bytes]]:
    """(from_client, ip packet) of one flow."""
    if kind == 2:  # DNS
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"
        return [(True, udp(src, dst, sport, 53, q)), (False, udp(dst, src, 53, sport, q + bytes(16)))]
    dport = 443 if kind == 1 else 8080
    c, s = rng.getrandbits(31), rng.getrandbits(31)
    out = [(True, tcp(src, dst, sport, dport, c, 0, 0x02)), (False, tcp(dst, src, dport, sport, s, c + 1, 0x12)),
           (True, tcp(src, dst, sport, dport, c + 1, s + 1, 0x10))]
    request = client_hello("svc.bench.example") if kind == 1 else b"GET /items HTTP/1.1\r\nHost: api\r\n\r\n"
    answer = SERVER_HELLO if kind == 1 else b"HTTP/1.1 200 OK\r\nContent-Length: 1200\r\n\r\n"
    out.append((True, tcp(src, dst, sport, dport, c + 1, s + 1, 0x18, request)))
    out.append((False, tcp(dst, src, dport, sport, s + 1, c + 1 + len(request), 0x18, answer)))
    seq = s + 1 + len(answer)
    for _ in range(rng.randint(6, 22)):  # the response body, acknowledged every other segment
        out.append((False, tcp(dst, src, dport, sport, seq, c + 1 + len(request), 0x10, bytes(1200))))
        seq += 1200
        if rng.random() < 0.5:
            out.append((True, tcp(src, dst, sport, dport, c + 1 + len(request), seq, 0x10)))
    out += [(True, tcp(src, dst, sport, dport, c + 1 + len(request), seq, 0x11)),
            (False, tcp(dst, src, dport, sport, seq, c + 2 + len(request), 0x11)),
            (True, tcp(src, dst, sport, dport, c + 2 + len(request), seq + 1, 0x10))]
    return out


def pod_ip(ns: int, pod: int) -> str:
    return f"10.{ns}.{pod // 250}.{pod % 250 + 2}"


def write_pcap(path: Path, *, flows: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    # A service graph, not random pairs: real pods talk to a few peers again and again,
    # and how often a pair repeats is skewed (a few pairs carry most flows).
    pairs = [(ip4(pod_ip(rng.randrange(NAMESPACES), rng.randrange(PODS_PER_NS))),
              ip4(pod_ip(rng.randrange(NAMESPACES), rng.randrange(PODS_PER_NS)))) for _ in range(PAIRS)]
    rng.shuffle(pairs)
    packets = 0
    ts = EPOCH
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        group = 500  # concurrent connections interleaved
        for base in range(0, flows, group):
            convs = []
            for i in range(base, min(base + group, flows)):
                kind = 0 if i % 10 < 5 else 1 if i % 10 < 8 else 2  # HTTP 50%, TLS 30%, DNS 20%
                src, dst = pairs[int(len(pairs) * rng.random() ** 3)]
                style = 1 if i % 7 == 0 else 2 if i % 11 == 0 else 0
                convs.append((style, conversation(kind, src, dst, 10000 + i % 50000, rng)))
            step = 0
            while convs:
                alive = []
                for style, conv in convs:
                    if step < len(conv):
                        data = frame(conv[step][1], style)
                        ts += 0.00002
                        sec = int(ts)
                        out.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), len(data)) + data)
                        packets += 1
                        alive.append((style, conv))
                convs = alive
                step += 1
    return packets


def cluster() -> dict:
    items = []
    for n in range(NAMESPACES):
        ns = f"team-{n}"
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "uid": f"ns-{n}", "labels": {"kubernetes.io/metadata.name": ns, "tier": "a" if n % 2 else "b"}}})
        for p in range(PODS_PER_NS):
            items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"app-{p}", "namespace": ns, "uid": f"pod-{n}-{p}", "labels": {"app": f"app-{p % 10}"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "https", "containerPort": 443, "protocol": "TCP"}]}]},
                "status": {"phase": "Running", "podIP": pod_ip(n, p), "podIPs": [{"ip": pod_ip(n, p)}]}})
        if n % 3 == 0:  # isolated namespaces: only same-tier namespaces may call, on named ports
            items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {
                "name": "tier-only", "namespace": ns}, "spec": {
                "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"tier": "a" if n % 2 else "b"}}}],
                    "ports": [{"port": "http"}, {"port": "https"}, {"port": 53, "protocol": "UDP"}]}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--flows", type=int, default=50_000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(cluster()))
    n = write_pcap(args.out / "bench.pcap", flows=args.flows)
    print(f"wrote {args.out / 'bench.pcap'}: {n:,} packets, {args.flows:,} flows")


if __name__ == "__main__":
    main()
