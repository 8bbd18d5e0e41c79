"""Crafts pcaps/rules-crafted/: edge cases for the built-in rules of the 4C's (issue #13).

Run: /work/main/.venv/bin/python pcaps/craft_rules.py
One capture, rules-crafted/capture.pcap (Ethernet), and its cluster, rules-crafted/cluster.json
(cluster.py's `rules-crafted` scenario). Deterministic like craft.py: conversation k starts at
2026-01-01T00:00:00Z + k s and its packets are 1 ms apart; addresses, ports, MACs, ISNs (1000/5000),
DNS ids and the "random" DNS labels (SHAKE-256 of a fixed seed) are fixed, so re-running yields a
byte-identical file. Every TCP conversation is whole: SYN, SYN-ACK, ACK, data both ways (each
segment acknowledged by the other side's next one), FIN both ways and the last ACK.

MACs: a pod's is 02:42:0a:f4:<its IPv4's last two octets> (its IPv6 shares its IPv4's), a node's
02:42:ac:12:00:<last octet>; addresses off those links (the metadata service, Service ClusterIPs,
the external client) are behind the pods' gateway (cni0, 02:42:0a:f4:01:01) or, seen from a node,
behind the nodes' router (02:42:ac:12:00:01).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import struct
import sys
from decimal import Decimal
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR, dns_compress
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster  # noqa: E402  (pcaps/cluster.py, the shared cluster builder)
from craft import ISN_C, ISN_S, STEP, T0, client_hello, server_hello  # noqa: E402

OUT = HERE / "rules-crafted"
GAP = Decimal(1)  # between the starts of two conversations

CLIENT4, CLIENT6 = cluster.RULES_CLIENT  # shop/client on node-1
API = "10.244.1.111"  # shop/api, behind shop/web's NodePort 30080
DOVECOT, EXIM, TELNETD, PROXY, COREDNS = "10.244.1.113", "10.244.1.114", "10.244.1.123", "10.244.1.128", "10.244.1.153"
NODE1, NODE2 = cluster.NODE_IPS["node-1"], cluster.NODE_IPS["node-2"]  # node-1 is also monitoring/node-exporter
IMDS4, IMDS6 = "169.254.169.254", "fd00:ec2::254"  # the cloud's metadata service: in no cluster object
KUBERNETES = "10.96.0.1"  # default/kubernetes' ClusterIP (EndpointSlice: cp-1's 172.18.0.4:6443)
EXTERNAL = "198.51.100.23"  # outside the cluster (TEST-NET-2): in no cluster object
CNI0, ROUTER = "02:42:0a:f4:01:01", "02:42:ac:12:00:01"
BASIC = base64.b64encode(b"alice:wonderland").decode()  # YWxpY2U6d29uZGVybGFuZA==
PLAIN = base64.b64encode(b"\0alice\0wonderland").decode()  # AGFsaWNlAHdvbmRlcmxhbmQ=


def mac(ip: str, peer: str) -> str:
    if ip == CLIENT6:
        ip = CLIENT4
    if ip.startswith("10.244."):
        a, b = (int(x) for x in ip.split(".")[2:])
        return f"02:42:0a:f4:{a:02x}:{b:02x}"
    if ip.startswith("172.18.0."):
        return f"02:42:ac:12:00:{int(ip.rsplit('.', 1)[1]):02x}"
    return ROUTER if peer.startswith("172.18.0.") else CNI0


def _ip(src: str, dst: str):
    return (IPv6 if ":" in src else IP)(src=src, dst=dst)


def _frame(src: str, dst: str, l4):
    return Ether(src=mac(src, dst), dst=mac(dst, src)) / _ip(src, dst) / l4


def tcp_conversation(client: str, server: str, sport: int, dport: int, exchanges: list[tuple[str, bytes]]) -> list:
    """A whole TCP connection; exchanges: ("c" | "s", payload) in order on the wire."""
    c, s = ISN_C, ISN_S

    def seg(frm: str, flags: str, data: bytes = b""):
        nonlocal c, s
        if frm == "c":
            p = _frame(client, server, TCP(sport=sport, dport=dport, flags=flags, seq=c, ack=s, window=502))
        else:
            p = _frame(server, client, TCP(sport=dport, dport=sport, flags=flags, seq=s, ack=c, window=509))
        if data:
            p = p / data
        grow = len(data) + (1 if "F" in flags or "S" in flags else 0)
        if frm == "c":
            c += grow
        else:
            s += grow
        return p

    syn = _frame(client, server, TCP(sport=sport, dport=dport, flags="S", seq=c, window=64240))
    c += 1
    synack = _frame(server, client, TCP(sport=dport, dport=sport, flags="SA", seq=s, ack=c, window=65160))
    s += 1
    pkts = [syn, synack, seg("c", "A")]
    pkts += [seg(frm, "PA", data) for frm, data in exchanges]
    pkts += [seg("c", "FA"), seg("s", "FA"), seg("c", "A")]
    return pkts


def udp_exchange(client: str, server: str, sport: int, dport: int, request: bytes, answer: bytes | None) -> list:
    pkts = [_frame(client, server, UDP(sport=sport, dport=dport) / request)]
    if answer is not None:
        pkts.append(_frame(server, client, UDP(sport=dport, dport=sport) / answer))
    return pkts


def http_get(host: str, path: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n{extra}\r\n").encode()


def http_ok(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


# --- the conversations, in capture order: (what it is, packets) ----------------------------

def telnet() -> list:
    """Telnet pod -> pod: option negotiation first (RFC 854/1091/1073), then login: and a username line."""
    iac = lambda *b: bytes(b)  # noqa: E731
    return tcp_conversation(CLIENT4, TELNETD, 43301, 23, [
        ("s", iac(255, 253, 24, 255, 251, 1, 255, 251, 3, 255, 253, 31)),  # DO TTYPE, WILL ECHO, WILL SGA, DO NAWS
        ("c", iac(255, 251, 24, 255, 253, 1, 255, 253, 3, 255, 251, 31,  # WILL TTYPE, DO ECHO, DO SGA, WILL NAWS
                  255, 250, 31, 0, 80, 0, 24, 255, 240)),  # SB NAWS 80x24 SE
        ("s", iac(255, 250, 24, 1, 255, 240)),  # SB TTYPE SEND SE
        ("c", iac(255, 250, 24, 0) + b"XTERM-256COLOR" + iac(255, 240)),  # SB TTYPE IS ... SE
        ("s", b"\r\nDebian GNU/Linux 12\r\ntelnetd-0 login: "),
        ("c", b"alice\r\n"),
        ("s", b"Password: "),
        ("c", b"wonderland\r\n"),
        ("s", b"\r\nLogin incorrect\r\ntelnetd-0 login: "),
    ])


EHLO_AUTH = (b"250-mail.svc Hello shop.example [10.244.1.110]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
             b"250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n")
EHLO_TLS = (b"250-mail.svc Hello shop.example [10.244.1.110]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
            b"250-PIPELINING\r\n250-STARTTLS\r\n250 HELP\r\n")
SMTP_HELLO = b"220 mail.svc ESMTP Exim 4.96 Thu, 01 Jan 2026 00:00:01 +0000\r\n"


def smtp_auth() -> list:
    """SMTP AUTH PLAIN with an initial response, no STARTTLS."""
    return tcp_conversation(CLIENT4, EXIM, 43302, 25, [
        ("s", SMTP_HELLO), ("c", b"EHLO shop.example\r\n"), ("s", EHLO_AUTH),
        ("c", f"AUTH PLAIN {PLAIN}\r\n".encode()), ("s", b"235 Authentication succeeded\r\n"),
        ("c", b"QUIT\r\n"), ("s", b"221 mail.svc closing connection\r\n"),
    ])


def smtp_starttls() -> list:
    """SMTP EHLO, STARTTLS, 220, then TLS (ClientHello, ServerHello): no credentials in the clear."""
    return tcp_conversation(CLIENT4, EXIM, 43303, 25, [
        ("s", SMTP_HELLO), ("c", b"EHLO shop.example\r\n"), ("s", EHLO_TLS),
        ("c", b"STARTTLS\r\n"), ("s", b"220 TLS go ahead\r\n"),
        ("c", client_hello("exim.mail.svc.cluster.local")), ("s", server_hello()),
    ])


def pop3_user_pass() -> list:
    return tcp_conversation(CLIENT4, DOVECOT, 43304, 110, [
        ("s", b"+OK Dovecot (Debian) ready.\r\n"), ("c", b"USER alice\r\n"), ("s", b"+OK\r\n"),
        ("c", b"PASS wonderland\r\n"), ("s", b"+OK Logged in.\r\n"),
        ("c", b"QUIT\r\n"), ("s", b"+OK Logging out.\r\n"),
    ])


def imap_login() -> list:
    caps = b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
    return tcp_conversation(CLIENT4, DOVECOT, 43305, 143, [
        ("s", b"* OK [CAPABILITY " + caps + b"] Dovecot (Debian) ready.\r\n"),
        ("c", b"a1 LOGIN alice wonderland\r\n"),
        ("s", b"a1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE] Logged in\r\n"),
        ("c", b"a2 LOGOUT\r\n"), ("s", b"* BYE Logging out\r\na2 OK Logout completed (0.001 + 0.000 secs).\r\n"),
    ])


def proxy_basic_split() -> list:
    """An HTTP request through a proxy; the Proxy-Authorization: Basic line is in its second segment."""
    host = "api.shop.svc.cluster.local"
    first = f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n".encode()
    second = f"Proxy-Authorization: Basic {BASIC}\r\nProxy-Connection: Keep-Alive\r\n\r\n".encode()
    return tcp_conversation(CLIENT4, PROXY, 43306, 3128, [("c", first), ("c", second), ("s", http_ok(b"hello\n"))])


def hostnet_metadata() -> list:
    """node-1's address (the hostNetwork pod monitoring/node-exporter) to the metadata service."""
    return tcp_conversation(NODE1, IMDS4, 43307, 80, [
        ("c", http_get(IMDS4, "/latest/meta-data/")), ("s", http_ok(b"ami-id\nhostname\ninstance-id\n"))])


