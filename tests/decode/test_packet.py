"""decode_frame: frame bytes -> (proto, key, flags, seq, payload_start, payload_end, ip_len).

Frames are hex literals, one commented line per header, so a reader can check
every offset against the RFC. Checksums are zero: the decoder does not read them.
"""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from agent.decode import packet
from agent.decode.errors import DecodeError, Skip
from agent.decode.packet import decode_frame, reverse_key, split_key

FUZZ = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# --- layers used below ----------------------------------------------------------
ETH = "02420af40214 02420af4010a"          # Ethernet: dst 02:42:0a:f4:02:14, src 02:42:0a:f4:01:0a
NODE_ETH = "02420a120003 02420a120002"     # Ethernet between the nodes
IP4_TCP = ("4500 0028 0001 4000 4006 0000"  # IPv4: IHL 5, total 40, id 1, DF, TTL 64, proto 6, csum
           "0af4010a 0af40214")             #   10.244.1.10 -> 10.244.2.20
TCP_SYN = "a8ca 1f90 000003e8 00000000 5002 faf0 0000 0000"  # TCP: 43210 -> 8080, seq 1000, off 5, SYN
IP6_TCP = ("6000 0000 0014 06 40"           # IPv6: payload 20, next header TCP, hop limit 64
           "fd000010024400010000000000000010"   # fd00:10:244:1::10
           "fd000010024400020000000000000020")  # fd00:10:244:2::20
INNER = ETH + "0800" + IP4_TCP + TCP_SYN   # the pod's frame inside Ethernet-carrying tunnels (54 bytes)

KEY4 = h("0af4010a 0af40214 a8ca 1f90")   # src, dst, sport, dport
KEY6 = h("fd000010024400010000000000000010 fd000010024400020000000000000020 a8ca 1f90")
SYN = 0x02


def tcp4(start: int, *, end: int | None = None) -> tuple:
    return (6, KEY4, SYN, 1000, start, start if end is None else end, 40)


