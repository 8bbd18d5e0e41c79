"""query_name: the first question's name of a DNS query (RFC 1035 §4.1), or None; never raises.

The queries are real: the first three are dig's, as recorded in pcaps/dns/capture.pcap (dig
through dnsmasq, EDNS OPT record in the additional section); the others were sent by
`dig +nocookie` (DiG 9.18) to a local UDP socket, and dig prints their names as asserted here.
"""
from __future__ import annotations

import os
import struct

from hypothesis import given, settings, strategies as st

from agent.decode.dns import MAX_LABELS, MAX_NAME, query_name

FUZZ = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)

A_QUERY = bytes.fromhex(  # pcaps/dns: dig api.api.svc.cluster.local A
    "6551 0120 0001 0000 0000 0001"  # id, flags RD+AD (QR 0: a query), QD 1, AN 0, NS 0, AR 1
    "03617069 03617069 03737663 07636c7573746572 056c6f63616c 00"  # api.api.svc.cluster.local
    "0001 0001"  # QTYPE A, QCLASS IN
    "00 0029 04d0 00000000 0000")  # OPT: root, type 41, UDP size 1232, no options
A_RESPONSE = bytes.fromhex(  # pcaps/dns: dnsmasq's answer to it
    "6551 8580 0001 0001 0000 0001"  # flags QR+AA+RD+RA: a response
    "03617069 03617069 03737663 07636c7573746572 056c6f63616c 00 0001 0001"
    "c00c 0001 0001 00000000 0004 0a607814"  # answer: a pointer to the question's name, A 10.96.120.20
    "00 0029 04d0 00000000 0000")
NXDOMAIN_QUERY = bytes.fromhex(  # pcaps/dns: dig nosuch.default.svc.cluster.local A
    "8f6e 0120 0001 0000 0000 0001"
    "066e6f73756368 0764656661756c74 03737663 07636c7573746572 056c6f63616c 00"
    "0001 0001"
    "00 0029 04d0 00000000 0000")
ESCAPES_QUERY = bytes.fromhex(  # dig 'a\.b\032c\255.Example.org' TXT: '.', a space and 0xff inside a label
    "a0c5 0120 0001 0000 0000 0001"
    "06 612e622063ff 07 4578616d706c65 03 6f7267 00"
    "0010 0001"  # QTYPE TXT, QCLASS IN
    "00 0029 04d0 00000000 0000")
ROOT_QUERY = bytes.fromhex(  # dig . TXT
    "4d46 0120 0001 0000 0000 0001"
    "00"  # the root: no label
    "0010 0001"
    "00 0029 04d0 00000000 0000")

QUERIES = {A_QUERY: "api.api.svc.cluster.local", NXDOMAIN_QUERY: "nosuch.default.svc.cluster.local",
           ESCAPES_QUERY: "a\\.b\\032c\\255.Example.org", ROOT_QUERY: "."}


def query(name: bytes, *, flags: int = 0x0100, qdcount: int = 1) -> bytes:
    """A query with `name` in wire form as its first question's name."""
    return struct.pack("!HHHHHH", 0x1234, flags, qdcount, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def test_dig_queries_give_the_names_dig_prints():
    for message, name in QUERIES.items():
        assert query_name(message) == name


def test_a_response_is_not_a_query():
    assert query_name(A_RESPONSE) is None
    assert query_name(A_QUERY[:2] + b"\x81\x20" + A_QUERY[4:]) is None  # the QR bit alone


def test_a_query_without_a_question_has_no_name():
    assert query_name(A_QUERY[:4] + b"\x00\x00" + A_QUERY[6:]) is None


def test_a_compression_pointer_in_a_query_name_is_refused():
    assert query_name(query(b"\x03api\xc0\x0c")) is None
    assert query_name(query(b"\xc0\x0c")) is None
    assert query_name(query(b"\x03api\x40\x00")) is None  # an extended label type (RFC 6891 deprecated them)


def test_every_truncated_prefix_gives_none_or_the_name():
    for message, name in QUERIES.items():
        for end in range(len(message)):
            assert query_name(message[:end]) in (None, name), end
        # The name with its type and class is the question: it is named from its last byte on.
        question_end = message.index(b"\x00", 12) + 1 + 4
        assert query_name(message[:question_end]) == name
        assert query_name(message[:question_end - 1]) is None


def test_names_are_bounded_at_255_octets():
    longest = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(longest) == MAX_NAME
    assert query_name(query(longest)) == ".".join(["a" * 63] * 3 + ["b" * 61])
    assert query_name(query(longest[:-2] + b"b\x01c\x00")) is None  # one octet more


def test_names_are_bounded_at_127_labels():
    labels = b"\x01x" * MAX_LABELS + b"\x00"
    assert query_name(query(labels)) == ".".join(["x"] * MAX_LABELS)
    assert query_name(query(b"\x01x" * (MAX_LABELS + 1) + b"\x00")) is None


def test_garbage_to_port_53_is_no_query():
    assert query_name(b"") is None
    assert query_name(b"\x00" * 11) is None
    assert query_name(b"GET / HTTP/1.1\r\n\r\n") is None


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_none_or_text(data):
    name = query_name(data)
    assert name is None or (isinstance(name, str) and name.isascii() and name.isprintable())


@FUZZ
@given(st.sampled_from(sorted(QUERIES)), st.integers(0, 80), st.integers(0, 255))
def test_a_changed_byte_gives_none_or_text(message, at, value):
    changed = message[:at] + bytes([value]) + message[at + 1:]
    name = query_name(changed)
    assert name is None or (isinstance(name, str) and name.isascii() and name.isprintable())
