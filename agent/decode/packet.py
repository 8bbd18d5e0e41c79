"""Frame bytes -> the header fields the flow table needs (the per-packet hot path).

capture -> **decode** -> flows. Headers are read straight from the bytes with
offsets into the one frame buffer: no per-packet objects but the result tuple,
no slicing until a payload is wanted. Encapsulations used by CNIs (VXLAN,
Geneve, GRE/ERSPAN, IP-in-IP) are unwrapped so overlay traffic is attributed by
its inner addresses.

`decode_frame(linktype, frame)` returns a packet tuple:

    (proto, key, flags, seq, payload_start, payload_end, ip_len)

`key` is the flow key bytes: source address, destination address, source port,
destination port (4+4+2+2 bytes for IPv4, 16+16+2+2 for IPv6), followed by one
byte of protocol number for anything but TCP. For plain IPv4 TCP it is one slice
of the frame, the cheapest key there is. `flags` are the TCP flags (the first
chunk type for SCTP). The payload is `frame[payload_start:payload_end]`. It
raises `DecodeError` for malformed input and `Skip` for well-formed packets
that are not judged.
"""
from __future__ import annotations

import struct

from agent.decode.errors import DecodeError, Skip

# Link types, https://www.tcpdump.org/linktypes.html
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
DLT_RAW_ALIASES = (12, 14)  # DLT_RAW as some BSDs number it

# EtherTypes (IEEE 802, RFC 7042)
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
ETH_ERSPAN_II, ETH_ERSPAN_III = 0x88BE, 0x22EB
VLAN_TYPES = frozenset((ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD))

# IP protocol numbers (IANA)
IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP = 1, 4, 6, 17
IPPROTO_IPV6, IPPROTO_GRE, IPPROTO_ICMPV6, IPPROTO_SCTP = 41, 47, 58, 132
# IPv6 extension headers that we walk over (RFC 8200 §4): hop-by-hop, routing, dest opts, AH
IPV6_EXT = frozenset((0, 43, 60, 51))
IPV6_FRAGMENT, IPV6_NO_NEXT = 44, 59

VXLAN_PORTS = frozenset((4789, 8472))  # RFC 7348; 8472 is Linux/flannel's default
VXLAN_GPE_PORT = 4790  # draft-ietf-nvo3-vxlan-gpe: next protocol 1 IPv4, 2 IPv6, 3 Ethernet
GPE_NEXT = {1: ETH_IPV4, 2: ETH_IPV6, 3: ETH_TEB}
GENEVE_PORT = 6081  # RFC 8926
MAX_DEPTH = 4  # nested encapsulations before we give up

_U16 = struct.Struct("!H").unpack_from
_TCP = struct.Struct("!IxxxxBB").unpack_from  # seq, (ack), data offset, flags (RFC 9293 §3.1)
_IPV4 = struct.Struct("!BxHHH").unpack_from  # version/ihl, total length, id, flags/fragment offset
_IPV6 = struct.Struct("!4xHB").unpack_from  # payload length, next header

TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST = 0x02, 0x10, 0x01, 0x04


_TUNNEL_PORTS = VXLAN_PORTS | {GENEVE_PORT, VXLAN_GPE_PORT}


def decode_frame(linktype: int, frame: bytes):
    """Decode one captured frame; see the module docstring for the result."""
    # Fast path for most packets on a pod's veth: Ethernet, IPv4 without options and
    # not a fragment, TCP or (non-tunnel) UDP. Anything else takes the general path,
    # which gives the same answer (tests compare the two).
    if (linktype == 1 and len(frame) >= 54 and frame[12] == 8 and frame[13] == 0 and frame[14] == 0x45
            and not (frame[20] & 0x3F or frame[21])):
        total = frame[16] << 8 | frame[17]
        proto = frame[23]
        if proto == 6 and total >= 40:
            seq, doff, flags = _TCP(frame, 38)
            end = 14 + total if 14 + total <= len(frame) else len(frame)
            start = 34 + (doff >> 4) * 4
            if start >= 54:
                return (6, frame[26:38], flags, seq, start if start <= end else end, end, total)
        elif proto == 17 and total >= 28 and (frame[36] << 8 | frame[37]) not in _TUNNEL_PORTS:
            end = 14 + total if 14 + total <= len(frame) else len(frame)
            return (17, frame[26:38] + b"\x11", 0, 0, 42, end, total)
    try:
        if linktype == LINKTYPE_ETHERNET:
            return _ether(frame, 0, 0)
        return _LINK[linktype](frame)
    except (IndexError, struct.error):
        raise DecodeError("truncated") from None
    except KeyError:
        raise DecodeError(f"unsupported-linktype-{linktype}") from None


