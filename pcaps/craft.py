"""Crafts the edge-case captures in pcaps/crafted/: each file proves one thing.

Run: /work/main/.venv/bin/python pcaps/craft.py
Deterministic: fixed timestamps from 2026-01-01T00:00:00Z (1 ms apart), fixed
addresses, MACs, ports and sequence numbers, gzip mtime 0. Re-running yields
byte-identical files. The cluster these addresses belong to is written beside
them as crafted/cluster.json (same shape as the recorded scenarios').

Addresses: web/frontend 10.244.1.10 + fd00:10:244:1::10 on node-1 (172.18.0.2);
api/api 10.244.2.20 + fd00:10:244:2::20 on node-2 (172.18.0.3). Overlay outer
headers run node-1 <-> node-2.
"""
from __future__ import annotations

import gzip
import logging
import random
import struct
import sys
from decimal import Decimal
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR, fragment
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP, SCTPChunkInit, SCTPChunkInitAck
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw
from scapy.utils import wrpcap

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster  # noqa: E402  (pcaps/cluster.py, the shared cluster builder)

OUT = HERE / "crafted"
T0 = Decimal(1767225600)  # 2026-01-01T00:00:00Z
STEP = Decimal("0.001")

(CLIENT4, CLIENT6), (SERVER4, SERVER6) = cluster.CRAFTED_CLIENT, cluster.CRAFTED_SERVER
NODE1, NODE2 = cluster.NODE_IPS["node-1"], cluster.NODE_IPS["node-2"]
CMAC, SMAC = "02:42:0a:f4:01:0a", "02:42:0a:f4:02:14"
N1MAC, N2MAC = "02:42:ac:12:00:02", "02:42:ac:12:00:03"
CPORT, SPORT = 43210, 8080
ISN_C, ISN_S = 1000, 5000

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 113, 276


def write(name: str, pkts: list, *, linktype: int | None = None, nano: bool = False) -> None:
    for i, p in enumerate(pkts):
        p.time = T0 + i * STEP
    wrpcap(str(OUT / name), pkts, linktype=linktype, nano=nano)


def eth(src=CMAC, dst=SMAC) -> Ether:
    return Ether(src=src, dst=dst)


def handshake(ip_c, ip_s, *, sport=CPORT, dport=SPORT) -> list:
    """SYN, SYN-ACK, ACK as (L3 packet) triples: callers add what goes below."""
    return [ip_c / TCP(sport=sport, dport=dport, flags="S", seq=ISN_C, window=64240),
            ip_s / TCP(sport=dport, dport=sport, flags="SA", seq=ISN_S, ack=ISN_C + 1, window=65160),
            ip_c / TCP(sport=sport, dport=dport, flags="A", seq=ISN_C + 1, ack=ISN_S + 1, window=502)]


def v4_handshake(**kw) -> list:
    return handshake(IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4), **kw)


def with_eth(l3: list) -> list:
    return [eth(*((CMAC, SMAC) if i % 2 == 0 else (SMAC, CMAC))) / p for i, p in enumerate(l3)]


# --- TLS records (hand-built so the bytes are fixed and documented) -----------------