# name -> (linktype, frame, expected result)
VALID = {
    "ethernet-ipv4-tcp": (1, h(ETH, "0800", IP4_TCP, TCP_SYN), tcp4(54)),
    "ethernet-ipv4-tcp-with-payload": (1, h(
        ETH, "0800",
        "4500 002d 0001 4000 4006 0000 0af4010a 0af40214",  # IPv4: total 45
        "a8ca 1f90 000003e9 00001389 5018 faf0 0000 0000",  # TCP: seq 1001, ack 5001, PSH+ACK
        "68656c6c6f"),                                      # payload "hello"
        (6, KEY4, 0x18, 1001, 54, 59, 45)),
    "vlan-8021q": (1, h(
        ETH, "8100 0064",                   # 802.1Q tag: VLAN 100
        "0800", IP4_TCP, TCP_SYN), tcp4(58)),
    "vlan-qinq": (1, h(
        ETH, "88a8 00c8",                   # 802.1ad outer tag: VLAN 200
        "8100 0064",                        # 802.1Q inner tag: VLAN 100
        "0800", IP4_TCP, TCP_SYN), tcp4(62)),
    "ipv4-options": (1, h(
        ETH, "0800",
        "4600 002c 0001 4000 4006 0000 0af4010a 0af40214",  # IPv4: IHL 6, total 44
        "94040000",                                         #   option: Router Alert (RFC 2113)
        TCP_SYN), (6, KEY4, SYN, 1000, 58, 58, 44)),
    "ipv6-tcp": (1, h(ETH, "86dd", IP6_TCP, TCP_SYN), (6, KEY6, SYN, 1000, 74, 74, 60)),
    "ipv6-big-tcp-payload-length-0": (1, h(
        ETH, "86dd",
        "6000 0000 0000 06 40",             # IPv6: payload length 0 (GSO/BIG TCP before segmentation)
        "fd000010024400010000000000000010 fd000010024400020000000000000020",
        TCP_SYN, "68656c6c6f"),             # TCP SYN carrying "hello": the frame gives the size
        (6, KEY6, SYN, 1000, 74, 79, 65)),
    "ipv6-extension-headers": (1, h(
        ETH, "86dd",
        "6000 0000 002c 00 40",             # IPv6: payload 44, next header 0 (hop-by-hop)
        "fd000010024400010000000000000010 fd000010024400020000000000000020",
        "3c 00 0104 00000000",              # hop-by-hop: next 60 (dest opts), len 0, PadN(4)
        "2c 00 0104 00000000",              # destination options: next 44 (fragment), PadN(4)
        "06 00 0000 00001234",              # fragment: next TCP, offset 0, M=0 (atomic), id 0x1234
        TCP_SYN), (6, KEY6, SYN, 1000, 98, 98, 84)),
    "ipv6-first-fragment": (1, h(
        ETH, "86dd",
        "6000 0000 001c 2c 40",             # IPv6: payload 28, next header 44 (fragment)
        "fd000010024400010000000000000010 fd000010024400020000000000000020",
        "06 00 0001 00001234",              # fragment: next TCP, offset 0, M=1
        TCP_SYN), (6, KEY6, SYN, 1000, 82, 82, 68)),
    "ipv4-first-fragment": (1, h(
        ETH, "0800",
        "4500 0024 4242 2000 4011 0000 0af4010a 0af40214",  # IPv4: total 36, id 0x4242, MF, UDP
        "9c40 1fbd 0bc0 0000",              # UDP: 40000 -> 8125, length 3008 (whole datagram)
        "6162636465666768"),                # the datagram's first 8 bytes
        (17, h("0af4010a 0af40214 9c40 1fbd 11"), 0, 0, 42, 50, 36)),
    "ethernet-ipv4-udp": (1, h(
        ETH, "0800",
        "4500 0021 0001 0000 4011 0000 0af4010a 0af40214",  # IPv4: total 33, UDP
        "9c55 0035 000d 0000",              # UDP: 40021 -> 53, length 13
        "0102030405"), (17, h("0af4010a 0af40214 9c55 0035 11"), 0, 0, 42, 47, 33)),
    "vxlan-4789": (1, h(
        NODE_ETH, "0800",
        "4500 005a 0002 0000 4011 0000 ac120002 ac120003",  # IPv4: total 90, UDP, node -> node
        "c350 12b5 0046 0000",              # UDP: 50000 -> 4789, length 70
        "08 000000 00002a 00",              # VXLAN: I flag, VNI 42 (RFC 7348)
        INNER), tcp4(104)),
    "vxlan-8472": (1, h(
        NODE_ETH, "0800",
        "4500 005a 0002 0000 4011 0000 ac120002 ac120003",  # IPv4: total 90, UDP
        "c350 2118 0046 0000",              # UDP: 50000 -> 8472 (flannel), length 70
        "08 000000 000001 00",              # VXLAN: I flag, VNI 1
        INNER), tcp4(104)),
    "vxlan-gpe-4790": (1, h(
        NODE_ETH, "0800",
        "4500 004c 0002 0000 4011 0000 ac120002 ac120003",  # IPv4: total 76, UDP
        "c350 12b6 0038 0000",              # UDP: 50000 -> 4790, length 56
        "0c 0000 01 00002a 00",             # VXLAN-GPE: I+P flags, next protocol 1 (IPv4), VNI 42
        IP4_TCP, TCP_SYN), tcp4(90)),
    "geneve-with-options": (1, h(
        NODE_ETH, "0800",
        "4500 0062 0002 0000 4011 0000 ac120002 ac120003",  # IPv4: total 98, UDP
        "c350 17c1 004e 0000",              # UDP: 50000 -> 6081, length 78
        "02 00 6558 000007 00",             # Geneve: opt len 2 (8 bytes), protocol 0x6558, VNI 7
        "0102 80 01 deadbeef",              #   option: class 0x0102, type 0x80, 4 bytes of data
        INNER), tcp4(112)),
    "gre-key-and-sequence": (1, h(
        NODE_ETH, "0800",
        "4500 0048 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 72, GRE
        "30 00 0800 0000002a 00000001",     # GRE: K+S flags, protocol IPv4, key 42, seq 1 (RFC 2890)
        IP4_TCP, TCP_SYN), tcp4(86)),
    "gre-checksum-key-and-sequence": (1, h(
        NODE_ETH, "0800",
        "4500 004c 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 76, GRE
        "b0 00 0800 0000 0000",             # GRE: C+K+S flags, protocol IPv4, checksum, reserved1
        "0000002a 00000001",                #   key 42, seq 1
        IP4_TCP, TCP_SYN), tcp4(90)),
    "erspan-ii": (1, h(
        NODE_ETH, "0800",
        "4500 005a 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 90, GRE
        "10 00 88be 00000007",              # GRE: S flag, protocol 0x88be (ERSPAN II), seq 7
        "1064 0001 00000000",               # ERSPAN II: version 1, VLAN 100, session 1, index 0
        INNER), tcp4(104)),
    "erspan-i": (1, h(
        NODE_ETH, "0800",
        "4500 004e 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 78, GRE
        "00 00 88be",                       # GRE: no flags, protocol 0x88be: ERSPAN type I, no header
        "", INNER), tcp4(92)),
    "erspan-iii": (1, h(
        NODE_ETH, "0800",
        "4500 005e 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 94, GRE
        "10 00 22eb 00000007",              # GRE: S flag, protocol 0x22eb (ERSPAN III), seq 7
        "2064 0001 00000000 0000 0000",     # ERSPAN III: version 2, VLAN 100, session 1, ts, SGT, O=0
        INNER), tcp4(108)),
    "erspan-iii-platform-subheader": (1, h(
        NODE_ETH, "0800",
        "4500 0066 0002 0000 402f 0000 ac120002 ac120003",  # IPv4: total 102, GRE
        "10 00 22eb 00000007",              # GRE: S flag, ERSPAN III, seq 7
        "2064 0001 00000000 0000 0001",     # ERSPAN III: ... O=1: a platform subheader follows
        "0800000000000000",                 #   platform-specific subheader (8 bytes)
        INNER), tcp4(116)),
    "ip-in-ip": (1, h(
        NODE_ETH, "0800",
        "4500 003c 0002 0000 4004 0000 ac120002 ac120003",  # IPv4: total 60, proto 4 (IP-in-IP)
        IP4_TCP, TCP_SYN), tcp4(74)),
    "6in4": (1, h(
        NODE_ETH, "0800",
        "4500 0050 0002 0000 4029 0000 ac120002 ac120003",  # IPv4: total 80, proto 41 (IPv6)
        IP6_TCP, TCP_SYN), (6, KEY6, SYN, 1000, 94, 94, 60)),
    "cooked-v1": (113, h(
        "0004 0001 0006 02420af4010a 0000", # Linux cooked v1: outgoing, ARPHRD_ETHER, addr, IPv4
        "0800", IP4_TCP, TCP_SYN), tcp4(56)),
    "cooked-v2": (276, h(
        "0800 0000 00000002",               # Linux cooked v2: protocol IPv4, reserved, ifindex 2
        "0001 04 06 02420af4010a 0000",     #   ARPHRD_ETHER, outgoing, addr len 6, addr
        IP4_TCP, TCP_SYN), tcp4(60)),
    "raw-ipv4": (101, h(IP4_TCP, TCP_SYN), tcp4(40)),
    "raw-ipv6": (101, h(IP6_TCP, TCP_SYN), (6, KEY6, SYN, 1000, 60, 60, 60)),
    "linktype-ipv4": (228, h(IP4_TCP, TCP_SYN), tcp4(40)),
    "linktype-ipv6": (229, h(IP6_TCP, TCP_SYN), (6, KEY6, SYN, 1000, 60, 60, 60)),
    "bsd-dlt-raw-14": (14, h(IP4_TCP, TCP_SYN), tcp4(40)),
    "null-loopback-ipv4": (0, h(
        "02000000",                         # BSD loopback: AF_INET, host (little-endian) order
        IP4_TCP, TCP_SYN), tcp4(44)),
    "loop-ipv6-macos": (108, h(
        "0000001e",                         # OpenBSD loop: AF_INET6 = 30 (macOS), network order
        IP6_TCP, TCP_SYN), (6, KEY6, SYN, 1000, 64, 64, 60)),
    "sctp-init": (1, h(
        ETH, "0800",
        "4500 0034 0001 4000 4084 0000 0af4010a 0af40214",  # IPv4: total 52, proto 132 (SCTP)
        "a8ca 270f 00000000 00000000",      # SCTP: 43210 -> 9999, verification tag 0, checksum
        "01 00 0014 00001234 0001a000 000a 000a 00000001"),  # INIT chunk (RFC 9260 §3.3.2)
        (132, h("0af4010a 0af40214 a8ca 270f 84"), 1, 0, 46, 66, 52)),
}

