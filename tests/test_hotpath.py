"""agent/_hotpath.c gives exactly what the Python reference gives.

The decoder against `decode_frame` on every frame of every bundled capture, every
truncated prefix of the hand-made frames and fuzzed bytes; the flow table's
compiled fold against its Python loop on every bundled capture and on random
conversations (flags, payloads, 5-tuple reuse, garbage, batch boundaries); the
pcap record scan against a struct loop.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from agent.capture.pcap import read_frames
from agent.config import FlowConfig
from agent.decode.errors import DecodeError, Skip
from agent.decode.hotpath import HOTPATH, PcapRecords
from agent.decode.packet import decode_frame
from agent.flows.table import FlowTable
from agent.model import Flow
from tests.decode.test_packet import ALL, FUZZ, LINKTYPES, mutated
from tests.flows.test_table import C, SRV, ipv4, sctp, tcp, udp

if os.environ.get("FLOWWARDEN_PURE_PYTHON"):
    pytest.skip("FLOWWARDEN_PURE_PYTHON is set: the compiled path is switched off", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
PEER_JA4 = ROOT.parent / "shared" / "peer-pcaps" / "ja4"  # read in place, never copied
CAPTURES = sorted(p for root, pattern in ((ROOT, "pcaps/**/*.pcap*"), (PEER_JA4, "*.pcap*"))
                  for p in root.glob(pattern)
                  if p.name not in ("corrupt-magic.pcap", "truncated-file.pcap"))


def test_the_compiled_path_is_built():
    # CI and `make test` have a C compiler: a silently skipped build would only show as slowness.
    assert HOTPATH is not None, "agent/_hotpath.c is not built: pip install -e . needs a C compiler"


def outcome(decode, linktype: int, frame: bytes):
    try:
        return ("ok", decode(linktype, frame))
    except (DecodeError, Skip) as e:
        return (type(e).__name__, e.reason)


def same_decoding(linktype: int, frame: bytes) -> None:
    assert outcome(HOTPATH.decode, linktype, frame) == outcome(decode_frame, linktype, frame), frame.hex()


def frames_of(path: Path) -> list:
    return [f for batch in read_frames([path]) for f in batch]


# --- decode --------------------------------------------------------------------

@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_captured_frame_decodes_as_in_python(path):
    frames = frames_of(path)
    assert frames
    for _ts, linktype, frame in frames:
        same_decoding(linktype, frame)


@pytest.mark.parametrize("name", list(ALL))
def test_every_truncated_prefix_decodes_as_in_python(name):
    linktype, frame = ALL[name]
    for cut in range(len(frame) + 1):
        same_decoding(linktype, frame[:cut])


@FUZZ
@given(linktype=LINKTYPES, frame=st.binary(max_size=160))
def test_arbitrary_bytes_decode_as_in_python(linktype, frame):
    same_decoding(linktype, frame)


@FUZZ
@given(name=st.sampled_from(list(ALL)), data=st.data())
def test_mutated_frames_decode_as_in_python(name, data):
    linktype, frame = ALL[name]
    same_decoding(linktype, mutated(data, frame, changes=6))


# --- pcap records ----------------------------------------------------------------

def classic_records(data: bytes) -> list:
    """A struct loop over a classic pcap's records: the reference for scan/records."""
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    scale = 1e-9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(order + "IIII", data, pos)
        out.append((sec + frac * scale, linktype, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return out


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.suffix == ".pcap"], ids=lambda p: p.name)
def test_a_classic_pcap_comes_as_record_blocks_holding_exactly_its_records(path):
    batches = list(read_frames([path]))
    assert all(type(b) is PcapRecords for b in batches)
    assert [f for b in batches for f in b] == classic_records(path.read_bytes())


def test_a_scan_stops_before_a_cut_record():
    rec = struct.pack("<IIII", 10, 500_000, 4, 4) + b"abcd"
    buf = rec + rec[:-1]
    assert HOTPATH.scan_pcap(buf, 0, False) == (len(rec), 1)
    assert HOTPATH.scan_pcap(buf, len(rec), False) == (len(rec), 0)
    assert HOTPATH.scan_pcap(struct.pack(">IIII", 10, 0, 4, 4) + b"abcd", 0, True) == (20, 1)
    with pytest.raises(ValueError):
        HOTPATH.records(buf, 0, len(buf) + 1, 1, False, False)


