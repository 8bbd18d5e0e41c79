"""The conntrack reader against the real kernel: NEW and DESTROY of a connection to a fake ClusterIP.

The test builds a tiny node: a client namespace, a "node" namespace that
forwards between two veths and DNATs 10.96.0.10:80 to a backend namespace
running `python3 -m http.server 8000` (nft, as iptables/nftables kube-proxy
does), with `nf_conntrack_acct=1` and a 1 s TIME_WAIT so the DESTROY can come
soon. The reader's socket is opened inside the node namespace; curl dials the
ClusterIP from the client. All namespaces are deleted in the fixture teardown.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import time
import uuid

import pytest
from pyroute2.netns import popns, pushns

from agent.capture.conntrack import ConntrackReader, parse_events
from agent.flows.merge import ConntrackMerge
from agent.flows.table import FlowTable
from agent.model import CONNTRACK, CT_DESTROY, CT_NEW, ConntrackEvent
from tests.rootonly import require_root

VIP, CLIENT, BACKEND = "10.96.0.10", "10.250.1.2", "10.250.2.2"
NFT = f"""
table ip fwct {{
  chain prerouting {{ type nat hook prerouting priority dstnat; ip daddr {VIP} tcp dport 80 dnat to {BACKEND}:8000; }}
}}
"""
# GET / from a fixed client port, reading until the server closes (so the client holds no
# TIME_WAIT), then, after conntrack's 1 s TIME_WAIT, a second connection from the same port.
CLIENT_SCRIPT = """
import socket, sys, time
port = 0
for attempt in range(2):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    s.bind(("", port))
    port = s.getsockname()[1]
    try:
        s.connect((sys.argv[1], 80))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        reply = b"- -"
    s.close()
    print(port, reply.split(b" ")[1].decode(), flush=True)
    time.sleep(1.5 if attempt == 0 else 0)
