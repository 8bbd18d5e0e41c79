"""The compiled ring reader (agent/_capture.h) keeps exactly what the Python reference keeps.

Recorded frame sequences (the bundled captures: VLAN, QinQ, truncated frames, IPv6,
fragments, tunnels, garbage) are packed into TPACKET_V3 blocks as the kernel lays them
out, with the copies a bridge adds (TTL and checksum rewritten), exact retransmissions
and cut prefixes mixed in, read at clock readings that cross the dedup's rotations and
the budget's resets. Both filters must keep the same frames with the same stamps, count
the same duplicates, limits and malformed blocks, hand every block back, and make the
same flows once folded.
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.capture.prefilter import Dedup, FlowBudget
from agent.capture.ring import TP_STATUS_USER, CompiledFilter, PythonFilter, RingGeometry, stamp
from agent.decode.hotpath import HOTPATH
from tests.test_hotpath import ended, lifecycle

ROOT = Path(__file__).resolve().parents[2]
ALL = [p for p in sorted((ROOT / "pcaps").glob("**/*.pcap*")) if p.name not in ("corrupt-magic.pcap",
                                                                                  "truncated-file.pcap")]
BLOCK = 1 << 16
MAC = 66  # where the kernel puts an Ethernet frame after struct tpacket3_hdr and sockaddr_ll


OFFSETS = {1: 14, 101: 0, 113: 16}  # Ethernet, raw IP, Linux cooked v1: where the IP header's type ends


def recorded(path: Path, linktype: int = 1) -> list[bytes]:
    return [f for batch in read_frames([path]) for _ts, lt, f in batch if lt == linktype]


def linktype_of(path: Path) -> int:
    return next(lt for batch in read_frames([path]) for _ts, lt, _f in batch)


CAPTURES = [p for p in ALL if linktype_of(p) in OFFSETS]  # cooked v2 keeps its protocol elsewhere


def with_copies(frames: list[bytes], rng: random.Random, *, off: int = 14) -> list[bytes]:
    """Each frame, sometimes followed by its bridge copy (TTL - 1, another IPv4 checksum), an exact
    copy (a retransmission) or a cut prefix."""
    out = []
    for f in frames:
        out.append(f)
        r = rng.random()
        if r < 0.4 and len(f) > off + 12 and f[off] >> 4 == 4:
            copy = bytearray(f)
            copy[off + 8] = (copy[off + 8] - 1) & 0xFF
            copy[off + 10:off + 12] = bytes(rng.randrange(256) for _ in range(2))
            out.append(bytes(copy))
        elif r < 0.5:
            out.append(f)
        elif r < 0.6:
            out.append(f[:rng.randrange(len(f) + 1)])
    return out


def block(frames: list[bytes]) -> bytes:
    """One TPACKET_V3 block handed to user space, laid out as the kernel does."""
    body, pos = bytearray(BLOCK), 48
    for i, f in enumerate(frames):
        nxt = (MAC + len(f) + 15) & ~15 if i + 1 < len(frames) else 0
        struct.pack_into("=6IH", body, pos, nxt, 0, 0, len(f), len(f), 1, MAC)
        body[pos + MAC:pos + MAC + len(f)] = f
        pos += nxt
    struct.pack_into("=6I", body, 0, 3, 0, TP_STATUS_USER, len(frames), 48, pos)
    return bytes(body)


def blocks_of(frames: list[bytes], rng: random.Random) -> list[bytes]:
    out, current, used = [], [], 48
    for f in frames:
        need = (MAC + len(f) + 15) & ~15
        if current and (used + need > BLOCK or rng.random() < 0.05):
            out.append(block(current))
            current, used = [], 48
        current.append(f)
        used += need
    return out + ([block(current)] if current else [])


def reads(blocks: list[bytes], rng: random.Random) -> list[tuple[float, list[bytes]]]:
    """Blocks grouped into reads at increasing clock readings (0.01-3 s apart: rotations, resets)."""
    out, now, i = [], 1_700_000_000.123456789, 0
    while i < len(blocks):
        n = rng.randint(1, 3)
        out.append((now, blocks[i:i + n]))
        now += rng.choice((0.01, 0.2, 0.6, 1.3, 3.0))
        i += n
    return out


def run(filt, plan, *, off: int = 14, linktype: int = 1, most: int = 1 << 30) -> tuple[list, list]:
    """Every read of `plan` through `filt`: (what read_ring returned, the batches taken)."""
    answers, batches = [], []
    for now, blocks in plan:
        ring = bytearray(b"".join(blocks))
        geometry = RingGeometry(block_size=BLOCK, blocks=len(blocks))
        index = 0
        while True:
            answer = filt.read_ring(ring, geometry, index, off=off, linktype=linktype, now=now, most=most)
            answers.append(answer)
            index = answer[0]
            if filt.pending:
                batches.append(filt.take())
            if answer[1] == 0:
                break
        assert all(ring[i * BLOCK + 8] == 0 for i in range(len(blocks)))  # every block back to the kernel
    return answers, batches


def pair(**limits):
    udp, tcp = limits.pop("udp", 2), limits.pop("tcp", 3)
    dmax, bmax = limits.pop("dedup_max", 1 << 18), limits.pop("budget_max", 1 << 18)
    python = PythonFilter(udp=udp, tcp=tcp, dedup=Dedup(maximum=dmax), budget=FlowBudget(udp=udp, tcp=tcp,
                                                                                        maximum=bmax))
    return python, CompiledFilter(udp=udp, tcp=tcp, dedup_max=dmax, budget_max=bmax)


def assert_same(plan, **kwargs) -> list:
    limits = {k: kwargs.pop(k) for k in list(kwargs) if k in ("udp", "tcp", "dedup_max", "budget_max")}
    python, compiled = pair(**limits)
    answers_py, batches_py = run(python, plan, **kwargs)
    answers_c, batches_c = run(compiled, plan, **kwargs)
    assert answers_c == answers_py
    assert [list(b) for b in batches_c] == batches_py  # same frames, same stamps, same order
    for name in ("duplicates", "limited", "malformed", "read"):
        assert getattr(compiled, name) == getattr(python, name), name
    return batches_py, batches_c


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_a_recorded_sequence_with_copies_keeps_the_same_frames_and_makes_the_same_flows(path):
    rng = random.Random(path.name)
    linktype = linktype_of(path)
    off = OFFSETS[linktype]
    frames = with_copies(recorded(path, linktype), rng, off=off)
    py, c = assert_same(reads(blocks_of(frames, rng), rng), off=off, linktype=linktype)
    assert sum(map(len, c)) > 0
    assert ended(c, compiled=True) == ended(py, compiled=False)


def test_vlan_qinq_truncated_and_duplicates_in_one_sequence_are_filtered_alike_and_counted():
    rng = random.Random(17)
    frames = [f for name in ("vlan-8021q.pcap", "vlan-qinq.pcap", "truncated.pcap", "udp.pcap",
                             "handshake.pcap.gz", "tls-clienthello-split.pcap", "ipv6-ext-headers.pcap",
                             "garbage.pcap")
              for f in recorded(ROOT / "pcaps" / "crafted" / name)]
    frames = with_copies(frames * 3, rng)  # every flow again: past its budget
    plan = reads(blocks_of(frames, rng), rng)
    py, c = assert_same(plan, udp=1, tcp=1)
    python, _ = pair(udp=1, tcp=1)
    run(python, plan)
    assert python.duplicates > 0 and python.limited["tcp"] > 0 and python.limited["udp"] > 0
    lives_py = lifecycle(py, compiled=False, end_at=plan[-1][0] + 10)
    assert lifecycle(c, compiled=True, end_at=plan[-1][0] + 10) == lives_py


def test_small_dedup_and_budget_tables_rotate_early_alike():
    rng = random.Random(3)
    frames = [f for p in CAPTURES[:12] for f in recorded(p)]
    assert_same(reads(blocks_of(with_copies(frames, rng), rng), rng), dedup_max=8, budget_max=4)


def test_a_read_stops_once_enough_records_wait_and_goes_on_from_the_next_block():
    frames = [f for name in ("udp.pcap", "vlan-8021q.pcap", "sctp.pcap", "handshake.pcap.gz")
              for f in recorded(ROOT / "pcaps" / "crafted" / name)]
    plan = [(1000.0, [block(frames[i:i + 4]) for i in range(0, len(frames), 4)][:6])]
    py, c = assert_same(plan, most=5, udp=100, tcp=100)
    assert len(c) > 1 and all(len(b) >= 5 for b in c[:-1])


def test_a_damaged_block_is_counted_cut_short_and_given_back_in_both():
    frames = recorded(ROOT / "pcaps" / "crafted" / "udp.pcap")[:3]
    good = bytearray(block(frames))
    bad_mac = bytearray(good)
    struct.pack_into("=H", bad_mac, 48 + 24, 0xFFFF)  # the first frame's data past the block
    bad_next = bytearray(good)
    struct.pack_into("=I", bad_next, 48, 0)  # a frame that says it is the last while more follow
    bad_first = bytearray(good)
    struct.pack_into("=I", bad_first, 16, BLOCK - 4)  # the first frame's header past the block
    plan = [(10.0, [bytes(bad_mac), bytes(bad_next), bytes(bad_first), bytes(good)])]
    py, c = assert_same(plan)
    python, _ = pair()
    answers, _ = run(python, plan)
    assert python.malformed == 3
    assert answers[0][1:] == (4, 0 + 1 + 0 + 3, 4)  # blocks, frames read (up to the damage), blocks waiting


def test_the_compiled_filter_is_built():
    assert HOTPATH is not None and hasattr(HOTPATH, "CaptureFilter")


def test_stamps_are_the_clock_reading_to_the_nanosecond():
    assert stamp(1.5) == 1.5 and abs(stamp(1_700_000_000.123456789) - 1_700_000_000.123456789) < 1e-6