# --- the flow table ----------------------------------------------------------------

def ended(table_batches, *, compiled: bool, **settings):
    out = []
    table = FlowTable(on_end=lambda flow, cls: out.append((dataclasses.astuple(flow), cls)),
                      settings=FlowConfig(**settings), compiled=compiled)
    for batch in table_batches:
        table.ingest(batch)
    table.flush()
    return out, (table.packets, table.dropped, table.skipped, table.flows_started, table.evicted)


def assert_same_flows(batches, **settings):
    lists = [list(b) for b in batches]
    reference = ended(lists, compiled=False, **settings)
    assert ended(lists, compiled=True, **settings) == reference
    assert ended(batches, compiled=True, **settings) == reference  # record blocks as read
    return reference


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_capture_makes_the_same_flows_compiled_and_in_python(path):
    flows, (packets, *_) = assert_same_flows(list(read_frames([path])))
    assert packets > 0


def test_a_small_table_evicts_the_same_flows_compiled_and_in_python():
    path = ROOT / "pcaps" / "http-allowed-and-denied" / "capture.pcap"
    _, (_, _, _, _, evicted) = assert_same_flows(list(read_frames([path])), max_flows=2)
    assert evicted > 0


HELLO = frames_of(ROOT / "pcaps" / "crafted" / "tls-clienthello-split.pcap")
PAYLOADS = [b"", b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", b"\x16\x03\x01\x00",
            b"+PING\r\n", b"\x00" * 30]


@st.composite
def conversations(draw):
    """Frames among two clients and a server: TCP with any flags and payloads, UDP, SCTP, garbage."""
    frames, ts = [], 1000.0
    for _ in range(draw(st.integers(1, 40))):
        ts += draw(st.sampled_from([0.001, 0.5, 3.0, 40.0]))
        kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "sctp", "garbage", "hello"]))
        client, sport = draw(st.sampled_from([(C, 40000), (C, 40001), ("10.244.3.3", 40000), (C, 1000)]))
        dport = draw(st.sampled_from([443, 443, 8080, 40002]))  # same-rank ports: the mid-stream tie-break
        forward = draw(st.booleans())
        ends = (client, sport, SRV, dport) if forward else (SRV, dport, client, sport)
        if kind == "tcp":
            frame = tcp(*ends, draw(st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x03])),
                        seq=draw(st.sampled_from([0, 1000, 1001, 2**32 - 1])), payload=draw(st.sampled_from(PAYLOADS)))
        elif kind == "udp":
            frame = udp(*ends, draw(st.sampled_from(PAYLOADS)))
        elif kind == "sctp":
            frame = sctp(*ends, draw(st.integers(0, 15)))
        elif kind == "hello":
            frame = draw(st.sampled_from(HELLO))[2]
        else:
            frame = ipv4(C, SRV, draw(st.sampled_from([6, 17, 132, 1, 47])), draw(st.binary(max_size=30)))
            frame = frame[:draw(st.integers(0, len(frame)))]
        frames.append((ts, 1, frame))
    cuts = sorted(draw(st.sets(st.integers(1, len(frames)), max_size=5)) | {len(frames)})
    return [frames[a:b] for a, b in zip([0, *cuts], cuts) if b > a]


@FUZZ
@given(batches=conversations())
def test_random_conversations_make_the_same_flows_compiled_and_in_python(batches):
    settings = {"tcp_timeout": 30.0, "udp_timeout": 10.0, "closed_linger": 2.0}
    reference = ended(batches, compiled=False, **settings)
    assert ended(batches, compiled=True, **settings) == reference


def test_a_frame_that_is_not_a_tuple_of_three_is_a_type_error():
    table = FlowTable(on_end=lambda flow, cls: None, compiled=True)
    with pytest.raises(TypeError):
        table.ingest([(1.0, 1)])
    with pytest.raises(TypeError):
        table.ingest([(1.0, 1, 42)])


def test_every_flow_field_default_is_immutable_so_the_compiled_start_may_share_it():
    # start_flow copies a template Flow's fields into each new flow: a default_factory
    # (a list, a dict) would be one object shared by every flow.
    assert all(f.default_factory is dataclasses.MISSING for f in dataclasses.fields(Flow))
    assert all(isinstance(f.default, (int, float, str, bool, tuple, type(None))) for f in dataclasses.fields(Flow)
               if f.default is not dataclasses.MISSING)