SKIPPED = {
    "icmp-echo": (1, h(
        ETH, "0800",
        "4500 001c 0001 0000 4001 0000 0af4010a 0af40214",  # IPv4: total 28, ICMP
        "0800 0000 0001 0001"), "icmp"),    # ICMP echo request
    "icmpv6-echo": (1, h(
        ETH, "86dd",
        "6000 0000 0008 3a 40",             # IPv6: payload 8, next header 58 (ICMPv6)
        "fd000010024400010000000000000010 fd000010024400020000000000000020",
        "8000 0000 0001 0001"), "icmp"),    # ICMPv6 echo request
    "arp": (1, h(
        "ffffffffffff 02420af4010a 0806",   # Ethernet: broadcast, type ARP
        "0001 0800 06 04 0001 02420af4010a 0af4010a 000000000000 0af40214"), "non-ip"),
    "ipv4-later-fragment": (1, h(
        ETH, "0800",
        "4500 0024 4242 20b9 4011 0000 0af4010a 0af40214",  # IPv4: MF, offset 185*8 = 1480
        "6162636465666768 6162636465666768"), "ip-fragment"),
    "ipv6-later-fragment": (1, h(
        ETH, "86dd",
        "6000 0000 0010 2c 40",             # IPv6: payload 16, next header fragment
        "fd000010024400010000000000000010 fd000010024400020000000000000020",
        "11 00 05c9 00001234",              # fragment: next UDP, offset 185*8, M=1
        "6162636465666768"), "ip-fragment"),
    "ipv6-no-next-header": (1, h(
        ETH, "86dd",
        "6000 0000 0000 3b 40",             # IPv6: payload 0, next header 59 (none)
        "fd000010024400010000000000000010 fd000010024400020000000000000020"), "ipv6-no-next-header"),
    "esp": (1, h(
        ETH, "0800",
        "4500 001c 0001 0000 4032 0000 0af4010a 0af40214",  # IPv4: total 28, proto 50 (ESP)
        "00000001 00000001"), "ip-proto-50"),
    "null-loopback-non-ip": (0, h("07000000", "00"), "non-ip"),  # AF 7: not an IP family
}