def _ether(frame: bytes, off: int, depth: int):
    if len(frame) < off + 14:
        raise DecodeError("ether-truncated")
    etype = frame[off + 12] << 8 | frame[off + 13]
    off += 14
    while etype in VLAN_TYPES:  # 802.1Q / QinQ tags
        if len(frame) < off + 4:
            raise DecodeError("vlan-truncated")
        etype = frame[off + 2] << 8 | frame[off + 3]
        off += 4
    return _by_ethertype(frame, off, etype, depth)


def _by_ethertype(frame: bytes, off: int, etype: int, depth: int):
    if etype == ETH_IPV4:
        return _ipv4(frame, off, depth)
    if etype == ETH_IPV6:
        return _ipv6(frame, off, depth)
    raise Skip("non-ip")


def _ipv4(frame: bytes, off: int, depth: int):
    if len(frame) < off + 20:
        raise DecodeError("ipv4-truncated")
    vihl, total, _ident, frag = _IPV4(frame, off)
    if vihl >> 4 != 4:
        raise DecodeError("ipv4-bad-version")
    ihl = (vihl & 15) * 4
    if ihl < 20:
        raise DecodeError("ipv4-bad-ihl")
    if total == 0:  # captured before TCP segmentation offload filled it in
        total = len(frame) - off
    if total < ihl:
        raise DecodeError("ipv4-bad-length")
    end = off + total
    if end > len(frame):
        end = len(frame)  # snaplen cut the packet: the header tells its real size
    proto = frame[off + 9]
    src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
    if frag & 0x1FFF:  # a later fragment has no transport header (RFC 791): the first speaks for it
        raise Skip("ip-fragment")
    return _transport(frame, off + ihl, end, proto, src, dst, total, depth)


def _ipv6(frame: bytes, off: int, depth: int):
    if len(frame) < off + 40:
        raise DecodeError("ipv6-truncated")
    if frame[off] >> 4 != 6:
        raise DecodeError("ipv6-bad-version")
    plen, nxt = _IPV6(frame, off)
    src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
    # Payload length 0: a jumbogram or a BIG TCP/GSO packet captured before segmentation
    # (RFC 2675); its real size is the frame's, as for IPv4's TSO length 0.
    total = plen + 40 if plen else len(frame) - off
    end = min(off + total, len(frame))
    off += 40
    while nxt in IPV6_EXT or nxt == IPV6_FRAGMENT:
        if off + 8 > end:
            raise DecodeError("ipv6-ext-truncated")
        if nxt == IPV6_FRAGMENT:
            if _U16(frame, off + 2)[0] & 0xFFF8:  # offset > 0: a later fragment (RFC 8200 §4.5)
                raise Skip("ip-fragment")
            size = 8
        elif nxt == 51:  # AH counts its length in 4-octet units (RFC 4302)
            size = (frame[off + 1] + 2) * 4
        else:
            size = (frame[off + 1] + 1) * 8
        nxt, off = frame[off], off + size
    if nxt == IPV6_NO_NEXT:
        raise Skip("ipv6-no-next-header")
    return _transport(frame, off, end, nxt, src, dst, total, depth)


def _transport(frame: bytes, off: int, end: int, proto: int, src: bytes, dst: bytes, total: int, depth: int):
    if proto == IPPROTO_TCP:
        if off + 20 > end:
            raise DecodeError("tcp-truncated")
        seq, doff, flags = _TCP(frame, off + 4)
        hlen = (doff >> 4) * 4
        if hlen < 20:
            raise DecodeError("tcp-bad-offset")
        return (IPPROTO_TCP, src + dst + frame[off:off + 4], flags, seq, min(off + hlen, end), end, total)
    if proto == IPPROTO_UDP:
        if off + 8 > end:
            raise DecodeError("udp-truncated")
        dport = _U16(frame, off + 2)[0]
        if depth < MAX_DEPTH:
            if dport in VXLAN_PORTS and frame[off + 8] & 0x08:  # VNI-valid flag (RFC 7348 §5)
                return _ether(frame, off + 16, depth + 1)
            if dport == GENEVE_PORT:
                return _geneve(frame, off + 8, depth + 1)
            if dport == VXLAN_GPE_PORT and frame[off + 8] & 0x04 and frame[off + 11] in GPE_NEXT:
                return _inner(frame, off + 16, GPE_NEXT[frame[off + 11]], depth + 1)
        return (IPPROTO_UDP, src + dst + frame[off:off + 4] + b"\x11", 0, 0, off + 8, end, total)
    if proto == IPPROTO_SCTP:
        if off + 12 > end:
            raise DecodeError("sctp-truncated")
        chunk = frame[off + 12] if off + 12 < end else 0  # INIT=1, INIT ACK=2 (RFC 9260)
        return (IPPROTO_SCTP, src + dst + frame[off:off + 4] + b"\x84", chunk, 0, off + 12, end, total)
    if depth < MAX_DEPTH:
        if proto == IPPROTO_IPIP:
            return _ipv4(frame, off, depth + 1)
        if proto == IPPROTO_IPV6:
            return _ipv6(frame, off, depth + 1)
        if proto == IPPROTO_GRE:
            return _gre(frame, off, depth + 1)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        raise Skip("icmp")
    raise Skip(f"ip-proto-{proto}")


