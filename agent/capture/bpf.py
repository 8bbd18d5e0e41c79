"""The kernel filter of live capture: a classic BPF program built per link type (**capture**).

It runs in the kernel on every packet of every captured interface, before any
copy to user space, so it decides most of the agent's cost. What it keeps and
why is in docs/capture.md; `bpf_program` documents the rules. Written by hand
(not compiled from a tcpdump expression) because one program returns different
snap lengths per packet class, which the pcap filter language cannot express,
and because the node image then needs neither libpcap nor tcpdump.
"""
from __future__ import annotations

import ctypes
import socket
import struct

from scapy.arch.linux import SO_ATTACH_FILTER

from agent.capture.interfaces import LINKTYPE_ETHERNET

FULL = 0x40000  # "keep the whole packet"
TUNNEL_PORTS = (4789, 8472, 6081, 4790)  # VXLAN (RFC 7348, Linux), Geneve (RFC 8926), VXLAN-GPE
TCP_SYN_FIN_RST = 0x07  # RFC 9293 §3.1 flag bits
DNS_PORT = 53
DNS_BYTES = 512  # a DNS message over UDP without EDNS (RFC 1035 §2.3.4): a query's question fits

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
LD_H_ABS, LD_B_ABS, LD_H_IND, LD_B_IND, LDX_MSH = 0x28, 0x30, 0x48, 0x50, 0xB1
JEQ, JSET, RET_K, AND_K, RSH_K, ADD_X, SUB_X, TAX = 0x15, 0x45, 0x06, 0x54, 0x74, 0x0C, 0x1C, 0x07


def bpf_program(linktype: int, *, payload_bytes: int = 4096,
                dns_names: bool = False) -> list[tuple[int, int, int, int]]:
    """The kernel filter: (code, jt, jf, k) instructions for a socket of `linktype`.

    Kept whole: TCP SYN/FIN/RST, IP fragments, tunnels (IPIP, GRE, VXLAN, Geneve),
    SCTP, VLAN-tagged and IPv6-with-extension-header frames (the decoder's general
    path). Kept truncated: TCP segments with payload (headers + `payload_bytes`, what
    the TLS/app classifier reads) and UDP (headers only: ports are all the judges
    need; with `dns_names`, datagrams to port 53 keep `DNS_BYTES` of payload, for a
    judge reading the query's name). Dropped: pure ACKs, ICMP, ICMPv6 and non-IP frames.
    """
    off = 14 if linktype == LINKTYPE_ETHERNET else 0
    tcp_snap, udp_snap, dns_snap = off + 120 + payload_bytes, off + 68, off + 68 + DNS_BYTES
    prog: list = []  # entries: (code, jt label, jf label, k) with labels resolved below
    labels: dict[str, int] = {}

    def op(code, k=0, jt=None, jf=None):
        prog.append((code, jt, jf, k))

    def label(name):
        labels[name] = len(prog)

    if off:
        op(LD_H_ABS, 12)
        op(JEQ, 0x0800, "v4")
        op(JEQ, 0x86DD, "v6")
        op(JEQ, 0x8100, "full")
        op(JEQ, 0x88A8, "full", "drop")
    else:
        op(LD_B_ABS, 0)
        op(AND_K, 0xF0)
        op(JEQ, 0x40, "v4")
        op(JEQ, 0x60, "v6", "drop")
    label("v4")
    op(LD_H_ABS, off + 6)
    op(JSET, 0x3FFF, "full")  # MF or a fragment offset
    op(LD_B_ABS, off + 9)
    op(JEQ, 6, "v4tcp")
    op(JEQ, 17, "v4udp")
    for proto in (132, 4, 41, 47):  # SCTP, IPIP, 6in4, GRE
        op(JEQ, proto, "full")
    op(RET_K, 0)
    label("v4udp")
    op(LDX_MSH, off)
    op(LD_H_IND, off + 2)
    for port in TUNNEL_PORTS:
        op(JEQ, port, "full")
    if dns_names:
        op(JEQ, DNS_PORT, "dns")
    op(RET_K, udp_snap)
    label("v4tcp")
    op(LDX_MSH, off)
    op(LD_B_IND, off + 13)
    op(JSET, TCP_SYN_FIN_RST, "full")
    op(LD_B_IND, off + 12)
    op(AND_K, 0xF0)
    op(RSH_K, 2)  # data offset * 4
    op(ADD_X)  # + IP header length
    op(TAX)
    op(LD_H_ABS, off + 2)  # total length
    op(SUB_X)
    op(JEQ, 0, "drop")  # no payload and no SYN/FIN/RST: a pure ACK
    op(RET_K, tcp_snap)
    label("v6")
    op(LD_B_ABS, off + 6)
    op(JEQ, 6, "v6tcp")
    op(JEQ, 17, "v6udp")
    op(JEQ, 58, "drop", "full")  # ICMPv6; extension headers take the general path
    label("v6tcp")
    op(LD_B_ABS, off + 53)
    op(JSET, TCP_SYN_FIN_RST, "full")
    op(LD_B_ABS, off + 52)
    op(AND_K, 0xF0)
    op(RSH_K, 2)
    op(TAX)
    op(LD_H_ABS, off + 4)  # payload length
    op(SUB_X)
    op(JEQ, 0, "drop")
    op(RET_K, tcp_snap)
    label("v6udp")
    op(LD_H_ABS, off + 42)
    for port in TUNNEL_PORTS:
        op(JEQ, port, "full")
    if dns_names:
        op(JEQ, DNS_PORT, "dns")
    op(RET_K, udp_snap)
    if dns_names:
        label("dns")
        op(RET_K, dns_snap)
    label("full")
    op(RET_K, FULL)
    label("drop")
    op(RET_K, 0)

    def rel(target, at):
        return 0 if target is None else labels[target] - at - 1

    return [(code, rel(jt, i), rel(jf, i), k) for i, (code, jt, jf, k) in enumerate(prog)]


def attach_bpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a struct sock_fprog pointing at the instructions."""
    code = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies it
