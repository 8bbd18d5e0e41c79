"""Live capture on real interfaces: the kernel filter, dedup, budgets, link monitoring.

Each test that needs an interface creates a veth pair whose capture end has a
unique `fwt*` name and whose other end lives in a network namespace the test
creates; frames are written on that end by a subprocess inside the namespace.
Everything is deleted in the fixture teardown, also on failure.
"""
from __future__ import annotations

import queue
import socket
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import given, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from agent.capture.interfaces import DEFAULT_PATTERNS, LINKTYPE_ETHERNET, Link, LinkMonitor, list_links, matches, \
    parse_patterns
from agent.capture.live import LiveCapture
from agent.capture.prefilter import FRAGMENT, Dedup, FlowBudget, locate_ip
from tests.rootonly import require_root

SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin.read().split():
    s.send(bytes.fromhex(line))
"""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@pytest.fixture
def veth():
    """(capture end in this namespace, sender namespace, sender end)."""
    require_root("network namespaces and AF_PACKET capture")
    tag = uuid.uuid4().hex[:6]
    ns, host, peer = f"fwtest-cap-{tag}", f"fwt{tag}h", "eth0"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
        # No IPv6 on either end: router solicitations and MLD reports would add frames.
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{host}.disable_ipv6=1"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{peer}.disable_ipv6=1"],
                       check=True)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "link", "set", peer, "up")
        yield host, ns, peer
    finally:
        _ip("link", "del", host, check=False)
        _ip("netns", "del", ns, check=False)


def _send(ns: str, iface: str, packets) -> None:
    frames = "\n".join(bytes(p).hex() for p in packets)
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SEND, iface], input=frames.encode(),
                   check=True)


def _capture(host: str, **kwargs) -> tuple[LiveCapture, queue.Queue]:
    out: queue.Queue = queue.Queue(maxsize=64)
    capture = LiveCapture(out, **kwargs)
    link = next(link for link in list_links() if link.name == host)
    capture.attach(link)
    capture.start()
    deadline = time.monotonic() + 5
    while not capture.interfaces and time.monotonic() < deadline:
        time.sleep(0.01)
    return capture, out


def _drain(out: queue.Queue, expected: int, timeout: float = 3.0) -> list:
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < expected and time.monotonic() < deadline:
        try:
            frames.extend(out.get(timeout=0.05))
        except queue.Empty:
            pass
    time.sleep(0.2)  # anything more that should not be there
    while not out.empty():
        frames.extend(out.get_nowait())
    return frames


E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = dict(src="10.99.0.1", dst="10.99.0.2")
V6 = dict(src="fd99::1", dst="fd99::2")


def test_the_kernel_filter_keeps_handshakes_and_data_starts_and_drops_what_no_judge_reads(veth):
    host, ns, peer = veth
    capture, out = _capture(host, payload_bytes=100)
    try:
        _send(ns, peer, [
            E / IP(**V4) / TCP(sport=40000, dport=80, flags="S"),  # kept whole: 54 bytes
            E / IP(**V4) / TCP(sport=40000, dport=80, flags="A"),  # pure ACK: dropped
            E / IP(**V4) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"x" * 1400),  # 14+120+100
            E / IP(**V4) / UDP(sport=40001, dport=53) / Raw(b"y" * 500),  # headers only: 14+68
            E / IP(**V4) / ICMP(),  # dropped
            E / ARP(),  # dropped
            E / IP(**V4) / UDP(sport=40002, dport=4789) / Raw(b"v" * 300),  # VXLAN: kept whole
            E / IPv6(**V6) / TCP(sport=40003, dport=443, flags="A"),  # dropped
            E / IPv6(**V6) / TCP(sport=40003, dport=443, flags="PA") / Raw(b"z" * 100),  # fits: whole
            E / IPv6(**V6) / ICMPv6EchoRequest(),  # dropped
            E / IP(**V4) / TCP(sport=40004, dport=80, flags="R"),  # RST: whole
        ])
        frames = _drain(out, 6)
    finally:
        capture.stop()
    assert [(lt, len(f)) for _ts, lt, f in frames] == [
        (LINKTYPE_ETHERNET, 54), (LINKTYPE_ETHERNET, 234), (LINKTYPE_ETHERNET, 82),
        (LINKTYPE_ETHERNET, 342), (LINKTYPE_ETHERNET, 174), (LINKTYPE_ETHERNET, 54)]
    assert capture.kernel_stats()["_detached"] == (6, 0)  # the kernel's count agrees; no drop


def test_a_full_queue_drops_and_counts_instead_of_blocking(veth):
    host, ns, peer = veth
    out: queue.Queue = queue.Queue(maxsize=1)
    out.put(["something the pipeline has not taken yet"])
    capture = LiveCapture(out)
    capture.attach(next(link for link in list_links() if link.name == host))
    capture.start()
    try:
        time.sleep(0.2)
        _send(ns, peer, [E / IP(**V4) / TCP(sport=41000 + i, dport=80, flags="S") for i in range(5)])
        deadline = time.monotonic() + 3
        while capture.queue_dropped < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert capture.queue_dropped == 5
        assert time.monotonic() - capture.heartbeat < 1  # the loop keeps turning
    finally:
        capture.stop()


def _seen(dedup: Dedup, frame: bytes, now: float, off: int = 14) -> bool:
    return dedup.seen(frame, locate_ip(frame, off), now)


def _allow(budget: FlowBudget, frame: bytes, now: float, off: int = 14) -> bool:
    return budget.allow(frame, locate_ip(frame, off), now)


def test_a_packet_seen_again_on_another_interface_is_a_duplicate_even_after_routing():
    syn = bytes(E / IP(ttl=64, **V4) / TCP(sport=40000, dport=80, flags="S", seq=7))
    routed = bytes(E / IP(ttl=63, **V4) / TCP(sport=40000, dport=80, flags="S", seq=7))
    retry = bytes(E / IP(ttl=64, **V4) / TCP(sport=40001, dport=80, flags="S", seq=7))
    dedup = Dedup(period=0.5)
    assert not _seen(dedup, syn, 100.0)
    assert _seen(dedup, routed, 100.01)
    assert not _seen(dedup, retry, 100.02)
    assert dedup.duplicates == 1
    assert not _seen(dedup, syn, 101.5)  # remembered for at most two periods


def test_ipv6_duplicates_are_recognised_too():
    a = bytes(E / IPv6(hlim=64, **V6) / TCP(sport=1, dport=2, flags="S"))
    b = bytes(E / IPv6(hlim=63, **V6) / TCP(sport=1, dport=2, flags="S"))
    dedup = Dedup()
    assert not _seen(dedup, a, 1.0) and _seen(dedup, b, 1.0)


def test_udp_and_tcp_data_past_the_flow_budget_are_dropped_and_counted():
    budget = FlowBudget(udp=2, tcp=1, period=10.0)
    udp = bytes(E / IP(**V4) / UDP(sport=5000, dport=53))
    other = bytes(E / IP(**V4) / UDP(sport=5001, dport=53))
    data = bytes(E / IP(**V4) / TCP(sport=6000, dport=80, flags="PA") / Raw(b"GET"))
    fin = bytes(E / IP(**V4) / TCP(sport=6000, dport=80, flags="FA"))
    assert [_allow(budget, udp, 0.0) for _ in range(3)] == [True, True, False]
    assert _allow(budget, other, 0.0)
    assert [_allow(budget, data, 0.0) for _ in range(2)] == [True, False]
    assert _allow(budget, fin, 0.0)  # FIN/RST/SYN always pass
    assert budget.limited == {"udp": 1, "tcp": 1}
    assert _allow(budget, udp, 10.0)  # a new period: the flow shows life again


def test_interface_globs_cover_the_common_cnis_and_user_lists():
    for name in ("veth1a2b3c", "cali12345", "lxc_health", "gke0f1e", "eni0a1b", "cni0", "cbr0",
                 "flannel.1", "vxlan.calico", "cilium_vxlan", "genev_sys_6081"):
        assert matches(name, DEFAULT_PATTERNS), name
    for name in ("eth0", "lo", "docker0", "wlan0"):
        assert not matches(name, DEFAULT_PATTERNS), name
    assert parse_patterns("veth*, cni0") == ("veth*", "cni0")
    assert parse_patterns("") == DEFAULT_PATTERNS and parse_patterns([]) == DEFAULT_PATTERNS


def test_the_netlink_monitor_reports_links_that_appear_and_vanish():
    tag = uuid.uuid4().hex[:6]
    added: list[Link] = []
    removed: list[int] = []
    monitor = LinkMonitor([f"fwt{tag}*"], on_add=added.append, on_remove=removed.append)
    monitor.start()
    try:
        _ip("link", "add", f"fwt{tag}a", "type", "veth", "peer", "name", f"fwt{tag}b")
        deadline = time.monotonic() + 3
        while len(added) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(link.name for link in added) == [f"fwt{tag}a", f"fwt{tag}b"]
        _ip("link", "del", f"fwt{tag}a")  # takes its peer along
        deadline = time.monotonic() + 7  # a lost DELLINK is repaired by the next full listing
        while len(removed) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(removed) == sorted(link.index for link in added)
    finally:
        monitor.stop()
        _ip("link", "del", f"fwt{tag}a", check=False)



# --- VLAN tags and frames too short or not IP: never an exception -------------------

def test_vlan_and_qinq_tags_are_skipped_to_find_the_ip_header():
    tcp = IP(**V4) / TCP(sport=7000, dport=80, flags="PA") / Raw(b"GET")
    plain, tagged = bytes(E / tcp), bytes(E / Dot1Q(vlan=7) / tcp)
    qinq = bytes(E / Dot1AD(vlan=1) / Dot1Q(vlan=7) / tcp)
    assert locate_ip(plain, 14) == (6, 34, bytes(tcp)[12:20], bytes(tcp)[2:8])
    assert locate_ip(tagged, 14) == (6, 38, bytes(tcp)[12:20], bytes(tcp)[2:8])
    assert locate_ip(qinq, 14) == (6, 42, bytes(tcp)[12:20], bytes(tcp)[2:8])
    assert locate_ip(bytes(tcp), 0)[1] == 20  # raw IP links have no Ethernet header
    v6 = bytes(E / Dot1Q(vlan=7) / IPv6(**V6) / UDP(sport=1, dport=53))
    assert locate_ip(v6, 14)[:2] == (17, 58)
    fragment = bytes(E / Dot1Q(vlan=7) / IP(flags="MF", **V4) / UDP(sport=1, dport=53))
    assert locate_ip(fragment, 14)[0] == FRAGMENT
    budget = FlowBudget(udp=1, tcp=1)
    assert [_allow(budget, f, 0.0) for f in (tagged, tagged, qinq)] == [True, False, False]
    dedup = Dedup()
    assert not _seen(dedup, tagged, 0.0) and _seen(dedup, qinq, 0.0)  # the same packet on another segment


def test_a_short_vlan_frame_is_passed_to_the_decoder_not_an_index_error():
    tagged = bytes(E / Dot1Q(vlan=7) / IP(**V4) / TCP(sport=7000, dport=80, flags="PA") / Raw(b"GET"))
    dedup, budget = Dedup(), FlowBudget(udp=1, tcp=1)
    for n in range(14 + 4 + 20):  # every prefix cut before the IP header ends, <= 23 bytes among them
        frame = tagged[:n]
        assert locate_ip(frame, 14) is None, n
        assert not _seen(dedup, frame, 0.0) and _allow(budget, frame, 0.0), n
    arp_in_vlan = bytes(E / Dot1Q(vlan=7) / ARP())
    assert locate_ip(arp_in_vlan, 14) is None and _allow(budget, arp_in_vlan, 0.0)


@given(st.binary(max_size=80), st.sampled_from([b"\x81\x00", b"\x88\xa8", b"\x91\x00", b"\x08\x00", b"\x86\xdd"]),
       st.sampled_from([0, 14]))
def test_garbage_frames_never_raise_in_dedup_or_budget(body, etype, off):
    frame = bytes(12) + etype + body if off else body
    ip = locate_ip(frame, off)
    assert ip is None or (ip[1] >= off + 20 and len(ip[2]) in (8, 32))  # past a whole IP header
    Dedup().seen(frame, ip, 0.0)
    FlowBudget(udp=1, tcp=1).allow(frame, ip, 0.0)


def _send_here(iface: str, frames: list[bytes]) -> None:
    """Frames sent on our end of the veth: capture sees them on the way out."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for frame in frames:
            s.send(frame)