def _geneve(frame: bytes, off: int, depth: int):
    if len(frame) < off + 8:
        raise DecodeError("geneve-truncated")
    opt_len = (frame[off] & 0x3F) * 4
    return _inner(frame, off + 8 + opt_len, _U16(frame, off + 2)[0], depth)


def _gre(frame: bytes, off: int, depth: int):
    if len(frame) < off + 4:
        raise DecodeError("gre-truncated")
    flags, ptype = frame[off], _U16(frame, off + 2)[0]
    # RFC 2784/2890: optional checksum(+reserved), key, sequence words follow the header
    off += 4 + 4 * (bool(flags & 0x80) + bool(flags & 0x20) + bool(flags & 0x10))
    if ptype == ETH_ERSPAN_II and flags & 0x10:  # type II has a sequence number; type I has no header
        off += 8
    elif ptype == ETH_ERSPAN_III:
        if len(frame) < off + 12:
            raise DecodeError("erspan-truncated")
        off += 20 if frame[off + 11] & 0x01 else 12  # optional platform-specific subheader
    return _inner(frame, off, ptype, depth)


def _inner(frame: bytes, off: int, ptype: int, depth: int):
    if ptype in (ETH_TEB, ETH_ERSPAN_II, ETH_ERSPAN_III):
        return _ether(frame, off, depth)
    return _by_ethertype(frame, off, ptype, depth)


def _raw_ip(frame: bytes):
    version = frame[0] >> 4
    if version == 4:
        return _ipv4(frame, 0, 0)
    if version == 6:
        return _ipv6(frame, 0, 0)
    raise DecodeError("raw-bad-version")


def _sll(frame: bytes):  # Linux cooked v1: 16-byte header, protocol last
    if len(frame) < 16:
        raise DecodeError("sll-truncated")
    return _by_ethertype(frame, 16, _U16(frame, 14)[0], 0)


def _sll2(frame: bytes):  # Linux cooked v2: 20-byte header, protocol first
    if len(frame) < 20:
        raise DecodeError("sll2-truncated")
    return _by_ethertype(frame, 20, _U16(frame, 0)[0], 0)


def _null(frame: bytes):  # BSD loopback: 4-byte address family in host byte order
    if len(frame) < 4:
        raise DecodeError("null-truncated")
    family = frame[0] | frame[3]
    if family == 2:
        return _ipv4(frame, 4, 0)
    if family in (10, 24, 28, 30):  # AF_INET6 differs by OS
        return _ipv6(frame, 4, 0)
    raise Skip("non-ip")


_LINK = {
    LINKTYPE_RAW: _raw_ip, 12: _raw_ip, 14: _raw_ip,
    LINKTYPE_IPV4: lambda f: _ipv4(f, 0, 0), LINKTYPE_IPV6: lambda f: _ipv6(f, 0, 0),
    LINKTYPE_LINUX_SLL: _sll, LINKTYPE_LINUX_SLL2: _sll2,
    LINKTYPE_NULL: _null, LINKTYPE_LOOP: _null,
}
SUPPORTED_LINKTYPES = frozenset(_LINK) | {LINKTYPE_ETHERNET}


def split_key(key: bytes) -> tuple[bytes, bytes, int, int]:
    """(src, dst, sport, dport) of a flow key."""
    a = 4 if len(key) < 36 else 16
    return key[:a], key[a:2 * a], key[2 * a] << 8 | key[2 * a + 1], key[2 * a + 2] << 8 | key[2 * a + 3]


def reverse_key(key: bytes) -> bytes:
    """The key of the same flow's packets in the other direction."""
    a = 4 if len(key) < 36 else 16
    p = 2 * a
    return key[a:p] + key[:a] + key[p + 2:p + 4] + key[p:p + 2] + key[p + 4:]