def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def client_hello(sni: str = "api.api.svc.cluster.local") -> bytes:
    """TLS 1.3 ClientHello: SNI, ALPN h2/http1.1, supported_versions 1.3+1.2, x25519."""
    name = sni.encode()
    exts = b"".join([
        _ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),  # server_name
        _ext(0x000a, struct.pack("!HHH", 4, 0x001d, 0x0017)),  # supported_groups
        _ext(0x000d, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401)),  # signature_algorithms
        _ext(0x0010, struct.pack("!H", 12) + b"\x02h2\x08http/1.1"),  # ALPN
        _ext(0x002b, b"\x04\x03\x04\x03\x03"),  # supported_versions: 1.3, 1.2
        _ext(0x0033, struct.pack("!HHH", 36, 0x001d, 32) + bytes(range(32))),  # key_share
    ])
    ciphers = struct.pack("!HHHHH", 8, 0x1301, 0x1302, 0x1303, 0xc02f)
    body = (b"\x03\x03" + bytes(range(0x20, 0x40)) + b"\x20" + bytes(range(0x40, 0x60)) + ciphers
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello() -> bytes:
    """TLS 1.3 ServerHello (supported_versions 0x0304, TLS_AES_128_GCM_SHA256, x25519)."""
    exts = _ext(0x002b, b"\x03\x04") + _ext(0x0033, struct.pack("!HH", 0x001d, 32) + bytes(32))
    body = (b"\x03\x03" + bytes(range(0x60, 0x80)) + b"\x20" + bytes(range(0x40, 0x60))
            + b"\x13\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs


def tls_split(out_of_order: bool) -> list:
    ch, sh = client_hello(), server_hello()
    cut = 60  # inside the ClientHello body (record header + 55 bytes)
    ipc, ips = IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4)
    c1 = ipc / TCP(sport=CPORT, dport=443, flags="PA", seq=ISN_C + 1, ack=ISN_S + 1) / ch[:cut]
    c2 = ipc / TCP(sport=CPORT, dport=443, flags="PA", seq=ISN_C + 1 + cut, ack=ISN_S + 1) / ch[cut:]
    segs = [c2, c1] if out_of_order else [c1, c2]
    s1 = ips / TCP(sport=443, dport=CPORT, flags="PA", seq=ISN_S + 1, ack=ISN_C + 1 + len(ch)) / sh
    return with_eth(handshake(ipc, ips, dport=443)) + [eth() / s for s in segs] + [eth(SMAC, CMAC) / s1]


# --- one function per file ----------------------------------------------------------

def vlan() -> None:
    def tagged(*tags, outer_type: int | None = None) -> list:
        pkts = []
        for i, p in enumerate(v4_handshake()):
            frame = eth() if i % 2 == 0 else eth(SMAC, CMAC)
            if outer_type:
                frame.type = outer_type
            for tag in tags:
                frame = frame / tag.copy()
            pkts.append(frame / p)
        return pkts
    write("vlan-8021q.pcap", tagged(Dot1Q(vlan=100)))
    write("vlan-qinq.pcap", tagged(Dot1AD(vlan=200), Dot1Q(vlan=100), outer_type=0x88A8))


def ipv6_ext_headers() -> None:
    c, s = IPv6(src=CLIENT6, dst=SERVER6), IPv6(src=SERVER6, dst=CLIENT6)
    chain = (IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
             # Atomic fragment (offset 0, M=0, RFC 6946): ports still follow.
             / IPv6ExtHdrFragment(id=0x1234, offset=0, m=0))
    syn, synack, ack = handshake(c, s)
    write("ipv6-ext-headers.pcap", with_eth([chain / syn[TCP], synack,
                                             IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop()
                                             / ack[TCP]]))


def ipv4_options() -> None:
    syn, synack, ack = v4_handshake()
    syn[IP].options = [IPOption_Router_Alert()]  # IHL 6
    ack[IP].options = [IPOption_RR(routers=["10.244.1.1", "10.244.2.1"])]  # IHL 8 (+NOP pad)
    write("ipv4-options.pcap", with_eth([syn, synack, ack]))


def ipv4_fragments() -> None:
    dgram = IP(src=CLIENT4, dst=SERVER4, id=0x4242) / UDP(sport=40000, dport=8125) / (b"m" * 3000)
    frags = fragment(dgram, fragsize=1480)  # 3 fragments: only the first carries the UDP header
    write("ipv4-fragments.pcap", [eth() / f for f in frags])


def overlay(name: str, encap) -> None:
    """Pod-to-pod handshake inside `encap(outer_direction) / inner Ether / IP / TCP`."""
    pkts = []
    for i, inner in enumerate(with_eth(v4_handshake())):
        fwd = i % 2 == 0
        outer = (Ether(src=N1MAC, dst=N2MAC) / IP(src=NODE1, dst=NODE2) if fwd
                 else Ether(src=N2MAC, dst=N1MAC) / IP(src=NODE2, dst=NODE1))
        pkts.append(outer / encap(fwd) / inner)
    write(name, pkts)


def overlays() -> None:
    overlay("vxlan-4789.pcap", lambda fwd: UDP(sport=51000 if fwd else 52000, dport=4789)
            / VXLAN(vni=42, flags=0x08))
    overlay("flannel-vxlan-8472.pcap", lambda fwd: UDP(sport=51001 if fwd else 52001, dport=8472)
            / VXLAN(vni=1, flags=0x08))
    overlay("geneve-6081.pcap", lambda fwd: UDP(sport=51002 if fwd else 52002, dport=6081)
            / GENEVE(vni=7, proto=0x6558))
    # GRE and IP-in-IP carry the inner IP packet directly (no inner Ethernet).
    gre, ipip = [], []
    for i, inner in enumerate(v4_handshake()):
        fwd = i % 2 == 0
        outer_e = Ether(src=N1MAC, dst=N2MAC) if fwd else Ether(src=N2MAC, dst=N1MAC)
        src, dst = (NODE1, NODE2) if fwd else (NODE2, NODE1)
        gre.append(outer_e / IP(src=src, dst=dst, proto=47) / GRE(proto=0x0800) / inner.copy())
        ipip.append(outer_e / IP(src=src, dst=dst, proto=4) / inner.copy())
    write("gre.pcap", gre)
    write("ipip.pcap", ipip)


def truncated() -> None:
    """One TLS ClientHello frame cut (caplen < wire length) inside and at every layer."""
    full = bytes(eth() / IP(src=CLIENT4, dst=SERVER4)
                 / TCP(sport=CPORT, dport=443, flags="PA", seq=ISN_C + 1, ack=ISN_S + 1) / client_hello())
    # Ethernet 0-14, IPv4 14-34, TCP 34-54, TLS record header 54-59, handshake header 59-63.
    cuts = [6, 13, 14, 20, 33, 34, 40, 53, 54, 57, 59, 61, 63, 100]
    pkts = []
    for cut in cuts:
        p = Raw(full[:cut])
        p.wirelen = len(full)
        pkts.append(p)
    write("truncated.pcap", pkts, linktype=LINKTYPE_ETHERNET)


def garbage() -> None:
    rng = random.Random(20260101)
    frames = [
        Raw(bytes(rng.randrange(256) for _ in range(60))),  # random bytes
        Raw(bytes(Ether(src=CMAC, dst=SMAC, type=0x0800)) + b"\xff" * 40),  # "IPv4" ethertype, payload all 0xff (version 15)
        Raw(bytes(Ether(src=CMAC, dst=SMAC, type=0x86DD)) + bytes(IP(src=CLIENT4, dst=SERVER4))),
        Raw(b"\x00" * 5),  # shorter than an Ethernet header
    ]
    write("garbage.pcap", frames, linktype=LINKTYPE_ETHERNET)


def bad_ihl() -> None:
    good = IP(src=CLIENT4, dst=SERVER4) / TCP(sport=CPORT, dport=SPORT, flags="S", seq=ISN_C)
    raw = bytearray(bytes(good))
    frames = []
    for first_byte in (0x44, 0x4F):  # IHL 4 (< 5 words), IHL 15 (60 bytes > what follows)
        b = bytearray(raw)
        b[0] = first_byte
        frames.append(Raw(bytes(Ether(src=CMAC, dst=SMAC, type=0x0800)) + bytes(b)))
    short_total = bytearray(raw)
    short_total[2:4] = struct.pack("!H", 12)  # total length 12 < IHL 20
    frames.append(Raw(bytes(Ether(src=CMAC, dst=SMAC, type=0x0800)) + bytes(short_total)))
    write("bad-ihl.pcap", frames, linktype=LINKTYPE_ETHERNET)


def arp() -> None:
    write("arp.pcap", [
        Ether(src=CMAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CMAC, psrc=CLIENT4, pdst="10.244.1.1"),
        Ether(src="02:42:0a:f4:01:01", dst=CMAC) / ARP(op=2, hwsrc="02:42:0a:f4:01:01", psrc="10.244.1.1",
                                                       hwdst=CMAC, pdst=CLIENT4),
    ])


def cooked() -> None:
    v1, v2 = [], []
    for i, p in enumerate(v4_handshake()):
        out = i % 2 == 0  # captured on the client: its packets go out (4), replies come in (0)
        v1.append(CookedLinux(pkttype=4 if out else 0, lladdrtype=1, lladdrlen=6,
                              src=bytes.fromhex((CMAC if out else SMAC).replace(":", "")) + b"\0\0",
                              proto=0x0800) / p)
        v2.append(CookedLinuxV2(proto=0x0800, ifindex=2, lladdrtype=1, pkttype=4 if out else 0,
                                lladdrlen=6,
                                src=bytes.fromhex((CMAC if out else SMAC).replace(":", "")) + b"\0\0")
                  / p.copy())
    write("cooked-v1.pcap", v1, linktype=LINKTYPE_SLL)
    write("cooked-v2.pcap", v2, linktype=LINKTYPE_SLL2)


def raw_ip() -> None:
    pkts = v4_handshake() + handshake(IPv6(src=CLIENT6, dst=SERVER6), IPv6(src=SERVER6, dst=CLIENT6))
    write("raw-ip.pcap", [Raw(bytes(p)) for p in pkts], linktype=LINKTYPE_RAW)


def _pcapng(name: str, idbs: list[tuple[int, bytes, int]], records: list[tuple[int, bytes]]) -> None:
    """Hand-written pcapng. idbs: (linktype, if_name, if_tsresol exponent); records: (if id, frame)."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    def opt(code: int, val: bytes) -> bytes:
        return struct.pack("<HH", code, len(val)) + val + b"\0" * (-len(val) % 4)

    end = opt(0, b"")
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + opt(4, b"flowwarden pcaps/craft.py") + end)]
    for linktype, ifname, tsresol in idbs:
        tsopt = opt(9, bytes([tsresol])) if tsresol != 6 else b""  # 6 (microseconds) is the default
        out.append(block(1, struct.pack("<HHI", linktype, 0, 262144) + opt(2, ifname) + tsopt + end))
    for i, (ifid, data) in enumerate(records):
        ticks = int((T0 + i * STEP) * 10 ** idbs[ifid][2])
        out.append(block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
                         + data))
    (OUT / name).write_bytes(b"".join(out))


def pcapng_files() -> None:
    frames = [bytes(f) for f in with_eth(v4_handshake())]
    # Second connection seen on another interface (e.g. a second bridge), in nanoseconds.
    other = [bytes(f) for f in with_eth(v4_handshake(sport=CPORT + 1))]
    _pcapng("pcapng-two-interfaces.pcapng", [(LINKTYPE_ETHERNET, b"cni0", 6), (LINKTYPE_ETHERNET, b"cni1", 9)],
            [(0, frames[0]), (1, other[0]), (0, frames[1]), (1, other[1]), (0, frames[2]), (1, other[2])])
    cooked_syn = bytes(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, proto=0x0800,
                                   src=bytes.fromhex(CMAC.replace(":", "")) + b"\0\0")
                       / IP(src=CLIENT4, dst=SERVER4) / TCP(sport=CPORT + 1, dport=SPORT, flags="S", seq=ISN_C))
    _pcapng("pcapng-mixed-linktypes.pcapng", [(LINKTYPE_ETHERNET, b"cni0", 6), (LINKTYPE_SLL, b"any", 9)],
            [(0, frames[0]), (1, cooked_syn), (0, frames[1]), (0, frames[2])])


def gzipped() -> None:
    write("handshake-gzip.tmp", with_eth(v4_handshake()))
    tmp = OUT / "handshake-gzip.tmp"
    with open(OUT / "handshake.pcap.gz", "wb") as fh:
        with gzip.GzipFile(filename="handshake.pcap", mode="wb", fileobj=fh, mtime=0) as gz:
            gz.write(tmp.read_bytes())
    tmp.unlink()


def tls() -> None:
    write("tls-clienthello-split.pcap", tls_split(out_of_order=False))
    write("tls-clienthello-out-of-order.pcap", tls_split(out_of_order=True))
    write("tls-hostile.pcap", tls_hostile())


def tls_hostile() -> list:
    """Three connections whose first client bytes attack a TLS parser: a record and a
    handshake claiming 64 KiB and 16 MiB, a ClientHello whose extensions length lies,
    and a ClientHello whose SNI and ALPN extensions are empty."""
    ch = client_hello()
    lying = bytearray(ch)
    ext_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 10 + 2  # record, handshake, version, random, session id, ciphers, compression
    lying[ext_len_at:ext_len_at + 2] = struct.pack("!H", 0xFFF0)
    empty = b"".join([_ext(0x0000, b""), _ext(0x0010, b""), _ext(0x002b, b"\x02\x03\x04")])
    body = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!HH", 2, 0x1301) + b"\x01\x00" + struct.pack("!H", len(empty)) + empty
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    payloads = [b"\x16\x03\x01\xff\xff\x01\xff\xff\xff" + bytes(range(200)), bytes(lying),
                b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs]
    pkts = []
    for i, data in enumerate(payloads):
        ipc, ips = IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4)
        port = CPORT + 100 + i
        pkts += with_eth(handshake(ipc, ips, sport=port, dport=443))
        pkts.append(eth() / ipc / TCP(sport=port, dport=443, flags="PA", seq=ISN_C + 1, ack=ISN_S + 1) / data)
        pkts.append(eth(SMAC, CMAC) / ips / TCP(sport=443, dport=port, flags="R", seq=ISN_S + 1))
    return pkts


def midstream() -> None:
    ipc, ips = IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4)
    req, resp = b"GET /orders HTTP/1.1\r\nHost: api\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    c, s = 700000, 900000
    pkts = [
        ips / TCP(sport=SPORT, dport=CPORT, flags="PA", seq=s, ack=c) / resp,  # server speaks first
        ipc / TCP(sport=CPORT, dport=SPORT, flags="A", seq=c, ack=s + len(resp)),
        ipc / TCP(sport=CPORT, dport=SPORT, flags="PA", seq=c, ack=s + len(resp)) / req,
        ips / TCP(sport=SPORT, dport=CPORT, flags="PA", seq=s + len(resp), ack=c + len(req)) / resp,
        ipc / TCP(sport=CPORT, dport=SPORT, flags="A", seq=c + len(req), ack=s + 2 * len(resp)),
    ]
    write("midstream.pcap", [eth(SMAC, CMAC) / p if p[IP].src == SERVER4 else eth() / p for p in pkts])


def udp() -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x03api\x03api\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
    answer = (bytes.fromhex("abcd85800001000100000000") + query[12:]
              + bytes.fromhex("c00c000100010000001e0004") + bytes([10, 96, 120, 20]))
    ipc, ips = IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4)
    write("udp.pcap", [
        eth() / ipc / UDP(sport=40053, dport=53) / query,  # answered
        eth(SMAC, CMAC) / ips / UDP(sport=53, dport=40053) / answer,
        eth() / ipc / UDP(sport=40125, dport=8125) / b"orders.count:1|c",  # never answered
        eth() / ipc / UDP(sport=40125, dport=8125) / b"orders.count:2|c",
    ])


def sctp() -> None:
    ipc, ips = IP(src=CLIENT4, dst=SERVER4), IP(src=SERVER4, dst=CLIENT4)
    write("sctp.pcap", [
        eth() / ipc / SCTP(sport=CPORT, dport=9999, tag=0) / SCTPChunkInit(init_tag=0x11111111,
                                                                          a_rwnd=106496, n_out_streams=10,
                                                                          n_in_streams=10, init_tsn=1),
        eth(SMAC, CMAC) / ips / SCTP(sport=9999, dport=CPORT, tag=0x11111111)
        / SCTPChunkInitAck(init_tag=0x22222222, a_rwnd=106496, n_out_streams=10, n_in_streams=10,
                           init_tsn=1),
    ])


def icmp() -> None:
    write("icmp-echo.pcap", [
        eth() / IP(src=CLIENT4, dst=SERVER4) / ICMP(type=8, id=7, seq=1) / b"flowwarden",
        eth(SMAC, CMAC) / IP(src=SERVER4, dst=CLIENT4) / ICMP(type=0, id=7, seq=1) / b"flowwarden",
        eth() / IPv6(src=CLIENT6, dst=SERVER6) / ICMPv6EchoRequest(id=7, seq=1, data=b"flowwarden"),
        eth(SMAC, CMAC) / IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6EchoReply(id=7, seq=1, data=b"flowwarden"),
    ])


def nanosecond() -> None:
    write("nanosecond.pcap", with_eth(v4_handshake()), nano=True)


def broken_files() -> None:
    (OUT / "corrupt-magic.pcap").write_bytes(b"\xde\xad\xbe\xef" + bytes(20) + bytes(range(40)))
    write("truncated-file.tmp", with_eth(v4_handshake()[:1]))
    tmp = OUT / "truncated-file.tmp"
    whole = tmp.read_bytes()
    tmp.unlink()
    # Global header (24) + one whole record, then a record header claiming 60 bytes and 20 of them.
    cut_rec = struct.pack("<IIII", 1767225600, 1000, 60, 60) + bytes(20)
    (OUT / "truncated-file.pcap").write_bytes(whole + cut_rec)


def crafted_cluster() -> None:
    (OUT / "cluster.json").write_text(cluster.as_list(cluster.crafted()))


# --- pcaps/suggest-shop/: traffic to learn policies from, and traffic held out of it ---------

SHOP = {"frontend-a": ("10.244.1.10", "fd00:10:244:1::10"), "frontend-b": ("10.244.2.11",), "checkout": ("10.244.1.12",),
        "redis": ("10.244.1.20",), "postgres": ("10.244.1.21",), "coredns": ("10.244.1.53",),
        "prometheus": ("10.244.1.30",), "checkout-svc": ("10.96.10.12",)}


def _conversation(src: str, dst: str, sport: int, dport: int, *, answer: str | None = "SA", udp: bool = False) -> list:
    """A whole TCP connection (handshake, FIN both ways), a refusal ("R"), an unanswered SYN (None), or a
    UDP request and its reply: headers only, no payload."""
    ip = IPv6 if ":" in src else IP
    there, back = ip(src=src, dst=dst), ip(src=dst, dst=src)
    if udp:
        return [there / UDP(sport=sport, dport=dport), back / UDP(sport=dport, dport=sport)]
    if answer is None:
        return [there / TCP(sport=sport, dport=dport, flags="S", seq=ISN_C)]
    if answer == "R":
        return [there / TCP(sport=sport, dport=dport, flags="S", seq=ISN_C),
                back / TCP(sport=dport, dport=sport, flags="RA", seq=0, ack=ISN_C + 1)]
    return handshake(there, back, sport=sport, dport=dport) + [
        there / TCP(sport=sport, dport=dport, flags="FA", seq=ISN_C + 1, ack=ISN_S + 1),
        back / TCP(sport=dport, dport=sport, flags="FA", seq=ISN_S + 1, ack=ISN_C + 2),
        there / TCP(sport=sport, dport=dport, flags="A", seq=ISN_C + 2, ack=ISN_S + 2)]


def suggest_shop() -> None:
    """train.pcap: what `flowwarden suggest` learns from; heldout.pcap: flows between workloads that never
    talked in train.pcap (the suggestions must deny them) and two that did or are DNS (allowed)."""
    a, b, co, rd, pg, dns, prom = (SHOP[k][0] for k in ("frontend-a", "frontend-b", "checkout", "redis", "postgres",
                                                         "coredns", "prometheus"))
    train = [("203.0.113.5", a, 50001, 8080), ("203.0.113.9", b, 50002, 8080), ("2001:db8::5", SHOP["frontend-a"][1],
             50003, 8080), (a, SHOP["checkout-svc"][0], 41000, 80), (b, co, 41001, 8080), (co, rd, 42000, 6379),
             (co, pg, 42001, 5432), (prom, a, 43000, 9090), (prom, co, 43001, 9090), (co, "198.51.100.7", 42002, 443)]
    pkts = [p for c in train for p in _conversation(*c)]
    pkts += _conversation(a, dns, 45000, 53, udp=True) + _conversation(co, dns, 45001, 53, udp=True)
    pkts += _conversation(a, co, 41002, 8443, answer="R") + _conversation(b, co, 41003, 8443, answer=None)
    heldout = [(a, rd, 46000, 6379), ("192.0.2.1", co, 46001, 8080), (prom, rd, 46002, 6379),
               ("203.0.113.77", a, 46003, 8080), (b, co, 46004, 8080), (co, dns, 46005, 53)]
    folder = HERE / "suggest-shop"
    folder.mkdir(exist_ok=True)
    for name, packets in (("train.pcap", pkts), ("heldout.pcap", [p for c in heldout for p in _conversation(*c)])):
        for i, p in enumerate(packets):
            p.time = T0 + i * STEP
        wrpcap(str(folder / name), packets, linktype=LINKTYPE_RAW)
    (folder / "cluster.json").write_text(cluster.as_list(_suggest_shop_cluster()))


def _suggest_shop_cluster() -> list[dict]:
    c = cluster
    items = c.base() + [c.namespace("shop"), c.namespace("data"), c.namespace("monitoring")]
    http = [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]
    fa = c.pod("shop", "frontend-6b8f9c7d5-aaaaa", app="frontend", ips=list(SHOP["frontend-a"]), ports=http,
               deployment="frontend", labels={"tier": "web"})
    fb = c.pod("shop", "frontend-6b8f9c7d5-bbbbb", app="frontend", ips=list(SHOP["frontend-b"]), ports=http,
               deployment="frontend", labels={"tier": "web"}, node_name="node-2")
    co = c.pod("shop", "checkout-7d9c8b6f5-ccccc", app="checkout", ips=list(SHOP["checkout"]), ports=http,
               deployment="checkout")
    rd = c.pod("data", "redis-0", app="redis", ips=list(SHOP["redis"]), ports=[("redis", 6379, "TCP")],
               labels={"controller-revision-hash": "redis-5c9f7d", "statefulset.kubernetes.io/pod-name": "redis-0"})
    rd["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True,
                                          "kind": "StatefulSet", "name": "redis", "uid": c.uid("StatefulSet", "data",
                                                                                              "redis")}]
    pg = c.pod("data", "postgres-0", app="postgres", ips=list(SHOP["postgres"]), ports=[("postgres", 5432, "TCP")])
    dns = c.pod("kube-system", "coredns-5d78c9869d-h7kzp", app="kube-dns", ips=list(SHOP["coredns"]),
                deployment="coredns", labels={"k8s-app": "kube-dns"},
                ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")])
    prom = c.pod("monitoring", "prometheus-0", app="prometheus", ips=list(SHOP["prometheus"]))
    items += [fa, fb, co, rd, pg, dns, prom]
    c._svc_with_slice(items, c.service("shop", "checkout", cluster_ips=list(SHOP["checkout-svc"]),
                                       selector={"app": "checkout"}, ports=[("http", 80, "TCP", 8080)]), [co])
    c._svc_with_slice(items, c.service("kube-system", "kube-dns", cluster_ips=["10.96.0.10"],
                                       selector={"k8s-app": "kube-dns"},
                                       ports=[("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53)]), [dns])
    items.append(c.netpol("data", "postgres-from-checkout", {  # a current policy: postgres' ingress is not narrowed
        "podSelector": {"matchLabels": {"app": "postgres"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": c.ns_sel("shop"),
                               "podSelector": {"matchLabels": {"app": "checkout"}}}]}]}))
    return items


def main() -> int:
    # Raw frames written under an explicit link type make scapy warn; the files are as intended.
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    OUT.mkdir(exist_ok=True)
    for step in (vlan, ipv6_ext_headers, ipv4_options, ipv4_fragments, overlays, truncated, garbage,
                 bad_ihl, arp, cooked, raw_ip, pcapng_files, gzipped, tls, midstream, udp,
                 sctp, icmp, nanosecond, broken_files, crafted_cluster, suggest_shop):
        step()
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:7d}  {f.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
