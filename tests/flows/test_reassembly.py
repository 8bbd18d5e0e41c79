"""StreamStart: the in-order first bytes of one TCP direction."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from agent.flows.reassembly import StreamStart

ISN = 1000


def test_in_order_segments_are_joined_from_isn_plus_one():
    s = StreamStart(ISN)
    s.add(ISN + 1, b"hello ")
    s.add(ISN + 7, b"world")
    assert s.data == b"hello world"
    assert not s.full


def test_out_of_order_segment_waits_for_the_gap():
    s = StreamStart(ISN)
    s.add(ISN + 7, b"world")
    assert s.data == b""
    s.add(ISN + 1, b"hello ")
    assert s.data == b"hello world"


def test_retransmission_and_overlap_keep_the_first_copy():
    s = StreamStart(ISN)
    s.add(ISN + 1, b"abcd")
    s.add(ISN + 1, b"abcd")
    s.add(ISN + 3, b"XXef")  # overlaps "cd": first copy wins, "ef" is new
    assert s.data == b"abcdef"


def test_segment_starting_before_the_stream_keeps_its_tail():
    s = StreamStart(ISN)
    s.add(ISN - 2, b"xyzabc")  # three bytes before isn+1
    assert s.data == b"abc"


def test_sequence_numbers_wrap_at_two_to_the_32():
    isn = 2**32 - 3
    s = StreamStart(isn)
    s.add(2**32 - 2, b"ab")
    s.add(0, b"cd")  # wrapped
    assert s.data == b"abcd"


def test_buffer_stops_at_the_cap():
    s = StreamStart(ISN, cap=10)
    s.add(ISN + 1, b"0123456")
    s.add(ISN + 8, b"789abc")
    assert s.data == b"0123456789"
    assert s.full
    s.add(ISN + 11, b"more")
    assert s.data == b"0123456789"


def test_segment_beyond_the_cap_is_ignored():
    s = StreamStart(ISN, cap=10)
    s.add(ISN + 50, b"far away")
    s.add(ISN + 1, b"ab")
    assert s.data == b"ab"


def test_without_isn_the_first_segment_starts_the_stream():
    s = StreamStart(None)
    s.add(5000, b"mid")
    s.add(5003, b"stream")
    assert s.data == b"midstream"


def test_empty_payload_changes_nothing():
    s = StreamStart(ISN)
    s.add(ISN + 1, b"")
    assert s.data == b"" and not s.full


@settings(max_examples=200)
@given(data=st.binary(min_size=1, max_size=300), cuts=st.lists(st.integers(0, 300), max_size=12),
       order=st.randoms(use_true_random=False), isn=st.integers(0, 2**32 - 1),
       dups=st.lists(st.integers(0, 20), max_size=5))
def test_any_order_with_duplicates_rebuilds_the_stream(data, cuts, order, isn, dups):
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    segments = [(points[i], data[points[i]:points[i + 1]]) for i in range(len(points) - 1)]
    segments += [segments[d % len(segments)] for d in dups]
    order.shuffle(segments)
    s = StreamStart(isn, cap=200)
    for offset, chunk in segments:
        s.add((isn + 1 + offset) % 2**32, chunk)
    assert s.data == data[:200]
    assert s.full == (len(data) >= 200)