def pod_metadata_v6_tcp() -> list:
    return tcp_conversation(CLIENT6, IMDS6, 43308, 80, [
        ("c", http_get(f"[{IMDS6}]", "/latest/meta-data/iam/security-credentials/")), ("s", http_ok(b"node-role\n"))])


def pod_metadata_v6_udp() -> list:
    """An NTP client request (mode 3) to fd00:ec2::254:123 and its answer (mode 4)."""
    request = bytes([0x23]) + bytes(39) + struct.pack("!II", 3976214400, 0)  # LI 0, VN 4, mode 3; transmit time
    answer = bytes([0x24, 2, 0, 0xe9]) + bytes(36) + struct.pack("!II", 3976214400, 1 << 31)
    return udp_exchange(CLIENT6, IMDS6, 40123, 123, request, answer)


def pod_to_nodeport() -> list:
    """A pod to shop/web's NodePort 30080 on node-2's address (inside the cluster)."""
    return tcp_conversation(CLIENT4, NODE2, 43310, 30080, [
        ("c", http_get(f"{NODE2}:30080", "/")), ("s", http_ok(b"hello from web\n"))])


def dns_query(qid: int, name: str) -> bytes:
    return bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype="A")))


def dns_answer(qid: int, name: str, address: str | None) -> bytes:
    if address is None:
        return bytes(DNS(id=qid, qr=1, aa=1, rd=1, ra=1, rcode=3, qd=DNSQR(qname=name, qtype="A")))
    return bytes(dns_compress(DNS(id=qid, qr=1, aa=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"),
                                  an=DNSRR(rrname=name, type="A", ttl=30, rdata=address))))  # answer name: c00c


