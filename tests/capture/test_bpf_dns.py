"""The kernel filter keeps a UDP/53 query's payload when a judge reads DNS names, and only then.

The program runs twice: in a small classic BPF interpreter here (every user, every link type),
and in the kernel, attached by live capture to a veth whose other end is in a namespace the
test creates (root), where the captured query goes on through the flow table to its name.
"""
from __future__ import annotations

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from agent.capture import bpf
from agent.capture.bpf import DNS_BYTES, bpf_program
from agent.capture.interfaces import LINKTYPE_ETHERNET
from agent.flows.table import FlowTable
from tests.capture.test_live import E, V4, V6, _capture, _drain, _send, veth  # noqa: F401 (veth: a fixture)

LINKTYPE_RAW = 101
NAME = "mzxw6ytboi2dqnzrgq3tmmrzgiytmobsha2teojugi3dkmjqgezdgnbv.exfil.example.com"
QUERY = DNS(rd=1, qd=DNSQR(qname=NAME))
HEADERS_ONLY = 68  # what other UDP keeps past the link header: the longest IPv4 header + UDP's


def run(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """What the kernel keeps of `packet`: classic BPF as linux/filter.h defines the opcodes bpf.py uses
    (a load past the end drops the packet)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code in (bpf.LD_H_ABS, bpf.LD_B_ABS, bpf.LD_H_IND, bpf.LD_B_IND, bpf.LDX_MSH):
            at = k + (x if code in (bpf.LD_H_IND, bpf.LD_B_IND) else 0)
            size = 2 if code in (bpf.LD_H_ABS, bpf.LD_H_IND) else 1
            if at + size > len(packet):
                return 0
            value = int.from_bytes(packet[at:at + size], "big")
            if code == bpf.LDX_MSH:
                x = (value & 0x0F) * 4
            else:
                a = value
        elif code in (bpf.JEQ, bpf.JSET):
            pc += jt if (a == k if code == bpf.JEQ else a & k) else jf
        elif code == bpf.RET_K:
            return min(k, len(packet))
        elif code == bpf.AND_K:
            a &= k
        elif code == bpf.RSH_K:
            a >>= k
        elif code == bpf.ADD_X:
            a = (a + x) & 0xFFFFFFFF
        elif code == bpf.SUB_X:
            a = (a - x) & 0xFFFFFFFF
        elif code == bpf.TAX:
            x = a
        else:
            raise AssertionError(f"opcode {code:#x} is not interpreted here")


def kept(linktype: int, packet, *, dns_names: bool) -> int:
    frame = bytes(E / packet) if linktype == LINKTYPE_ETHERNET else bytes(packet)
    return run(bpf_program(linktype, dns_names=dns_names), frame)


@pytest.mark.parametrize("linktype, off", [(LINKTYPE_ETHERNET, 14), (LINKTYPE_RAW, 0)], ids=["ether", "raw"])
def test_udp_to_port_53_keeps_its_payload_only_with_dns_names(linktype, off):
    for ip, headers in ((IP(**V4), 28), (IPv6(**V6), 48)):
        query = ip / UDP(sport=40053, dport=53) / QUERY
        assert kept(linktype, query, dns_names=True) == off + headers + len(QUERY)  # whole
        assert kept(linktype, query, dns_names=False) == off + HEADERS_ONLY
        big = ip / UDP(sport=40053, dport=53) / Raw(b"q" * 1400)
        assert kept(linktype, big, dns_names=True) == off + HEADERS_ONLY + DNS_BYTES  # 512 payload bytes or more
        for other in (UDP(sport=40053, dport=5353), UDP(sport=53, dport=40053)):  # another port, an answer
            assert kept(linktype, ip / other / Raw(b"a" * 300), dns_names=True) == off + HEADERS_ONLY


def test_the_other_classes_keep_what_they_kept():
    for packet in (IP(**V4) / TCP(sport=40000, dport=80, flags="S"),
                   IP(**V4) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"x" * 5000),
                   IP(**V4) / TCP(sport=40000, dport=53, flags="A"),
                   IP(**V4) / UDP(sport=40002, dport=4789) / Raw(b"v" * 300)):
        assert kept(LINKTYPE_ETHERNET, packet, dns_names=True) == kept(LINKTYPE_ETHERNET, packet, dns_names=False)
    # Without a judge reading names the program is the one it was: no instruction more per packet.
    for linktype in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
        assert not any(code == bpf.JEQ and k == 53 for code, _jt, _jf, k in bpf_program(linktype))
        assert len(bpf_program(linktype, dns_names=True)) == len(bpf_program(linktype)) + 3


def test_in_the_kernel_a_captured_query_keeps_its_name(veth):
    host, ns, peer = veth
    capture, out = _capture(host, dns_names=True)
    try:
        _send(ns, peer, [E / IP(**V4) / UDP(sport=40053, dport=53) / QUERY,
                         E / IP(**V4) / UDP(sport=40054, dport=53) / Raw(b"q" * 1400),
                         E / IP(**V4) / UDP(sport=40055, dport=5353) / Raw(b"m" * 300)])
        frames = _drain(out, 3)
    finally:
        capture.stop()
    assert [len(f) for _ts, _lt, f in frames] == [14 + 28 + len(QUERY), 14 + HEADERS_ONLY + DNS_BYTES,
                                                  14 + HEADERS_ONLY]
    ended = []
    table = FlowTable(on_end=lambda flow, result: ended.append(flow))
    table.dns_queries = True
    table.ingest(frames)
    table.flush()
    assert [f.dns_query for f in ended] == [NAME, None, None]


def test_in_the_kernel_without_dns_names_udp_is_headers_only(veth):
    host, ns, peer = veth
    capture, out = _capture(host)
    try:
        _send(ns, peer, [E / IP(**V4) / UDP(sport=40053, dport=53) / QUERY])
        frames = _drain(out, 1)
    finally:
        capture.stop()
    assert [len(f) for _ts, _lt, f in frames] == [14 + HEADERS_ONLY]
