"""FlowTable: frames in, one on_end(flow, classification) per conversation out.

Frames are built with struct (Ethernet/IPv4/TCP|UDP|SCTP, checksums zero) or
read from pcaps/crafted/; each test feeds them with explicit capture times and
collects what on_end receives.
"""
from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.config import FlowConfig
from agent.flows.table import FlowTable

CRAFTED = Path(__file__).resolve().parents[2] / "pcaps" / "crafted"
MACS = bytes.fromhex("02420af40214 02420af4010a")
S, SA, A, PA, FA, R, RA = 0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14
C, SRV = "10.244.1.10", "10.244.2.20"  # client and server addresses used throughout


def ipv4(src: str, dst: str, proto: int, l4: bytes, *, pad_to: int = 60) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    frame = MACS + b"\x08\x00" + ip + l4
    return frame + b"\x00" * (pad_to - len(frame))  # Ethernet pads short frames to 60 bytes


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, *, seq: int = 0, payload: bytes = b"") -> bytes:
    return ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"") -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def sctp(src: str, sport: int, dst: str, dport: int, chunk: int) -> bytes:
    return ipv4(src, dst, 132, struct.pack("!HHII", sport, dport, 0, 0) + struct.pack("!BBH", chunk, 0, 4))


def handshake(t: float, sport: int = 43210, dport: int = 8080) -> list:
    return [(t, 1, tcp(C, sport, SRV, dport, S, seq=1000)),
            (t + 0.001, 1, tcp(SRV, dport, C, sport, SA, seq=5000)),
            (t + 0.002, 1, tcp(C, sport, SRV, dport, A, seq=1001))]


class Recorder:
    """A FlowTable and what its on_end received."""

    def __init__(self, **settings):
        self.ended: list = []
        self.table = FlowTable(on_end=lambda flow, cls: self.ended.append((flow, cls)),
                               settings=FlowConfig(**settings))

    def feed(self, *frames) -> "Recorder":
        for f in frames:
            self.table.ingest(f if isinstance(f, list) else [f])
        return self

    def flows(self) -> list:
        self.table.flush()
        return [f for f, _ in self.ended]

    def only(self):
        flows = self.flows()
        assert len(flows) == 1, flows
        return flows[0]

    def ended_ports(self) -> list[int]:
        return [f.src_port for f, _ in self.ended]


def crafted(name: str) -> list:
    return [f for batch in read_frames([CRAFTED / name]) for f in batch]


# --- who started it -------------------------------------------------------------

def test_the_syn_sender_is_the_initiator_even_from_a_server_like_port():
    flow = Recorder().feed((1.0, 1, tcp(SRV, 80, C, 50000, S)), (1.1, 1, tcp(C, 50000, SRV, 80, SA))).only()
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == (SRV, 80, C, 50000)
    assert not flow.mid_stream and flow.protocol == "TCP"


def test_a_syn_ack_seen_first_makes_its_receiver_the_initiator():
    # Ports alone would call the 50000 side the client; the SYN-ACK says otherwise.
    flow = Recorder().feed((1.0, 1, tcp(SRV, 50000, C, 443, SA)), (1.1, 1, tcp(C, 443, SRV, 50000, A))).only()
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == (C, 443, SRV, 50000)
    assert flow.established and not flow.mid_stream
    assert (flow.packets_src, flow.packets_dst) == (1, 1)


@pytest.mark.parametrize(("sport", "dport", "client_port"), [
    (80, 40000, 40000),     # well-known server answers an ephemeral client
    (40000, 80, 40000),
    (8080, 40000, 40000),   # registered beats ephemeral
    (50000, 5432, 50000),
    (5432, 8080, 8080),     # both registered: the lower port is the server
    (22, 1000, 1000),       # both well-known: the lower port is the server
    (60000, 50000, 60000),  # both ephemeral: the lower port is the server
])
def test_without_a_syn_the_flow_is_mid_stream_and_ports_pick_the_client(sport, dport, client_port):
    flow = Recorder().feed((1.0, 1, tcp(C, sport, SRV, dport, PA, payload=b"x" * 10))).only()
    assert flow.mid_stream
    assert flow.src_port == client_port
    assert flow.src_ip == (C if sport == client_port else SRV)