"""
# A DESTROY the kernel sent in this set-up (curl to the ClusterIP): netlink header, nfgenmsg,
# CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ID, CTA_STATUS, CTA_COUNTERS_ORIG/REPLY, CTA_PROTOINFO.
DESTROY = bytes.fromhex(
    "d4000000020100000000000000000000" "02000000"
    "3400018014000180080001000afa0102080002000a60000a1c0002800500010006000000060002008b700000060003000050"
    "0000" "3400028014000180080001000afa0202080002000afa01021c0002800500010006000000060002001f400000060003008b"
    "700000" "08000c005d006915" "08000300000003ae"
    "1c0009800c00010000000000000000060c000200000000000000018a"
    "1c000a800c00010000000000000000060c00020000000000000003401000"
    "04800c0001800500010007000000")


def _run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@pytest.fixture
def node():
    """(client ns, node ns, backend ns) with forwarding, the DNAT rule and a backend HTTP server."""
    require_root("network namespaces and conntrack")
    tag = uuid.uuid4().hex[:6]
    c, n, b = (f"fwct-{tag}-{x}" for x in "cnb")
    server = None
    try:
        for ns in (c, n, b):
            _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "nc", "netns", n)
        _run("ip", "link", "add", "b0", "netns", b, "type", "veth", "peer", "name", "nb", "netns", n)
        for ns, dev, addr, gw in ((c, "c0", CLIENT, "10.250.1.1"), (b, "b0", BACKEND, "10.250.2.1")):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "route", "add", "default", "via", gw)
        for dev, addr in (("nc", "10.250.1.1/24"), ("nb", "10.250.2.1/24")):
            _run("ip", "-n", n, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", n, "link", "set", dev, "up")
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_acct=1",
             "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1", ns=n)
        subprocess.run(["ip", "netns", "exec", n, "nft", "-f", "-"], input=NFT, text=True, check=True)
        server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-m", "http.server", "8000",
                                   "--bind", BACKEND], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while ":8000" not in _run("ss", "-ltn", ns=b).stdout:
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
        yield c, n, b
    finally:
        if server is not None:
            server.terminate()
            server.wait(5)
        for ns in (c, n, b):
            _run("ip", "netns", "del", ns, check=False)


def _reader_in(ns: str, out: queue.Queue) -> ConntrackReader:
    pushns(ns)  # this thread only; the socket stays in the node namespace after popns
    try:
        return ConntrackReader(out)
    finally:
        popns()


def _events_until_destroy(out: queue.Queue, timeout: float) -> list[ConntrackEvent]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not any(e.kind == CT_DESTROY for e in events):
        try:
            events.extend(out.get(timeout=0.1))
        except queue.Empty:
            pass
    return events


def test_the_reader_sees_new_and_destroy_of_a_clusterip_connection_with_the_backend_and_byte_counts(node):
    client, node_ns, _ = node
    out: queue.Queue = queue.Queue(maxsize=16)
    reader = _reader_in(node_ns, out)
    reader.start()
    try:
        # The kernel reaps an expired entry (and sends its DESTROY) when its garbage collector
        # passes, up to a minute later, or at once when a packet looks the tuple up: the
        # same client port dialling again after TIME_WAIT (1 s here) is that packet.
        lines = _run(sys.executable, "-c", CLIENT_SCRIPT, VIP, ns=client).stdout.splitlines()
        port, code = lines[0].split()
        events = _events_until_destroy(out, timeout=10)
    finally:
        reader.stop()
    assert code == "200"
    mine = [e for e in events if e.orig == (CLIENT, VIP, int(port), 80)]
    assert [e.kind for e in mine][:2] == [CT_NEW, CT_DESTROY]  # then the second curl's NEW
    new, destroy = mine[:2]
    assert new.reply == destroy.reply == (BACKEND, CLIENT, 8000, int(port))
    assert new.counters is None and destroy.seen_reply and destroy.id == new.id
    packets_out, bytes_out, packets_back, bytes_back = destroy.counters
    assert packets_out >= 5 and packets_back >= 5  # SYN, ACK, GET, ..., FIN/ACK
    assert bytes_out > 40 * packets_out and bytes_back > 1000  # the directory listing came back
    assert reader.events == len(events) and reader.dropped == 0

    judged = []
    merge = ConntrackMerge(FlowTable(on_end=None), lambda flow, cls: judged.append(flow))
    merge.feed(mine[:2])  # no interface was captured: the DESTROY alone makes the flow
    [flow] = judged
    assert (flow.dst_ip, flow.dst_port, flow.orig_dst) == (BACKEND, 8000, (VIP, 80))
    assert flow.accounting == CONNTRACK and flow.bytes_dst == bytes_back


def test_a_full_queue_drops_and_counts_events_instead_of_blocking(node):
    client, node_ns, _ = node
    out: queue.Queue = queue.Queue(maxsize=1)
    out.put_nowait([])  # the pipeline is not taking anything
    reader = _reader_in(node_ns, out)
    reader.start()
    try:
        _run("curl", "-s", "-o", "/dev/null", "-m", "5", f"http://{VIP}/", ns=client, check=False)
        deadline = time.monotonic() + 5
        while reader.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reader.stop()
    assert reader.dropped >= 1 and reader.events == 0
    assert time.monotonic() - reader.heartbeat < 2  # the thread kept turning


def test_a_kernel_destroy_message_parses_to_the_connection_and_its_counters():
    [event] = parse_events(DESTROY, at=5.0)
    assert event == ConntrackEvent(CT_DESTROY, 5.0, 6, (CLIENT, VIP, 35696, 80), (BACKEND, CLIENT, 8000, 35696),
                                   seen_reply=True, counters=(6, 394, 6, 832), id=0x5D006915)


def test_every_truncated_prefix_of_a_message_is_skipped_without_raising():
    for n in range(len(DESTROY)):
        assert parse_events(DESTROY[:n], at=0.0) == [] or n >= 16
    assert parse_events(DESTROY + DESTROY[:20], at=0.0)[0].kind == CT_DESTROY
