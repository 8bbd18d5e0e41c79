"""read_frames: classic pcap and pcapng bytes -> (timestamp, linktype, frame) batches.

Small files are written here with struct, byte by byte as the formats define
them (pcap: draft-ietf-opsawg-pcap; pcapng: draft-ietf-opsawg-pcapng), so each
test states exactly what is on disk. The crafted fixtures in pcaps/crafted/
(written by scapy) are read too.
"""
from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import pytest

from agent.capture.pcap import CHUNK, PcapError, PcapRecords, read_frames

CRAFTED = Path(__file__).resolve().parents[2] / "pcaps" / "crafted"
T0 = 1767225600  # 2026-01-01T00:00:00Z, as in the crafted files


def classic(records, *, order="<", nano=False, linktype=1) -> bytes:
    """A classic pcap: global header + (sec, fraction, data) records."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    blen = len(body) + 12
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def shb(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def idb(linktype: int, *, tsresol: int | None = None, tsoffset: int | None = None, order: str = "<") -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, 0)
    if tsresol is not None:
        body += struct.pack(order + "HHB3x", 9, 1, tsresol)  # if_tsresol, padded to 4
    if tsoffset is not None:
        body += struct.pack(order + "HHq", 14, 8, tsoffset)  # if_tsoffset (seconds)
    if tsresol is not None or tsoffset is not None:
        body += struct.pack(order + "HH", 0, 0)  # opt_endofopt
    return block(1, body, order)


def epb(iface: int, ticks: int, data: bytes, order: str = "<") -> bytes:
    return block(6, struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data,
                 order)


def frames_of(*paths) -> list:
    out = []
    for batch in read_frames(paths):
        assert isinstance(batch, (list, PcapRecords)) and len(batch) > 0
        frames = list(batch)
        assert len(frames) == len(batch)
        out.extend(frames)
    return out


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_classic_microsecond_pcap_is_read_in_either_byte_order(tmp_path, order):
    path = tmp_path / "us.pcap"
    path.write_bytes(classic([(T0, 250_000, b"\x01" * 20), (T0 + 1, 999_999, b"\x02" * 7)], order=order))
    got = frames_of(path)
    assert [(ln, data) for _, ln, data in got] == [(1, b"\x01" * 20), (1, b"\x02" * 7)]
    assert got[0][0] == pytest.approx(T0 + 0.25, abs=1e-7)
    assert got[1][0] == pytest.approx(T0 + 1.999999, abs=1e-7)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_classic_nanosecond_pcap_is_read_in_either_byte_order(tmp_path, order):
    path = tmp_path / "ns.pcap"
    path.write_bytes(classic([(T0, 1, b"a"), (T0, 500_000_000, b"bb")], order=order, nano=True, linktype=101))
    got = frames_of(path)
    assert [(ln, data) for _, ln, data in got] == [(101, b"a"), (101, b"bb")]
    assert got[0][0] == pytest.approx(T0 + 1e-9, abs=1e-7)
    assert got[1][0] == pytest.approx(T0 + 0.5, abs=1e-7)


def test_the_fcs_bits_of_the_linktype_field_are_ignored(tmp_path):
    # The top 4 bits of the linktype field may carry FCS information (pcap draft §4).
    path = tmp_path / "fcs.pcap"
    path.write_bytes(classic([(T0, 0, b"x")], linktype=0x1000_0000 | 1))
    assert frames_of(path)[0][1] == 1


def test_pcapng_with_two_interfaces_uses_each_interfaces_linktype_and_resolution(tmp_path):
    path = tmp_path / "two.pcapng"
    path.write_bytes(
        shb()
        + idb(1)                                   # interface 0: Ethernet, default µs
        + idb(113, tsresol=9)                      # interface 1: cooked, ns
        + idb(101, tsresol=0x80 | 10, tsoffset=T0)  # interface 2: raw IP, 2**-10 s, offset T0
        + epb(0, T0 * 10**6 + 1000, b"eth0")
        + epb(1, T0 * 10**9 + 2_000_000, b"sll1")
        + epb(2, 3 * 1024 + 512, b"raw2")
        + epb(0, T0 * 10**6 + 4000, b"eth3"))
    got = frames_of(path)
    assert [(ln, data) for _, ln, data in got] == [(1, b"eth0"), (113, b"sll1"), (101, b"raw2"), (1, b"eth3")]
    assert [round(ts - T0, 6) for ts, _, _ in got] == [0.001, 0.002, 3.5, 0.004]


def test_big_endian_pcapng_is_read(tmp_path):
    path = tmp_path / "be.pcapng"
    path.write_bytes(shb(">") + idb(1, order=">") + epb(0, T0 * 10**6 + 7, b"frame", order=">"))
    (ts, linktype, data), = frames_of(path)
    assert (linktype, data) == (1, b"frame")
    assert ts == pytest.approx(T0 + 7e-6, abs=1e-7)


def test_gzip_compressed_pcap_is_read_like_the_plain_one(tmp_path):
    plain = classic([(T0, 0, b"one"), (T0, 1, b"two")])
    (tmp_path / "p.pcap").write_bytes(plain)
    (tmp_path / "p.pcap.gz").write_bytes(gzip.compress(plain))
    assert frames_of(tmp_path / "p.pcap.gz") == frames_of(tmp_path / "p.pcap")
    assert [d for _, _, d in frames_of(tmp_path / "p.pcap.gz")] == [b"one", b"two"]


def test_several_files_are_merged_in_timestamp_order(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcapng", tmp_path / "c.pcap.gz"
    a.write_bytes(classic([(T0, 0, b"a0"), (T0 + 2, 0, b"a2"), (T0 + 5, 0, b"a5")]))
    b.write_bytes(shb() + idb(1) + epb(0, (T0 + 1) * 10**6, b"b1") + epb(0, (T0 + 4) * 10**6, b"b4"))
    c.write_bytes(gzip.compress(classic([(T0 + 3, 0, b"c3")], nano=True)))
    got = frames_of(a, b, c)
    assert [d for _, _, d in got] == [b"a0", b"b1", b"a2", b"c3", b"b4", b"a5"]
    assert [ts for ts, _, _ in got] == sorted(ts for ts, _, _ in got)


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_record_that_straddles_a_read_chunk_is_read_whole(tmp_path, kind):
    # Records of 1000 bytes: some record crosses the CHUNK boundary of the reader.
    n = CHUNK // 1000 + 50
    datas = [i.to_bytes(4, "big") * 250 for i in range(n)]
    path = tmp_path / f"big.{kind}"
    if kind == "pcap":
        path.write_bytes(classic([(T0 + i, 0, d) for i, d in enumerate(datas)]))
    else:
        path.write_bytes(shb() + idb(1) + b"".join(epb(0, (T0 + i) * 10**6, d) for i, d in enumerate(datas)))
    got = frames_of(path)
    assert len(got) == n
    assert [d for _, _, d in got] == datas


# --- files that cannot be read: one PcapError that names the file ---------------

def _raises_naming(path: Path, match: str):
    with pytest.raises(PcapError, match=re.escape(str(path)) + ".*" + match) as info:
        frames_of(path)
    return info


def test_a_missing_file_is_a_pcap_error_naming_it(tmp_path):
    _raises_naming(tmp_path / "nope.pcap", "cannot open")


def test_an_empty_file_is_a_pcap_error_naming_it(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    _raises_naming(path, "not a capture file")


def test_a_bad_magic_is_a_pcap_error_naming_it(tmp_path):
    path = tmp_path / "text.pcap"
    path.write_bytes(b"GET / HTTP/1.1\r\n" * 4)
    _raises_naming(path, "not a pcap or pcapng file")


def test_a_cut_global_header_is_a_pcap_error_naming_it(tmp_path):
    path = tmp_path / "short.pcap"
    path.write_bytes(classic([])[:10])
    _raises_naming(path, "truncated pcap header")


def test_a_truncated_record_is_a_pcap_error_after_the_whole_records(tmp_path):
    path = tmp_path / "cut.pcap"
    path.write_bytes(classic([(T0, 0, b"whole"), (T0, 1, b"x" * 60)])[:-40])
    got = []
    with pytest.raises(PcapError, match=re.escape(str(path)) + ".*truncated"):
        for batch in read_frames([path]):
            got.extend(batch)
    assert [d for _, _, d in got] == [b"whole"]


def test_a_cut_record_header_is_a_pcap_error(tmp_path):
    path = tmp_path / "cuthdr.pcap"
    path.write_bytes(classic([(T0, 0, b"whole")]) + b"\x00" * 9)
    _raises_naming(path, "truncated")


def test_an_absurd_record_length_is_a_pcap_error(tmp_path):
    path = tmp_path / "absurd.pcap"
    path.write_bytes(classic([(T0, 0, b"ok")]) + struct.pack("<IIII", T0, 0, 0x7FFF_FFF0, 60) + b"\x00" * 60)
    _raises_naming(path, "corrupt record at byte 42")


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_corrupt_record_past_the_first_read_chunk_is_reported_at_its_file_offset(tmp_path, kind):
    datas = [i.to_bytes(4, "big") * 250 for i in range(CHUNK // 1000 + 50)]
    path = tmp_path / f"late.{kind}"
    if kind == "pcap":
        good = classic([(T0, 0, d) for d in datas])
        path.write_bytes(good + struct.pack("<IIII", T0, 0, 0x7FFF_FFF0, 60) + b"\x00" * 60)
        _raises_naming(path, f"corrupt record at byte {len(good)} ")
    else:
        good = shb() + idb(1) + b"".join(epb(0, 0, d) for d in datas)
        path.write_bytes(good + struct.pack("<II", 6, 0x4000_0000) + b"\x00" * 64)
        _raises_naming(path, f"corrupt pcapng block at byte {len(good)} ")


def test_a_corrupt_gzip_stream_is_a_pcap_error(tmp_path):
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(gzip.compress(classic([(T0, 0, b"a" * 500)]))[:-30])
    _raises_naming(path, "")


def test_a_truncated_pcapng_block_is_a_pcap_error(tmp_path):
    path = tmp_path / "cut.pcapng"
    path.write_bytes((shb() + idb(1) + epb(0, 0, b"frame" * 10))[:-8])
    _raises_naming(path, "truncated")


def test_a_pcapng_block_with_an_absurd_length_is_a_pcap_error(tmp_path):
    path = tmp_path / "absurd.pcapng"
    path.write_bytes(shb() + idb(1) + struct.pack("<II", 6, 0x4000_0000) + b"\x00" * 64)
    _raises_naming(path, "corrupt pcapng block")


def test_a_pcapng_packet_for_an_undeclared_interface_is_a_pcap_error(tmp_path):
    path = tmp_path / "noiface.pcapng"
    path.write_bytes(shb() + idb(1) + epb(3, 0, b"frame"))
    _raises_naming(path, "undeclared interface 3")


def test_a_pcapng_section_with_a_bad_byte_order_magic_is_a_pcap_error(tmp_path):
    path = tmp_path / "bom.pcapng"
    path.write_bytes(block(0x0A0D0D0A, struct.pack("<IHHq", 0xDEADBEEF, 1, 0, -1)))
    _raises_naming(path, "corrupt pcapng section header")


def test_a_pcap_of_an_unsupported_link_type_is_a_pcap_error(tmp_path):
    path = tmp_path / "wifi.pcap"
    path.write_bytes(classic([(T0, 0, b"x")], linktype=127))  # 802.11 + radiotap
    _raises_naming(path, "unsupported link type 127")


def test_a_pcapng_interface_of_an_unsupported_link_type_is_a_pcap_error(tmp_path):
    path = tmp_path / "wifi.pcapng"
    path.write_bytes(shb() + idb(1) + idb(127) + epb(0, 0, b"x"))
    _raises_naming(path, "unsupported link type 127")


def test_an_error_in_one_of_several_files_names_that_file(tmp_path):
    good, bad = tmp_path / "good.pcap", tmp_path / "bad.pcap"
    good.write_bytes(classic([(T0, 0, b"x")]))
    bad.write_bytes(b"\xde\xad\xbe\xef" * 8)
    with pytest.raises(PcapError, match=re.escape(str(bad))):
        frames_of(good, bad)


# --- the crafted fixtures -----------------------------------------------------

def test_the_crafted_corrupt_magic_file_fails_with_one_clear_error():
    path = CRAFTED / "corrupt-magic.pcap"
    _raises_naming(path, r"not a pcap or pcapng file \(magic 0x")


def test_the_crafted_truncated_file_yields_its_whole_record_then_fails():
    path = CRAFTED / "truncated-file.pcap"
    got = []
    with pytest.raises(PcapError, match=re.escape(str(path)) + ".*truncated"):
        for batch in read_frames([path]):
            got.extend(batch)
    assert len(got) == 1 and got[0][1] == 1


@pytest.mark.parametrize("name", ["nanosecond.pcap", "handshake.pcap.gz", "pcapng-two-interfaces.pcapng",
                                  "pcapng-mixed-linktypes.pcapng"])
def test_crafted_captures_step_one_millisecond_from_2026(name):
    got = frames_of(CRAFTED / name)
    assert [round((ts - T0) * 1000, 3) for ts, _, _ in got] == list(range(len(got)))


def test_the_crafted_mixed_linktype_pcapng_keeps_each_interfaces_linktype():
    assert {ln for _, ln, _ in frames_of(CRAFTED / "pcapng-mixed-linktypes.pcapng")} == {1, 113}


@pytest.mark.parametrize("btype, body", [(6, b"\x00" * 8), (2, b"\x00" * 6)])
def test_a_pcapng_block_shorter_than_its_fields_is_a_pcap_error_naming_the_file(tmp_path, btype, body):
    path = tmp_path / "short-block.pcapng"
    path.write_bytes(shb() + idb(1) + block(btype, body))
    with pytest.raises(PcapError, match="short-block.pcapng"):
        frames_of(path)


def test_a_simple_packet_block_takes_the_timestamp_of_the_packet_before_it(tmp_path):
    spb = block(3, struct.pack("<I", 4) + b"spb!")
    path = tmp_path / "spb.pcapng"
    path.write_bytes(shb() + idb(1) + epb(0, 5_000_000, b"first") + spb)
    (t1, _, first), (t2, _, second) = frames_of(path)
    assert (first, second) == (b"first", b"spb!") and t2 == t1 == pytest.approx(5.0)