MALFORMED = {
    "ipv4-ihl-4": (1, h(ETH, "0800", "4400 0028 0001 4000 4006 0000 0af4010a 0af40214", TCP_SYN),
                   "ipv4-bad-ihl"),
    "ipv4-version-15": (1, h(ETH, "0800", "ff" * 40), "ipv4-bad-version"),
    "ipv4-total-below-ihl": (1, h(ETH, "0800", "4500 000c 0001 4000 4006 0000 0af4010a 0af40214", TCP_SYN),
                             "ipv4-bad-length"),
    "ipv6-carrying-ipv4": (1, h(ETH, "86dd", IP4_TCP, TCP_SYN), "ipv6-bad-version"),
    "tcp-offset-4": (1, h(ETH, "0800", IP4_TCP, "a8ca 1f90 000003e8 00000000 4002 faf0 0000 0000"),
                     "tcp-bad-offset"),
    "raw-version-5": (101, h("5500 0028", "00" * 36), "raw-bad-version"),
    "unsupported-linktype": (147, h(IP4_TCP, TCP_SYN), "unsupported-linktype-147"),
    "empty-ethernet": (1, b"", "ether-truncated"),
}


@pytest.mark.parametrize("name", list(VALID))
def test_each_encapsulation_decodes_to_the_innermost_flow(name):
    linktype, frame, want = VALID[name]
    assert decode_frame(linktype, frame) == want