def external_nodeport_udp() -> list:
    """From outside the cluster to kube-system/dns-external's NodePort 30053/UDP on node-2; NXDOMAIN back."""
    name = "www.shop.example."
    return udp_exchange(EXTERNAL, NODE2, 53530, 30053, dns_query(0x5301, name), dns_answer(0x5301, name, None))


def exfil_name(i: int) -> str:
    """Three 60-character base32 labels (180 random-looking characters) under t<i>.exfil.example.com: 203 characters."""
    b32 = base64.b32encode(hashlib.shake_256(f"flowwarden rules-crafted exfil {i}".encode()).digest(113))
    chars = b32.decode().rstrip("=").lower()[:180]
    return ".".join(chars[k:k + 60] for k in range(0, 180, 60)) + f".t{i}.exfil.example.com."


DNS_QUERIES = [  # (source port, id, name, answer): normal and exfil-shaped, alternating
    (40001, 0x1001, "api.example.com.", "203.0.113.80"),
    (40002, 0x1002, exfil_name(1), "192.0.2.53"),
    (40003, 0x1003, "kubernetes.default.svc.cluster.local.", KUBERNETES),
    (40004, 0x1004, exfil_name(2), "192.0.2.53"),
    (40005, 0x1005, "web.shop.svc.cluster.local.", "10.96.40.80"),
    (40006, 0x1006, exfil_name(3), "192.0.2.53"),
]


def dns_queries() -> list[list]:
    return [udp_exchange(CLIENT4, COREDNS, sport, 53, dns_query(qid, name), dns_answer(qid, name, answer))
            for sport, qid, name, answer in DNS_QUERIES]


def apiserver_clusterip_plaintext() -> list:
    """Plain HTTP to the kubernetes Service's ClusterIP :443, answered as kube-apiserver (Go's TLS server) does."""
    return tcp_conversation(CLIENT4, KUBERNETES, 43313, 443, [
        ("c", http_get(KUBERNETES, "/api")),
        ("s", b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")])


def apiserver_clusterip_tls() -> list:
    return tcp_conversation(CLIENT4, KUBERNETES, 43314, 443, [
        ("c", client_hello("kubernetes.default.svc")), ("s", server_hello())])


CONVERSATIONS = [telnet, smtp_auth, smtp_starttls, pop3_user_pass, imap_login, proxy_basic_split, hostnet_metadata,
                 pod_metadata_v6_tcp, pod_metadata_v6_udp, pod_to_nodeport, external_nodeport_udp]


def main() -> int:
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    OUT.mkdir(exist_ok=True)
    convs = [f() for f in CONVERSATIONS] + dns_queries() + [apiserver_clusterip_plaintext(),
                                                             apiserver_clusterip_tls()]
    pkts = []
    for k, conv in enumerate(convs):
        for i, p in enumerate(conv):
            p.time = T0 + k * GAP + i * STEP
            pkts.append(p)
    wrpcap(str(OUT / "capture.pcap"), pkts, linktype=1)
    (OUT / "cluster.json").write_text(cluster.as_list(cluster.rules_crafted()))
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:7d}  {f.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
