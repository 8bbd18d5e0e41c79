"""Community ID v1 equals the spec's own baseline (corelight/community-id-spec, baseline/*.json).

Each vector is listed in the direction the baseline lists it; the reverse
direction must give the same ID, since the ID names the connection, not a packet.
ICMP vectors are the spec's two-way ones (echo, neighbour solicitation), whose
"ports" are the type and its counterpart type, as a caller passes them.
"""
from __future__ import annotations

import base64
import hashlib

import pytest

from agent.flows.community_id import community_id

# (protocol, src, dst, sport, dport, id with seed 0, id with seed 1)
BASELINE = [
    ("TCP", "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    ("UDP", "192.168.1.52", "8.8.8.8", 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    ("SCTP", "192.168.170.8", "192.168.170.56", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    ("TCP", "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    ("ICMP", "192.168.0.89", "192.168.0.1", 8, 0,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    ("ICMPv6", "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
]
IDS = [f"{v[0]}-{v[1]}" for v in BASELINE]


@pytest.mark.parametrize("vector", BASELINE, ids=IDS)
def test_the_id_equals_the_spec_baseline_in_both_directions(vector):
    proto, src, dst, sport, dport, want, _ = vector
    assert community_id(src, dst, sport, dport, proto) == want
    assert community_id(dst, src, dport, sport, proto) == want


@pytest.mark.parametrize("vector", BASELINE, ids=IDS)
def test_the_seed_changes_the_id_as_the_spec_baseline_says(vector):
    proto, src, dst, sport, dport, _, want = vector
    assert community_id(src, dst, sport, dport, proto, seed=1) == want
    assert community_id(dst, src, dport, sport, proto, seed=1) == want


def test_equal_addresses_are_ordered_by_port():
    # Same host on both ends: the lower port goes first in the hashed tuple.
    ip = bytes([10, 0, 0, 1])
    data = b"\x00\x00" + ip + ip + bytes([6, 0]) + (1000).to_bytes(2, "big") + (2000).to_bytes(2, "big")
    want = "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert community_id("10.0.0.1", "10.0.0.1", 2000, 1000, "TCP") == want
    assert community_id("10.0.0.1", "10.0.0.1", 1000, 2000, "TCP") == want


def test_tcp_and_udp_of_the_same_tuple_differ():
    tcp = community_id("10.244.1.10", "10.244.2.20", 43210, 53, "TCP")
    udp = community_id("10.244.1.10", "10.244.2.20", 43210, 53, "UDP")
    assert tcp != udp
