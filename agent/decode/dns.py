"""A DNS query's first name: UDP/53 payload -> QNAME (capture -> **decode** -> flows).

The flow table asks this of the first datagram a UDP/53 flow's initiator sends, and only
when a judge reads names (`dns-exfil-shape`, `Flow.dns_query`). Only the question is read:
the name a pod asked for is what a tunnel packs its data into. Bytes in, a name or None
out: a response, a truncated or malformed message, a compressed name (never valid in a
query's first name) or one over the RFC's bounds gives None, never an exception; a name
is the capture's data, so it is text a judge may match but nothing in it is trusted.
"""
from __future__ import annotations

import struct

_HEADER = struct.Struct("!HHH")  # ID, flags, QDCOUNT of the 12-byte header (RFC 1035 §4.1.1)
HEADER_LEN = 12
QR = 0x8000  # flags bit: 0 query, 1 response (RFC 1035 §4.1.1)
QUESTION_TAIL = 4  # QTYPE, QCLASS after the name (RFC 1035 §4.1.2)
MAX_NAME = 255  # octets of a name in wire form, length bytes and the root's zero included (RFC 1035 §3.1)
MAX_LABELS = 127  # a 255-octet name holds at most 127 one-octet labels
LABEL_KIND = 0xC0  # top bits of a length byte: 00 a label, 11 a pointer (§4.1.4), 01/10 extended (RFC 6891)


def _text(byte: int) -> str:
    """One label byte as dig writes it: BIND's dns_name_totext escapes."""
    if byte in b'".;\\()@$':
        return "\\" + chr(byte)
    if 0x20 < byte < 0x7F:
        return chr(byte)
    return f"\\{byte:03d}"


_TEXT = tuple(_text(b) for b in range(256))  # byte -> its text in a label


def query_name(payload: bytes) -> str | None:
    """The QNAME of the first question of a DNS query, in dig's text without the final dot
    ("." for the root); None for anything that is not a well-formed query."""
    if len(payload) < HEADER_LEN:
        return None
    _ident, flags, qdcount = _HEADER.unpack_from(payload)
    if flags & QR or qdcount == 0:
        return None
    labels: list[str] = []
    pos = HEADER_LEN
    while True:
        if pos >= len(payload) or len(labels) > MAX_LABELS:
            return None
        size = payload[pos]
        if size == 0:
            break
        if size & LABEL_KIND:  # a compression pointer or an extended label type: not a query's name
            return None
        end = pos + 1 + size
        if end - HEADER_LEN + 1 > MAX_NAME or end > len(payload):
            return None
        labels.append("".join([_TEXT[b] for b in payload[pos + 1:end]]))
        pos = end
    if pos + 1 + QUESTION_TAIL > len(payload):  # the question's type and class are part of it
        return None
    return ".".join(labels) if labels else "."
