"""ConntrackMerge: packet flows from a real FlowTable + conntrack events -> one judged flow per connection.

Frames are built with struct (Ethernet/IPv4/TCP, checksums zero) and fed with
explicit capture times; conntrack events are the plain records the reader
produces (tests/capture/test_conntrack.py shows the kernel producing them).
"""
from __future__ import annotations

import socket
import struct

from agent.flows.merge import ConntrackMerge, table_key
from agent.config import FlowConfig
from agent.flows.table import FlowTable
from agent.model import CAPTURE, CONNTRACK, CT_DESTROY, CT_NEW, ConntrackEvent

MACS = bytes.fromhex("02420af40214 02420af4010a")
S, SA, A, PA, FA = 0x02, 0x12, 0x10, 0x18, 0x11
CLIENT, VIP, POD, NODE = "10.244.1.10", "10.96.0.10", "10.244.2.20", "10.0.0.5"
CP = 43210
ORIG = (CLIENT, VIP, CP, 80)
REPLY = (POD, CLIENT, 8000, CP)  # DNAT ClusterIP:80 -> pod:8000
COUNTERS = (12, 2000, 10, 90000)


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, *, seq: int = 0, payload: bytes = b"") -> bytes:
    l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    frame = MACS + b"\x08\x00" + ip + l4
    return frame + b"\x00" * (60 - len(frame))


def connection(t: float, dst: str, dport: int, *, src: str = CLIENT, sport: int = CP) -> list:
    """SYN, SYN-ACK, request, reply, FIN, FIN: a complete short HTTP connection."""
    return [(t, 1, tcp(src, sport, dst, dport, S, seq=100)),
            (t + 0.001, 1, tcp(dst, dport, src, sport, SA, seq=500)),
            (t + 0.002, 1, tcp(src, sport, dst, dport, PA, seq=101, payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
            (t + 0.003, 1, tcp(dst, dport, src, sport, PA, seq=501, payload=b"HTTP/1.1 200 OK\r\n\r\n")),
            (t + 0.004, 1, tcp(src, sport, dst, dport, FA, seq=128)),
            (t + 0.005, 1, tcp(dst, dport, src, sport, FA, seq=520))]


def event(kind: str, at: float, *, orig=ORIG, reply=REPLY, counters=None) -> ConntrackEvent:
    return ConntrackEvent(kind, at, 6, orig, reply, seen_reply=kind == CT_DESTROY, counters=counters, id=7)


class Harness:
    """A FlowTable whose ends go through a ConntrackMerge into `judged`."""

    def __init__(self, **merge):
        self.judged: list = []
        self.table = FlowTable(on_end=None, settings=FlowConfig(closed_linger=5.0))
        self.merge = ConntrackMerge(self.table, lambda flow, cls: self.judged.append((flow, cls)), **merge)
        self.table.on_end = self.merge.on_end

    def packets(self, frames: list) -> "Harness":
        self.table.ingest(frames)
        return self

    def ct(self, *events: ConntrackEvent) -> "Harness":
        self.merge.feed(list(events))
        return self


def test_a_service_flow_waits_for_destroy_and_is_judged_against_the_backend_with_complete_counts():
    h = Harness(wait=130.0).ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80))
    h.table.sweep(16.0)  # FIN + linger: the packet flow ends, but conntrack's counts are still to come
    assert h.judged == [] and len(h.merge.parked) == 1
    h.ct(event(CT_DESTROY, 130.0, counters=COUNTERS))
    [(flow, cls)] = h.judged
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == (CLIENT, CP, POD, 8000)
    assert flow.orig_dst == (VIP, 80)
    assert (flow.packets_src, flow.bytes_src, flow.packets_dst, flow.bytes_dst) == COUNTERS
    assert flow.accounting == CONNTRACK and flow.established and not flow.mid_stream
    assert cls is not None and cls.app == "http"  # the first bytes came from capture
    assert h.merge.completed == 1 and not h.merge.entries


def test_a_connection_captured_before_and_after_dnat_is_judged_once():
    h = Harness(wait=130.0).ct(event(CT_NEW, 10.0))
    h.packets(connection(10.0, VIP, 80)).packets(connection(10.0005, POD, 8000))  # client veth, pod veth
    h.table.sweep(16.0)
    h.ct(event(CT_DESTROY, 130.0, counters=COUNTERS))
    assert len(h.judged) == 1 and h.merge.duplicates == 1
    flow = h.judged[0][0]
    assert (flow.dst_ip, flow.dst_port, flow.orig_dst) == (POD, 8000, (VIP, 80))
    assert flow.packets_src == 12  # conntrack's, not 6 + 6 from two interfaces


def test_destroy_ends_a_live_packet_flow_now_with_the_kernel_counts():
    h = Harness().ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80)[:4])  # no FIN captured
    h.ct(event(CT_DESTROY, 11.0, counters=COUNTERS))
    [(flow, _)] = h.judged
    assert len(h.table) == 0 and flow.dst_ip == POD and flow.bytes_dst == 90000


def test_a_connection_no_interface_captured_becomes_a_flow_without_payload_information():
    h = Harness().ct(event(CT_NEW, 10.0), event(CT_DESTROY, 20.0, counters=COUNTERS))
    [(flow, cls)] = h.judged
    assert cls is None and flow.mid_stream and flow.closed and flow.established
    assert (flow.src_ip, flow.dst_ip, flow.dst_port, flow.orig_dst) == (CLIENT, POD, 8000, (VIP, 80))
    assert (flow.first_seen, flow.last_seen) == (10.0, 20.0)
    assert flow.accounting == CONNTRACK and h.merge.conntrack_only == 1