def test_udp_initiator_is_the_first_sender_whatever_the_ports():
    flow = Recorder().feed((1.0, 1, udp(C, 53, SRV, 50000, b"q"))).only()
    assert (flow.src_ip, flow.src_port, flow.protocol, flow.mid_stream) == (C, 53, "UDP", False)


# --- established ----------------------------------------------------------------

def test_a_tcp_flow_is_established_only_once_the_responder_answers():
    syn_only = Recorder().feed((1.0, 1, tcp(C, 43210, SRV, 8080, S)), (2.0, 1, tcp(C, 43210, SRV, 8080, S))).only()
    assert not syn_only.established and syn_only.packets_src == 2
    answered = Recorder().feed(*handshake(1.0)).only()
    assert answered.established


def test_a_reset_is_not_an_answer():
    flow = Recorder().feed((1.0, 1, tcp(C, 43210, SRV, 9090, S)), (1.1, 1, tcp(SRV, 9090, C, 43210, RA))).only()
    assert not flow.established
    assert flow.closed and flow.packets_dst == 1


def test_udp_is_established_by_a_reply():
    one_way = Recorder().feed((1.0, 1, udp(C, 40125, SRV, 8125, b"m:1|c")), (1.1, 1, udp(C, 40125, SRV, 8125))).only()
    assert not one_way.established
    answered = Recorder().feed((1.0, 1, udp(C, 40053, SRV, 53, b"q")), (1.1, 1, udp(SRV, 53, C, 40053, b"a"))).only()
    assert answered.established


def test_sctp_is_established_by_init_ack_but_not_by_abort():
    ok = Recorder().feed((1.0, 1, sctp(C, 43210, SRV, 9999, 1)), (1.1, 1, sctp(SRV, 9999, C, 43210, 2))).only()
    assert ok.established and ok.protocol == "SCTP"
    aborted = Recorder().feed((1.0, 1, sctp(C, 43210, SRV, 9999, 1)), (1.1, 1, sctp(SRV, 9999, C, 43210, 6))).only()
    assert not aborted.established


@pytest.mark.parametrize("chunk", [4, 5, 7, 14], ids=["heartbeat", "heartbeat-ack", "shutdown", "shutdown-complete"])
def test_any_sctp_answer_but_abort_establishes_even_chunk_types_sharing_the_rst_bit(chunk):
    flow = Recorder().feed((1.0, 1, sctp(C, 43210, SRV, 9999, 0)), (1.1, 1, sctp(SRV, 9999, C, 43210, chunk))).only()
    assert flow.established


# --- counters and times ---------------------------------------------------------

def test_packets_and_bytes_count_the_ip_length_per_direction_without_ethernet_padding():
    frames = handshake(1.0) + [
        (1.01, 1, tcp(C, 43210, SRV, 8080, PA, seq=1001, payload=b"c" * 100)),
        (1.02, 1, tcp(SRV, 8080, C, 43210, PA, seq=5001, payload=b"s" * 300))]
    assert all(len(f) >= 60 for _, _, f in frames)  # the 40-byte packets travel padded to 60
    flow = Recorder().feed(frames).only()
    assert (flow.packets_src, flow.bytes_src) == (3, 40 + 40 + 140)
    assert (flow.packets_dst, flow.bytes_dst) == (2, 40 + 340)


def test_first_and_last_seen_are_the_times_of_the_first_and_last_packets():
    flow = Recorder().feed(handshake(10.0) + [(12.5, 1, tcp(SRV, 8080, C, 43210, A))]).only()
    assert (flow.first_seen, flow.last_seen) == (10.0, 12.5)


# --- ending flows ---------------------------------------------------------------

def test_idle_tcp_and_udp_flows_end_after_their_own_timeouts():
    rec = Recorder(tcp_timeout=30.0, udp_timeout=10.0, closed_linger=2.0)
    rec.feed(handshake(100.0, sport=1111), (100.0, 1, udp(C, 2222, SRV, 53, b"q")), (100.1, 1, udp(SRV, 53, C, 2222)))
    assert rec.table.sweep(110.0) == 0 and rec.ended == []
    assert rec.table.sweep(110.1) == 1 and rec.ended_ports() == [2222]
    assert rec.table.sweep(130.0) == 0
    assert rec.table.sweep(130.002) == 1 and rec.ended_ports() == [2222, 1111]
    assert len(rec.table) == 0


