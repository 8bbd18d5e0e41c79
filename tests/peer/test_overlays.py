"""Overlay captures from the JA4 project, replayed through read_frames and FlowTable.

../shared/peer-pcaps/ja4/ holds FoxIO-LLC/ja4 captures (commit 0e54bc8, BSD-3-Clause,
see LICENSE-JA4), read in place with the reference tool's answers in expected/<capture>.json. The
reference names each TCP stream by its outer tunnel addresses but by the inner
connection's ports; flowwarden must unwrap the tunnel, so each flow here has the
inner addresses and exactly the reference's ports.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.flows.table import FlowTable

PEER = Path(__file__).resolve().parents[3] / "shared" / "peer-pcaps" / "ja4"

# capture -> (inner client, inner server) of each reference stream, in stream order
INNER = {
    # Ethernet / IPv4 / GRE (S) / ERSPAN II / Ethernet / IPv4 / UDP 4789 -> 4790 / VXLAN-GPE (next: Ethernet)
    #   / Ethernet / IPv4 / TCP
    "gre-erspan-vxlan.pcap": [("10.16.27.12", "10.16.27.131")],
    # Ethernet / IPv4 / UDP 6081 / Geneve (with and without options) / Ethernet / IPv4 / TCP (SSH) or ICMP
    "tcpdump-geneve.pcap": [("30.0.0.2", "30.0.0.1")],
    # Ethernet / IPv4 / GRE (protocol IPv4) / IPv4 / TCP (SSH), UDP (NTP, DNS) or ICMP
    "gre-sample.pcap": [("66.59.111.190", "172.28.2.3")],
}


def replay(capture: str):
    ended = []
    table = FlowTable(on_end=lambda flow, cls: ended.append((flow, cls)))
    for batch in read_frames([PEER / capture]):
        table.ingest(batch)
    table.flush()
    return table, ended


def reference(capture: str) -> list[dict]:
    return json.loads((PEER / "expected" / f"{capture}.json").read_text())


@pytest.mark.parametrize("capture", list(INNER))
def test_each_reference_stream_is_one_inner_flow_with_the_reference_ports(capture):
    table, ended = replay(capture)
    tcp = [flow for flow, _ in ended if flow.protocol == "TCP"]
    ref = reference(capture)
    assert len(tcp) == len(ref)
    for want, (client, server) in zip(ref, INNER[capture]):
        flow, = [f for f in tcp if (f.src_port, f.dst_port) == (int(want["srcport"]), int(want["dstport"]))]
        assert (flow.src_ip, flow.dst_ip) == (client, server)
        assert {flow.src_ip, flow.dst_ip}.isdisjoint({want["src"], want["dst"]})  # not the tunnel ends
        assert flow.established and not flow.mid_stream
    assert table.dropped == {}


@pytest.mark.parametrize("capture", list(INNER))
def test_no_flow_is_left_on_the_tunnel_endpoints(capture):
    _, ended = replay(capture)
    outer = {reference(capture)[0]["src"], reference(capture)[0]["dst"]}
    assert all({f.src_ip, f.dst_ip}.isdisjoint(outer) for f, _ in ended)


def test_erspan_vxlan_gpe_flow_counts_the_innermost_ip_lengths():
    frames = [f for batch in read_frames([PEER / "gre-erspan-vxlan.pcap"]) for f in batch]
    # Every frame has the same stack: the inner IPv4 header starts at byte 114
    # (14 Ethernet + 20 IPv4 + 8 GRE + 8 ERSPAN II + 14 + 20 + 8 UDP + 8 VXLAN-GPE + 14).
    inner = [(f[114 + 12:114 + 16], struct.unpack_from("!H", f, 116)[0]) for _, _, f in frames]
    client = bytes([10, 16, 27, 12])
    _, ended = replay("gre-erspan-vxlan.pcap")
    (flow, cls), = ended
    assert flow.packets_src == sum(1 for src, _ in inner if src == client)
    assert flow.bytes_src == sum(n for src, n in inner if src == client)
    assert flow.bytes_dst == sum(n for src, n in inner if src != client)
    assert flow.closed and cls.app == "http"


def test_icmp_inside_the_tunnels_is_skipped_and_udp_inside_gre_makes_inner_flows():
    table, _ = replay("tcpdump-geneve.pcap")
    assert table.skipped == {"icmp": 6}
    table, ended = replay("gre-sample.pcap")
    assert table.skipped == {"icmp": 10}
    udp = sorted((f.src_ip, f.src_port, f.dst_ip, f.dst_port) for f, _ in ended if f.protocol == "UDP")
    assert ("66.59.111.190", 123, "18.26.4.105", 123) in udp
    assert ("66.59.111.190", 37675, "172.28.2.3", 53) in udp