def test_a_flow_conntrack_does_not_know_is_judged_as_captured():
    h = Harness().ct(event(CT_NEW, 10.0)).packets(connection(10.0, "10.244.3.30", 443, sport=5555))
    h.table.sweep(16.0)
    [(flow, _)] = h.judged
    assert flow.accounting == CAPTURE and flow.orig_dst is None and flow.packets_src == 3


def test_a_parked_flow_whose_destroy_never_comes_is_judged_with_captured_counts_after_the_wait():
    h = Harness(wait=30.0).ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80))
    h.table.sweep(16.0)
    assert h.merge.sweep(40.0) == 0 and h.judged == []
    assert h.merge.sweep(46.1) == 1
    [(flow, _)] = h.judged
    assert flow.accounting == CAPTURE and flow.dst_ip == POD and h.merge.expired == 1
    h.ct(event(CT_DESTROY, 130.0, counters=COUNTERS))  # too late: nothing is judged twice
    assert len(h.judged) == 1


def test_a_destroy_without_counters_keeps_the_captured_ones():
    h = Harness().ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80))
    h.table.sweep(16.0)
    h.ct(event(CT_DESTROY, 130.0))
    [(flow, _)] = h.judged
    assert flow.accounting == CAPTURE and (flow.packets_src, flow.packets_dst) == (3, 3)


def test_masquerade_is_undone_for_a_flow_captured_behind_the_node_address():
    snat_reply = (POD, NODE, 8000, 61000)  # the backend answers the node's address
    h = Harness(wait=0.0).ct(event(CT_NEW, 10.0, reply=snat_reply))
    h.packets([(10.0, 1, tcp(POD, 8000, NODE, 61000, PA, seq=9, payload=b"x" * 10))])  # mid-stream, reply only
    h.table.sweep(400.0)
    [(flow, _)] = h.judged
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == (CLIENT, CP, POD, 8000)
    assert (flow.packets_src, flow.packets_dst) == (0, 1)


def test_a_flow_whose_direction_the_table_guessed_wrong_is_turned_around():
    orig = (CLIENT, POD, 30000, 40000)  # no NAT; the registered port looks like the server's
    h = Harness(wait=0.0).ct(event(CT_NEW, 10.0, orig=orig, reply=(POD, CLIENT, 40000, 30000)))
    h.packets([(10.0, 1, tcp(CLIENT, 30000, POD, 40000, PA, seq=9, payload=b"x" * 10))])
    h.table.sweep(400.0)
    [(flow, _)] = h.judged
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == (CLIENT, 30000, POD, 40000)
    assert (flow.packets_src, flow.packets_dst, flow.orig_dst) == (1, 0, None)


def test_finish_judges_parked_flows_and_parks_nothing_more():
    h = Harness(wait=130.0).ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80))
    h.table.sweep(16.0)
    h.merge.finish()
    assert len(h.judged) == 1
    h.ct(event(CT_NEW, 20.0, orig=(CLIENT, VIP, 4000, 80), reply=(POD, CLIENT, 8000, 4000)))
    h.packets(connection(20.0, VIP, 80, sport=4000))
    h.table.flush()
    assert len(h.judged) == 2 and not h.merge.parked


def test_a_reused_tuple_retires_the_entry_whose_destroy_was_lost():
    h = Harness(wait=130.0).ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80))
    h.table.sweep(16.0)
    h.ct(event(CT_NEW, 300.0))  # same tuple, new connection
    assert len(h.judged) == 1 and h.judged[0][0].accounting == CAPTURE
    assert len(h.merge.entries) == 2  # the new connection's two keys


def test_table_key_matches_the_decoders_key_for_tcp_and_udp():
    t = FlowTable(on_end=lambda *_: None)
    t.ingest([(1.0, 1, tcp(CLIENT, CP, VIP, 80, S))])
    assert table_key(6, CLIENT, VIP, CP, 80) in t.flows and table_key(6, VIP, CLIENT, 80, CP) in t.flows
    assert table_key(17, CLIENT, VIP, CP, 80).endswith(b"\x11")


class AnswerHarness(Harness):
    """A Harness whose answers also go through the merge (as the live agent wires it)."""

    def __init__(self, **merge):
        self.answered: list = []
        super().__init__(**merge)
        self.merge.answer = self._answer
        self.table.on_answer = self.merge.on_answer

    def _answer(self, flow) -> None:
        self.answered.append((flow.src_ip, flow.dst_ip, flow.dst_port, flow.orig_dst, flow.established))
        flow.verdict = "allow"  # what the pipeline sets: the answer is judged once


def test_a_service_connection_is_judged_at_its_syn_ack_against_the_backend_conntrack_named():
    h = AnswerHarness().ct(event(CT_NEW, 10.0)).packets(connection(10.0, VIP, 80)[:2])  # SYN, SYN-ACK
    assert h.answered == [(CLIENT, POD, 8000, (VIP, 80), True)] and h.judged == []


def test_the_copy_captured_after_dnat_is_not_judged_again_at_its_answer():
    h = AnswerHarness().ct(event(CT_NEW, 10.0))
    h.packets(connection(10.0, VIP, 80)[:2]).packets(connection(10.0005, POD, 8000)[:2])
    assert h.answered == [(CLIENT, POD, 8000, (VIP, 80), True)]


def test_an_answer_without_conntrack_entry_is_judged_as_captured():
    h = AnswerHarness().packets(connection(10.0, "10.244.3.30", 443, sport=5555)[:2])
    assert h.answered == [(CLIENT, "10.244.3.30", 443, None, True)]