@pytest.mark.parametrize("name", list(SKIPPED))
def test_packets_we_do_not_judge_are_skipped_with_a_reason(name):
    linktype, frame, reason = SKIPPED[name]
    with pytest.raises(Skip) as info:
        decode_frame(linktype, frame)
    assert info.value.reason == reason


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_packets_are_decode_errors_with_a_reason(name):
    linktype, frame, reason = MALFORMED[name]
    with pytest.raises(DecodeError) as info:
        decode_frame(linktype, frame)
    assert info.value.reason == reason


def test_ethernet_padding_is_not_payload_and_not_counted():
    frame = h(ETH, "0800", IP4_TCP, TCP_SYN, "000000000000")  # 6 bytes of padding to the 60-byte minimum
    assert decode_frame(1, frame) == tcp4(54)


def test_a_zero_ipv4_total_length_from_segmentation_offload_means_the_rest_of_the_frame():
    frame = h(ETH, "0800", "4500 0000 0001 4000 4006 0000 0af4010a 0af40214",  # IPv4: total 0 (TSO)
              "a8ca 1f90 000003e9 00001389 5018 faf0 0000 0000", "00" * 3000)  # TCP + 3000 bytes
    assert decode_frame(1, frame) == (6, KEY4, 0x18, 1001, 54, 3054, 3040)


def test_a_snaplen_cut_keeps_the_header_length_and_clips_the_payload():
    _, frame, _ = VALID["ethernet-ipv4-tcp-with-payload"]
    assert decode_frame(1, frame[:56]) == (6, KEY4, 0x18, 1001, 54, 56, 45)


def test_a_vxlan_port_without_the_vni_flag_stays_plain_udp():
    _, frame, _ = VALID["vxlan-4789"]
    frame = frame[:42] + b"\x00" + frame[43:]  # VXLAN flags 0: not VXLAN (RFC 7348 §5)
    got = decode_frame(1, frame)
    assert got[0] == 17 and got[1] == h("ac120002 ac120003 c350 12b5 11")


def test_encapsulation_deeper_than_the_limit_is_skipped_not_followed():
    inner = h(IP4_TCP, TCP_SYN)
    for _ in range(packet.MAX_DEPTH + 1):  # wrap in IP-in-IP until too deep
        total = 20 + len(inner)
        inner = h(f"4500 {total:04x} 0002 0000 4004 0000 ac120002 ac120003") + inner
    with pytest.raises(Skip) as info:
        decode_frame(101, inner)
    assert info.value.reason == "ip-proto-4"
    assert decode_frame(101, inner[20:]) == tcp4(20 * packet.MAX_DEPTH + 40)


# --- no frame makes the decoder raise anything else -------------------------------

def _check_result(got, frame: bytes) -> None:
    proto, key, flags, seq, start, end, ip_len = got
    assert proto in (6, 17, 132)
    assert len(key) == (12 if proto == 6 else 13) or len(key) == (36 if proto == 6 else 37)
    assert 0 <= start <= end <= len(frame)
    assert ip_len >= 0 and 0 <= flags < 256 and 0 <= seq < 2**32


ALL = {**{n: v[:2] for n, v in VALID.items()}, **{n: v[:2] for n, v in SKIPPED.items()},
       **{n: v[:2] for n, v in MALFORMED.items()}}


@pytest.mark.parametrize("name", list(ALL))
def test_every_truncated_prefix_is_a_decode_error_skip_or_a_sane_result(name):
    linktype, frame = ALL[name]
    for cut in range(len(frame)):
        try:
            got = decode_frame(linktype, frame[:cut])
        except (DecodeError, Skip):
            continue
        _check_result(got, frame[:cut])


@pytest.mark.parametrize("name", [n for n, (_, f, want) in VALID.items() if want[4] == len(f)])
def test_a_header_only_frame_cut_anywhere_in_its_headers_does_not_decode(name):
    linktype, frame, _ = VALID[name]
    for cut in range(len(frame)):
        with pytest.raises((DecodeError, Skip)):
            decode_frame(linktype, frame[:cut])


LINKTYPES = st.sampled_from(sorted(packet.SUPPORTED_LINKTYPES) + [147, 65535])


