"""What live capture does to each frame before the queue, in Python (**capture**, before decode).

A packet seen on several interfaces (pod veth, bridge, peer veth) is kept once
(`Dedup`), and UDP packets and TCP data segments beyond a per-flow budget are
dropped (`FlowBudget`); both need the IP header, which `locate_ip` finds past
VLAN/QinQ tags. agent/_capture.h does the same in C over whole ring blocks:
this module is its reference (tests/capture/test_ring.py compares the two on
recorded frame sequences) and what runs without a compiler. Nothing here may
raise on a malformed frame: the decoder counts it later.
"""
from __future__ import annotations

DEDUP_PERIOD = 0.5  # seconds a packet's fingerprint is remembered (x2 generations)
DEDUP_MAX = 1 << 18  # fingerprints per generation before an early rotation
BUDGET_PERIOD = 10.0  # seconds after which every flow gets its budget back
BUDGET_MAX = 1 << 18  # flows tracked before an early reset
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD  # EtherTypes (IEEE 802, RFC 7042)
VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad (QinQ), pre-standard QinQ
FRAGMENT = -1  # locate_ip's protocol for an IPv4 fragment: ports are in the first one only
TCP_SYN_FIN_RST = 0x07  # RFC 9293 §3.1 flag bits


def locate_ip(frame: bytes, off: int) -> tuple[int, int, bytes, bytes] | None:
    """(protocol, L4 offset, addresses, fixed) of the IP packet in `frame`, or None when
    it is not IP or too short (the decoder then counts it; nothing here may raise).

    `off` is the link header's length: 14 for Ethernet, whose 802.1Q/QinQ tags the
    kernel filter passes whole and are skipped here, 0 for raw IP. `fixed` is what
    forwarding leaves alone in the IP header: IPv4 length, id and fragment field,
    or IPv6 payload length and next header. An IPv4 fragment has protocol FRAGMENT.
    """
    if off:
        if len(frame) < off:
            return None
        etype = frame[off - 2] << 8 | frame[off - 1]
        while etype in VLAN_TYPES:
            if len(frame) < off + 4:
                return None
            etype = frame[off + 2] << 8 | frame[off + 3]
            off += 4
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            return None
    if len(frame) < off + 20:
        return None
    version, ihl = frame[off] >> 4, (frame[off] & 15) * 4
    if version == 4 and ihl >= 20:
        proto = FRAGMENT if frame[off + 6] & 0x3F or frame[off + 7] else frame[off + 9]
        return proto, off + ihl, frame[off + 12:off + 20], frame[off + 2:off + 8]
    if version == 6 and len(frame) >= off + 40:
        return frame[off + 6], off + 40, frame[off + 8:off + 40], frame[off + 4:off + 7]
    return None


class Dedup:
    """Remembers packet fingerprints for 1-2 `period`s: the second copy of a packet
    (seen on the pod's veth, then on the bridge) is recognised and skipped.

    The fingerprint covers what forwarding does not change: IPv4 length, id and
    fragment field (IPv6 payload length and next header), addresses, and the first
    18 bytes of the L4 header (ports, TCP seq/ack/flags/window/checksum or UDP
    length/checksum); TTL, hop limit and the IPv4 header checksum are left out
    because routing rewrites them. `ip` is `locate_ip`'s answer for the frame.
    """

    __slots__ = ("period", "maximum", "current", "previous", "rotate_at", "duplicates")

    def __init__(self, period: float = DEDUP_PERIOD, maximum: int = DEDUP_MAX):
        self.period, self.maximum, self.current, self.previous = period, maximum, set(), set()
        self.rotate_at, self.duplicates = 0.0, 0

    def seen(self, frame: bytes, ip: tuple[int, int, bytes, bytes] | None, now: float) -> bool:
        if now >= self.rotate_at or len(self.current) >= self.maximum:
            # After a quiet spell longer than a period, the last generation is stale too.
            self.previous = self.current if now < self.rotate_at + self.period else set()
            self.current = set()
            self.rotate_at = now + self.period
        if ip is None:
            return False
        _proto, l4, addrs, fixed = ip
        fp = hash(fixed + addrs + frame[l4:l4 + 18])
        if fp in self.current or fp in self.previous:
            self.duplicates += 1
            return True
        self.current.add(fp)
        return False


class FlowBudget:
    """At most `udp` UDP packets and `tcp` TCP data segments per flow direction per
    `period`; SYN/FIN/RST always pass. Past the budget packets are dropped and counted:
    the judges have what they need, and the flow still shows life once a period.
    Fragments, other protocols and frames `locate_ip` cannot read (`ip` None) pass."""

    __slots__ = ("udp", "tcp", "period", "maximum", "counts", "reset_at", "limited")

    def __init__(self, *, udp: int, tcp: int, period: float = BUDGET_PERIOD, maximum: int = BUDGET_MAX):
        self.udp, self.tcp, self.period, self.maximum = udp, tcp, period, maximum
        self.counts: dict[int, int] = {}
        self.reset_at, self.limited = 0.0, {"udp": 0, "tcp": 0}

    def allow(self, frame: bytes, ip: tuple[int, int, bytes, bytes] | None, now: float) -> bool:
        if now >= self.reset_at or len(self.counts) >= self.maximum:
            self.counts = {}
            self.reset_at = now + self.period
        if ip is None:
            return True
        proto, l4, addrs, _fixed = ip
        if proto == 6:
            if len(frame) < l4 + 14 or frame[l4 + 13] & TCP_SYN_FIN_RST:
                return True
            limit, kind = self.tcp, "tcp"
        elif proto == 17:
            limit, kind = self.udp, "udp"
        else:
            return True
        key = hash(addrs + frame[l4:l4 + 4])
        n = self.counts.get(key, 0)
        if n >= limit:
            self.limited[kind] += 1
            return False
        self.counts[key] = n + 1
        return True