# --- the flow's life: every callback, compiled and in Python -------------------------

def five_tuple(flow: Flow) -> tuple:
    return (flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port)


def snapshot(flow: Flow) -> tuple:
    """Every field of a flow as it is now; `tls` as records and events carry it."""
    return tuple(getattr(flow, f.name) for f in dataclasses.fields(flow) if f.name != "tls") + (flow.tls_fields(),)


def lifecycle(batches, *, compiled: bool, end_at: float, **settings):
    """Every callback of a table fed `batches`, in order, then a tick at `end_at` and a flush."""
    calls = []
    table = FlowTable(on_start=lambda flow: calls.append((five_tuple(flow), "start")),
                      on_answer=lambda flow: calls.append((five_tuple(flow), "answer", flow.established)),
                      on_classified=lambda flow, cls: calls.append((five_tuple(flow), "classified", cls)),
                      on_active=lambda flow: calls.append((five_tuple(flow), "active", flow.reported)),
                      on_end=lambda flow, cls: calls.append((five_tuple(flow), "end", snapshot(flow), cls)),
                      settings=FlowConfig(**settings), compiled=compiled)
    for batch in batches:
        table.ingest(batch)
        calls.append(("batch", len(table), table.stream_bytes))
    table.tick(end_at)
    calls.append(("tick", len(table), table.stream_bytes))
    table.flush()
    return calls, (table.packets, table.flows_started, table.evicted, table.cap_hits, table.stream_bytes)


def assert_same_lives(batches, *, recut: bool = True, **settings) -> list:
    """The compiled fold makes the callbacks the Python loop makes: batches as given, record blocks
    as read (compiled), and (`recut`) the same frames cut into batches of 3 (deadlines and sweeps between)."""
    lists = [list(b) for b in batches]
    frames = [f for b in lists for f in b]
    end_at = max(ts for ts, _, _ in frames) + FlowConfig(**settings).answer_timeout + 1.0
    reference = lifecycle(lists, compiled=False, end_at=end_at, **settings)
    assert lifecycle(lists, compiled=True, end_at=end_at, **settings) == reference
    if any(type(b) is PcapRecords for b in batches):
        assert lifecycle(batches, compiled=True, end_at=end_at, **settings) == reference
    if recut:
        threes = [frames[i:i + 3] for i in range(0, len(frames), 3)]
        assert (lifecycle(threes, compiled=True, end_at=end_at, **settings)
                == lifecycle(threes, compiled=False, end_at=end_at, **settings))
    calls, _ = reference
    assert not any(c[2] is None for c in calls if c[1:2] == ("classified",))
    assert reference[1][4] == 0  # no first bytes held once every flow ended
    return calls


LIFE_SETTINGS = {
    "default": {},
    "tight": {"max_flows": 3, "max_stream_bytes": 120, "answer_timeout": 0.05, "active_timeout": 0.5,
              "closed_linger": 0.2, "tcp_timeout": 5.0, "udp_timeout": 2.0},
}


@pytest.mark.parametrize("settings", list(LIFE_SETTINGS.values()), ids=list(LIFE_SETTINGS))
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_capture_makes_the_same_callbacks_in_the_same_order_compiled_and_in_python(path, settings):
    calls = assert_same_lives(list(read_frames([path])), **settings)
    stages = {c[1] for c in calls if c[0] not in ("batch", "tick")}
    assert {"start", "answer", "end"} <= stages or stages == set()  # a capture of no flows: no callbacks


def test_the_bundled_captures_reach_every_stage_of_a_flows_life():
    seen = set()
    for path in CAPTURES:
        for settings in LIFE_SETTINGS.values():
            seen |= {c[1] for c in assert_same_lives(list(read_frames([path])), **settings)
                     if c[0] not in ("batch", "tick")}
    assert seen == {"start", "answer", "classified", "active", "end"}


@FUZZ
@given(batches=conversations())
def test_random_conversations_make_the_same_callbacks_compiled_and_in_python(batches):
    assert_same_lives(batches, recut=False, tcp_timeout=30.0, udp_timeout=10.0, closed_linger=2.0, active_timeout=5.0,
                      max_flows=4, max_stream_bytes=64)