@FUZZ
@given(linktype=LINKTYPES, frame=st.binary(max_size=160))
def test_arbitrary_bytes_only_ever_decode_or_raise_our_errors(linktype, frame):
    try:
        got = decode_frame(linktype, frame)
    except (DecodeError, Skip):
        return
    _check_result(got, frame)


def mutated(data, frame: bytes, *, changes: int = 4) -> bytes:
    """`frame` with up to `changes` bytes overwritten, then cut anywhere (hypothesis draws)."""
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, changes))):
        if buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf[:data.draw(st.integers(0, len(buf)))])


@FUZZ
@given(name=st.sampled_from(list(ALL)), data=st.data())
def test_mutated_real_frames_only_ever_decode_or_raise_our_errors(name, data):
    linktype, frame = ALL[name]
    buf = mutated(data, frame)
    try:
        got = decode_frame(linktype, buf)
    except (DecodeError, Skip):
        return
    _check_result(got, buf)


# --- the fast path agrees with the general path ------------------------------------

def _general(frame: bytes):
    """The general Ethernet path, with decode_frame's mapping of stray index errors."""
    try:
        return ("ok", packet._ether(frame, 0, 0))
    except (IndexError, struct.error):
        return ("DecodeError", "truncated")
    except (DecodeError, Skip) as e:
        return (type(e).__name__, e.reason)


def _fast(frame: bytes):
    try:
        return ("ok", decode_frame(1, frame))
    except (DecodeError, Skip) as e:
        return (type(e).__name__, e.reason)


PERTURB = ["clean", "clean", "ihl", "frag", "total", "total", "version", "snaplen", "snaplen", "ethertype", "doff"]


@st.composite
def ethernet_ipv4_frames(draw):
    """Mostly well-formed Ethernet/IPv4/TCP|UDP frames (the fast path's diet), perturbed in at most one way."""
    perturb = {draw(st.sampled_from(PERTURB))}
    proto = draw(st.sampled_from([17, 6, 17, 6, 1, 132]))
    ihl = draw(st.one_of(st.integers(0, 5), st.integers(0, 15))) if "ihl" in perturb else 5
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    frag = (draw(st.integers(0, 0xFFFF)) if "frag" in perturb else
            draw(st.sampled_from([0, 0x4000, 0x8000, 0xC000])))  # DF and the reserved bit are no fragment
    if proto == 6:
        doff = draw(st.one_of(st.integers(0, 4), st.integers(0, 15))) if "doff" in perturb else draw(st.sampled_from([5, 5, 8, 15]))
        l4 = struct.pack("!HHIIBBHHH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
                         draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                         doff << 4, draw(st.integers(0, 255)), 0xFFFF, 0, 0)
        l4 += draw(st.binary(min_size=max(0, doff * 4 - 20), max_size=max(0, doff * 4 - 20)))
    else:
        dport = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from([4789, 4790, 6081])))
        l4 = struct.pack("!HHHH", draw(st.integers(0, 0xFFFF)), dport, 0, 0)
        if dport in (4789, 8472, 4790, 6081) and draw(st.booleans()):
            l4 += h("0c 0000 01 00002a 00") if dport == 4790 else h("08 000000 00002a 00")
            l4 += h(INNER) if dport != 4790 else h(IP4_TCP, TCP_SYN)
    body = options + l4 + draw(st.binary(min_size=12 if proto == 17 else 0, max_size=40))
    total = 20 + len(body)
    if "total" in perturb:
        total = draw(st.one_of(st.just(0), st.integers(0, 60), st.integers(0, 0xFFFF), st.integers(max(0, total - 30), min(0xFFFF, total + 30))))
    version_ihl = draw(st.integers(0, 255)) if "version" in perturb else 0x40 | ihl
    ip = struct.pack("!BBHHHBBH4s4s", version_ihl, 0, total, 1, frag, 64, proto, 0,
                     bytes([10, 244, 1, 10]), bytes([10, 244, 2, 20]))
    ethertype = draw(st.sampled_from([b"\x81\x00", b"\x86\xdd", b"\x08\x06"])) if "ethertype" in perturb else b"\x08\x00"
    frame = h(ETH) + ethertype + ip + body + draw(st.binary(max_size=8))  # trailing bytes: padding
    if "snaplen" in perturb:
        frame = frame[:draw(st.one_of(st.integers(0, len(frame)), st.integers(min(54, len(frame)), len(frame))))]
    return frame