def test_short_vlan_and_garbage_frames_on_the_wire_leave_capture_running(veth):
    host, _ns, _peer = veth
    capture, out = _capture(host)
    eth = bytes(E)[:12]
    short_vlan = [eth + b"\x81\x00" + bytes(n) for n in range(1, 10)]  # 15-23 bytes
    garbage = [eth + b"\x81\x00" + bytes.fromhex("0007 0800 4f") + bytes(5),  # IHL past the end
               eth + b"\x88\xa8" + bytes.fromhex("0001 8100 0007 86dd 60")]  # QinQ, IPv6 cut short
    syn = bytes(E / IP(**V4) / TCP(sport=42000, dport=80, flags="S"))
    try:
        _send_here(host, short_vlan + garbage + [syn])
        frames = _drain(out, len(short_vlan) + len(garbage) + 1)
        assert capture.alive() and time.monotonic() - capture.heartbeat < 1
    finally:
        capture.stop()
    got = sorted(f for _ts, _lt, f in frames)
    assert got == sorted(short_vlan + garbage + [syn]), [f.hex() for f in got]  # the decoder judges them
    assert capture.errors == 0


def test_an_error_reading_a_socket_is_counted_logged_once_and_capture_goes_on(veth, caplog):
    host, _ns, _peer = veth
    calls = []

    def clock() -> float:  # fails on its first three readings
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("clock unavailable")
        return 1000.0

    capture, out = _capture(host, clock=clock)
    syns = [bytes(E / IP(**V4) / TCP(sport=43000 + i, dport=80, flags="S")) for i in range(6)]
    try:
        with caplog.at_level("ERROR", logger="flowwarden.capture"):
            for syn in syns:
                _send_here(host, [syn])
                time.sleep(0.05)  # one read (one clock call) per frame
            frames = _drain(out, 3)
        assert capture.alive()
    finally:
        capture.stop()
    assert capture.errors == 3
    assert [r.exc_info[0] for r in caplog.records if r.name == "flowwarden.capture"] == [RuntimeError]
    assert {f for _ts, _lt, f in frames} == set(syns)  # what could not be read then is read later


def test_an_interface_deleted_under_capture_is_detached_and_its_counts_kept(veth):
    host, ns, peer = veth
    capture, out = _capture(host)
    try:
        _send(ns, peer, [E / IP(**V4) / TCP(sport=44000 + i, dport=80, flags="S") for i in range(3)])
        assert len(_drain(out, 3)) == 3
        _ip("link", "del", host)  # the ring's socket gets ENETDOWN (EPOLLERR): no monitor needed
        deadline = time.monotonic() + 3
        while capture.interfaces and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not capture.interfaces and capture.alive() and capture.errors == 0
        assert time.monotonic() - capture.heartbeat < 1  # no spinning on the dead socket either
    finally:
        capture.stop()
    assert capture.kernel_stats()["_detached"] == (3, 0)
