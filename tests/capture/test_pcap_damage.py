"""read_frames(..., damaged=[...]): a damaged file is recorded with what was lost; the others are read."""
from __future__ import annotations

import struct

from agent.capture.pcap import Damage, read_frames
from tests.capture.test_pcap import T0, classic, epb, idb, shb


def _read(*paths) -> tuple[list, list[Damage]]:
    damaged: list[Damage] = []
    frames = [f for batch in read_frames(paths, damaged=damaged) for f in batch]
    return frames, damaged


def test_a_cut_file_costs_its_cut_record_and_the_other_file_is_read_whole(tmp_path):
    good, cut = tmp_path / "a.pcap", tmp_path / "b.pcap"
    good.write_bytes(classic([(T0, 0, b"a" * 60), (T0 + 2, 0, b"c" * 60)]))
    data = classic([(T0 + 1, 0, b"b" * 60), (T0 + 3, 0, b"d" * 60)])
    cut.write_bytes(data[:-7])
    frames, damaged = _read(good, cut)
    assert [f[2][:1] for f in frames] == [b"a", b"b", b"c"]
    assert [(d.path, d.records, d.size - d.offset) for d in damaged] == [(cut, 1, 69)]
    assert damaged[0].describe() == (f"{cut}: truncated: the last record is cut short (69 bytes left); "
                                     "1 record judged, the last 69 bytes lost")


def test_a_corrupt_pcapng_block_keeps_the_packets_before_it_in_the_same_chunk(tmp_path):
    path = tmp_path / "bad.pcapng"
    bad_block = struct.pack("<II", 6, 13)  # a length that is not a multiple of 4
    path.write_bytes(shb() + idb(1) + epb(0, T0 * 10**6, b"x" * 60) + bad_block + b"\0" * 8)
    frames, damaged = _read(path)
    assert len(frames) == 1
    assert damaged[0].records == 1 and "corrupt pcapng block" in damaged[0].problem


def test_a_gzip_file_names_the_uncompressed_offset(tmp_path):
    import gzip
    path = tmp_path / "cut.pcap.gz"
    data = classic([(T0, 0, b"a" * 60), (T0 + 1, 0, b"b" * 60)])
    path.write_bytes(gzip.compress(data[:-5]))
    frames, damaged = _read(path)
    assert len(frames) == 1
    assert damaged[0].size is None
    assert damaged[0].describe().endswith("1 record judged, everything after byte 100 (uncompressed) lost")


def test_without_a_damage_list_the_error_is_raised_as_before(tmp_path):
    import pytest
    from agent.capture.pcap import PcapError
    path = tmp_path / "x.pcap"
    path.write_bytes(b"nope")
    with pytest.raises(PcapError):
        list(read_frames([path]))