def test_ingesting_later_packets_ends_idle_flows_by_capture_time():
    rec = Recorder(tcp_timeout=30.0, udp_timeout=10.0, closed_linger=2.0)
    rec.feed(handshake(100.0, sport=1111), (100.0, 1, udp(C, 2222, SRV, 53, b"q")))
    rec.feed((105.0, 1, udp(C, 3333, SRV, 53, b"q")))
    assert rec.ended == []
    rec.feed((111.0, 1, udp(C, 4444, SRV, 53, b"q")))
    assert rec.ended_ports() == [2222]
    rec.feed((200.0, 1, udp(C, 5555, SRV, 53, b"q")))
    assert sorted(rec.ended_ports()) == [1111, 2222, 3333, 4444]


def _fin_fin(t: float) -> list:
    return handshake(t) + [(t + 0.1, 1, tcp(C, 43210, SRV, 8080, FA, seq=1001)),
                           (t + 0.2, 1, tcp(SRV, 8080, C, 43210, FA, seq=5001)),
                           (t + 0.3, 1, tcp(C, 43210, SRV, 8080, A, seq=1002))]


def test_a_flow_closed_by_fin_and_fin_lingers_then_ends():
    rec = Recorder(tcp_timeout=300.0, closed_linger=5.0).feed(_fin_fin(1.0))
    last = 1.3
    assert rec.table.sweep(last + 4.9) == 0
    assert rec.table.sweep(last + 5.0) == 1
    flow, = [f for f, _ in rec.ended]
    assert flow.closed and flow.last_seen == pytest.approx(last)


def test_one_fin_does_not_close_a_flow():
    rec = Recorder(tcp_timeout=300.0, closed_linger=5.0)
    rec.feed(handshake(1.0) + [(1.1, 1, tcp(C, 43210, SRV, 8080, FA, seq=1001))])
    assert rec.table.sweep(60.0) == 0
    assert not rec.only().closed


def test_a_retransmitted_fin_from_one_side_does_not_close_a_half_closed_flow():
    fin = tcp(C, 43210, SRV, 8080, FA, seq=1001)
    rec = Recorder(tcp_timeout=300.0, closed_linger=5.0)
    rec.feed(handshake(1.0) + [(1.1, 1, fin), (1.5, 1, fin)])
    assert rec.table.sweep(60.0) == 0
    assert not rec.only().closed


def test_a_flow_closed_by_rst_lingers_then_ends():
    rec = Recorder(tcp_timeout=300.0, closed_linger=5.0).feed(handshake(1.0) + [(1.1, 1, tcp(SRV, 8080, C, 43210, R))])
    assert rec.table.sweep(6.0) == 0
    assert rec.table.sweep(6.1) == 1 and rec.ended[0][0].closed


def test_a_new_syn_on_a_closed_five_tuple_starts_a_new_flow():
    rec = Recorder().feed(handshake(1.0) + [(1.1, 1, tcp(SRV, 8080, C, 43210, R))])
    rec.feed((1.5, 1, tcp(C, 43210, SRV, 8080, S, seq=9000)))
    assert len(rec.ended) == 1 and rec.ended[0][0].packets_dst == 2  # the old one ended at once
    old, new = rec.flows()
    assert (old.first_seen, new.first_seen) == (1.0, 1.5)
    assert (new.packets_src, new.packets_dst, new.closed, new.established) == (1, 0, False, False)


def test_a_retransmitted_syn_on_an_open_flow_is_the_same_flow():
    flow = Recorder().feed(handshake(1.0) + [(1.5, 1, tcp(C, 43210, SRV, 8080, S, seq=1000))]).only()
    assert flow.packets_src == 3


def test_the_table_cap_evicts_the_oldest_flow_and_counts_it():
    rec = Recorder(max_flows=2)
    rec.feed((1.0, 1, udp(C, 1001, SRV, 53)), (1.1, 1, udp(C, 1002, SRV, 53)))
    assert rec.ended == []
    rec.feed((1.2, 1, udp(C, 1003, SRV, 53)))
    assert rec.ended_ports() == [1001]
    assert rec.table.evicted == 1 and len(rec.table) == 2
    assert sorted(f.src_port for f in rec.flows()) == [1001, 1002, 1003]


