"""Our JA4 and SNI equal the JA4 project's reference answers on its own captures.

../shared/peer-pcaps/ja4/ holds captures and expected output of FoxIO-LLC/ja4
(commit 0e54bc8; JA4 is BSD-3-Clause, see LICENSE-JA4 beside them), read in place
(never copied into the project, see its README). Each TCP stream's
client bytes are put in order by our StreamStart and classified by our
classify(), exactly as the agent does; scapy only reads the files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.all import IP, TCP, IPv6, PcapReader, Raw

from agent.decode.app import classify
from agent.flows.reassembly import StreamStart

PEER = Path(__file__).resolve().parents[3] / "shared" / "peer-pcaps" / "ja4"
EXPECTED = sorted(p for p in (PEER / "expected").glob("*.json"))
SYN, ACK = 0x02, 0x10


def _ip_tcp(pkt):
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None and Raw in pkt:  # BSD loopback with AF_INET6=30: scapy leaves it raw
        load = bytes(pkt[Raw].load)
        ip = (IPv6 if load[:1] and load[0] >> 4 == 6 else IP)(load)
    tcp = ip.getlayer(TCP) if ip is not None else None
    return ip, tcp


def client_streams(path: Path) -> dict[tuple, list[bytes]]:
    """(src, sport, dst, dport) -> client byte streams, one per connection, in capture order.

    A stream whose SYN is not in the capture starts at its lowest sequence number
    (the reference tool reads those too).
    """
    conns: dict[tuple, list] = {}
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            ip, tcp = _ip_tcp(pkt)
            if tcp is None:
                continue
            key = (ip.src, tcp.sport, ip.dst, tcp.dport)
            payload = bytes(tcp[Raw].load) if Raw in tcp else b""  # never Ethernet padding
            if int(tcp.flags) & (SYN | ACK) == SYN:
                conns.setdefault(key, []).append(StreamStart(tcp.seq))
                if payload:
                    conns[key][-1].add(tcp.seq + 1, payload)
            elif payload:
                if key not in conns:
                    conns[key] = [[]]
                last = conns[key][-1]
                last.append((tcp.seq, payload)) if isinstance(last, list) else last.add(tcp.seq, payload)
    return {key: [_finish(s).data for s in streams] for key, streams in conns.items()}


def _finish(stream):
    if not isinstance(stream, list):
        return stream
    first = stream[0][0]
    low = first + min(((seq - first + 2**31) % 2**32) - 2**31 for seq, _ in stream)
    out = StreamStart(low - 1)
    for seq, payload in stream:
        out.add(seq, payload)
    return out


def _cases():
    for path in EXPECTED:
        for want in json.loads(path.read_text()):
            if "JA4.1" in want:
                yield path.name[: -len(".json")], want


CASES = list(_cases())


@pytest.fixture(scope="module")
def streams():
    cache: dict[str, dict] = {}

    def get(capture: str) -> dict:
        if capture not in cache:
            cache[capture] = client_streams(PEER / capture)
        return cache[capture]
    return get


def test_every_reference_capture_is_present_with_its_licenses():
    assert len(CASES) == 143
    assert (PEER / "LICENSE-JA4").is_file() and (PEER / "LICENSE-FoxIO-1.1").is_file()
    for path in EXPECTED:
        assert (PEER / path.name[: -len(".json")]).is_file()


@pytest.mark.parametrize(("capture", "want"), CASES, ids=[f"{c}#{w['stream']}" for c, w in CASES])
def test_ja4_and_sni_equal_the_reference(streams, capture, want):
    key = (want["src"], int(want["srcport"]), want["dst"], int(want["dstport"]))
    same_tuple = [w for c, w in CASES if c == capture and
                  (w["src"], int(w["srcport"]), w["dst"], int(w["dstport"])) == key]
    data = streams(capture)[key][same_tuple.index(want)]
    got = classify(data, b"", dst_port=key[3])
    assert got.tls and got.client_hello is not None
    assert got.client_hello.ja4 == want["JA4.1"]
    assert got.client_hello.sni == want.get("domain")


def test_tls_after_a_socks_preamble_is_found(streams):
    found = {}
    for key, datas in streams("socks-https-example.pcap").items():
        for data in datas:
            got = classify(data, b"", dst_port=key[3])
            if got.tls:
                found[got.tunnel] = found.get(got.tunnel, 0) + 1
    assert found == {"socks4": 2, "socks5": 1}
