"""Community ID v1 of a flow (https://github.com/corelight/community-id-spec).

flows -> sinks: the same hash Zeek, Suricata and Arkime compute, so a user can
pivot from a flowwarden event to those tools' records of the same connection.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct

from agent.model import PROTOCOLS

PROTO_NUMBERS = {name: number for number, name in PROTOCOLS.items()}


def community_id(src_ip: str, dst_ip: str, src_port: int, dst_port: int, protocol: str, *, seed: int = 0) -> str:
    """"1:<base64 sha1>" over the ordered endpoint pair (spec v1)."""
    src, dst = ipaddress.ip_address(src_ip).packed, ipaddress.ip_address(dst_ip).packed
    proto = PROTO_NUMBERS[protocol]
    if (src, src_port) > (dst, dst_port):
        src, dst, src_port, dst_port = dst, src, dst_port, src_port
    data = struct.pack("!H", seed) + src + dst + struct.pack("!BxHH", proto, src_port, dst_port)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()