def test_flush_ends_every_flow_exactly_once():
    rec = Recorder().feed(handshake(1.0), (1.0, 1, udp(C, 1001, SRV, 53)), (1.0, 1, sctp(C, 1, SRV, 9999, 1)))
    assert len(rec.table) == 3
    rec.table.flush()
    rec.table.flush()
    assert sorted(f.protocol for f, _ in rec.ended) == ["SCTP", "TCP", "UDP"]
    assert len(rec.table) == 0 and rec.table.flows_started == 3


def test_a_flow_between_one_address_and_port_and_itself_is_still_reported():
    # A socket talking to itself (or a hairpinned packet) has a key equal to its reverse.
    rec = Recorder().feed((1.0, 1, udp(C, 5000, C, 5000, b"ping")), (1.1, 1, udp(C, 5000, C, 5000, b"ping")))
    flow = rec.only()
    assert (flow.src_ip, flow.src_port, flow.dst_port) == (C, 5000, 5000)
    assert (flow.packets_src, flow.packets_dst) == (2, 0)


# --- what is not a flow ---------------------------------------------------------

def test_decode_errors_and_skips_are_counted_by_reason_and_make_no_flow():
    syn = tcp(C, 43210, SRV, 8080, S)
    bad_ihl = syn[:14] + b"\x44" + syn[15:]
    frames = [(1.0, 1, bad_ihl), (1.0, 1, syn[:30]), (1.0, 1, syn[:30]), (1.0, 147, syn)]
    frames += [(1.0, 1, f) for _, _, f in crafted("arp.pcap") + crafted("icmp-echo.pcap")]
    rec = Recorder().feed(frames)
    assert rec.table.dropped == {"ipv4-bad-ihl": 1, "ipv4-truncated": 2, "unsupported-linktype-147": 1}
    assert rec.table.skipped == {"non-ip": 2, "icmp": 4}
    assert rec.table.packets == len(frames)
    assert rec.flows() == []


def test_later_ipv4_fragments_are_skipped_and_the_first_carries_the_flow():
    rec = Recorder().feed(crafted("ipv4-fragments.pcap"))
    assert rec.table.skipped == {"ip-fragment": 2}
    flow = rec.only()
    assert (flow.protocol, flow.src_port, flow.dst_port, flow.packets_src) == ("UDP", 40000, 8125, 1)


def test_ipv6_flows_carry_text_addresses():
    flows = Recorder().feed(crafted("raw-ip.pcap")).flows()
    assert [(f.src_ip, f.dst_ip) for f in flows] == [(C, SRV), ("fd00:10:244:1::10", "fd00:10:244:2::20")]
    assert all(f.established for f in flows)


# --- classification -------------------------------------------------------------

@pytest.mark.parametrize("name", ["tls-clienthello-split.pcap", "tls-clienthello-out-of-order.pcap"])
def test_a_client_hello_split_across_segments_is_tls_with_its_sni(name):
    rec = Recorder().feed(crafted(name))
    rec.table.flush()
    (flow, cls), = rec.ended
    assert flow.dst_port == 443 and not flow.mid_stream
    assert cls.app == "tls" and cls.tls
    assert cls.client_hello.sni == "api.api.svc.cluster.local"


def test_a_mid_stream_flow_still_reports_a_client_hello():
    frames = crafted("tls-clienthello-split.pcap")[3:]  # without SYN, SYN-ACK and ACK
    rec = Recorder().feed(frames)
    rec.table.flush()
    (flow, cls), = rec.ended
    assert flow.mid_stream and flow.src_port == 43210
    assert cls.tls and cls.client_hello.sni == "api.api.svc.cluster.local"


def test_a_mid_stream_plaintext_flow_is_marked_mid_stream_and_never_tls():
    # The table reports what the bytes look like; a plaintext verdict is never drawn for a
    # mid-stream flow downstream (pipeline.judge_flow), which needs the mid_stream mark to be right.
    rec = Recorder().feed(crafted("midstream.pcap"))
    rec.table.flush()
    (flow, cls), = rec.ended
    assert flow.mid_stream and (flow.src_port, flow.dst_port) == (43210, 8080)
    assert cls is None or not cls.tls


def test_a_udp_flow_has_no_classification():
    rec = Recorder().feed(crafted("udp.pcap"))
    rec.table.flush()
    assert [cls for _, cls in rec.ended] == [None, None]