def _tcp_frame(total: int, *, doff: int = 5, frag: str = "4000", ihl: int = 5, cut: int | None = None) -> bytes:
    frame = h(ETH, "0800", f"4{ihl:x}00 {total:04x} 0001 {frag} 4006 0000 0af4010a 0af40214", "00" * (ihl * 4 - 20),
              f"a8ca 1f90 000003e8 00000000 {doff:x}018 faf0 0000 0000", "01" * max(0, doff * 4 - 20), "ee" * 10)
    return frame[:cut]


def _udp_frame(total: int, *, cut: int | None = None) -> bytes:
    return h(ETH, "0800", f"4500 {total:04x} 0001 0000 4011 0000 0af4010a 0af40214",
             "9c55 0035 0012 0000", "ee" * 20)[:cut]


# The fast path's boundaries, always tried: total length, data offset, snaplen, fragments.
FAST_PATH_EDGES = [
    _tcp_frame(40), _tcp_frame(39), _tcp_frame(20), _tcp_frame(0), _tcp_frame(50), _tcp_frame(1000),
    _tcp_frame(40, doff=4), _tcp_frame(40, doff=0), _tcp_frame(72, doff=8, cut=60), _tcp_frame(60, doff=8, cut=58),
    _tcp_frame(72, doff=15), _tcp_frame(40, cut=53), _tcp_frame(40, cut=54), _tcp_frame(40, cut=47),
    _tcp_frame(40, cut=42), _tcp_frame(40, frag="2000"), _tcp_frame(40, frag="2001"), _tcp_frame(40, frag="0100"),
    _tcp_frame(40, frag="8000"), _tcp_frame(44, ihl=6), _tcp_frame(40, ihl=4),
    _udp_frame(28), _udp_frame(27), _udp_frame(8), _udp_frame(0), _udp_frame(48, cut=42), _udp_frame(48, cut=50),
    _udp_frame(48, cut=41), _udp_frame(500),
]


@pytest.mark.parametrize("frame", FAST_PATH_EDGES, ids=range(len(FAST_PATH_EDGES)))
def test_the_fast_path_agrees_with_the_general_path_at_its_edges(frame):
    assert _fast(frame) == _general(frame)


@settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "1000")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(frame=ethernet_ipv4_frames())
def test_the_fast_path_gives_exactly_what_the_general_path_gives(frame):
    assert _fast(frame) == _general(frame)


def test_the_fast_path_cases_from_the_table_agree_with_the_general_path():
    for name, (linktype, frame, _) in VALID.items():
        if linktype == 1:
            assert _fast(frame) == _general(frame), name


# --- flow keys --------------------------------------------------------------------

@given(v6=st.booleans(), src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16),
       sport=st.integers(0, 0xFFFF), dport=st.integers(0, 0xFFFF), proto=st.sampled_from([b"", b"\x11", b"\x84"]))
def test_reverse_key_swaps_the_ends_and_split_key_reads_them_back(v6, src, dst, sport, dport, proto):
    a = 16 if v6 else 4
    src, dst = src[:a], dst[:a]
    key = src + dst + struct.pack("!HH", sport, dport) + proto
    assert split_key(key) == (src, dst, sport, dport)
    assert split_key(reverse_key(key)) == (dst, src, dport, sport)
    assert reverse_key(reverse_key(key)) == key
    assert reverse_key(key)[2 * a + 4:] == proto


def test_a_decoded_key_splits_into_the_packets_addresses_and_ports():
    assert split_key(decode_frame(1, VALID["ethernet-ipv4-tcp"][1])[1]) == (
        bytes([10, 244, 1, 10]), bytes([10, 244, 2, 20]), 43210, 8080)
    src, dst, sport, dport = split_key(decode_frame(1, VALID["sctp-init"][1])[1])
    assert (sport, dport) == (43210, 9999)
    v6 = split_key(decode_frame(1, VALID["ipv6-tcp"][1])[1])
    assert v6[0] == bytes.fromhex("fd000010024400010000000000000010") and v6[3] == 8080
