"""A password in the clear reaches Flow.credentials on every path, compact table included (issue #13).

agent/_compact.h's `http_request` keeps an HTTP connection in the compact table (no Python
object, no judge sees it) only when Python would classify its first segment alike: the
request's head whole in it and no Basic credentials. A request with `Authorization: Basic`,
or whose head goes on in a second segment, must move to Python, where the flow gets
`app == "http"` and `credentials == "http-basic"` as with the Python fold
(FLOWWARDEN_PURE_PYTHON=1) and with the compiled fold over the Python table.

Connections are crafted with scapy (Ethernet, IPv4, TCP: SYN, SYN-ACK, ACK, then the request and
the answer), one batch each, from the allowed frontend to the api pod of the
http-allowed-and-denied scenario; the first teaches its outcome, the others may repeat it.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from agent.config import Config
from agent.decode.hotpath import HOTPATH
from agent.inventory.snapshot import load_cluster
from agent.model import CLASSIFIED, Judged
from agent.pipeline import Pipeline
from agent.sinks.events import EventSink
from agent.sinks.metrics import MetricsSink

SCENARIO = Path(__file__).resolve().parents[2] / "pcaps" / "http-allowed-and-denied"
FRONTEND_POD, API_POD = "10.244.1.10", "10.244.1.20"  # the api admits the frontend on 8080/TCP
MODES = ["compact", "compiled", "python"]  # compiled fold + compact table; compiled fold; Python fold

PROBE = (b"GET /healthz HTTP/1.1\r\n"
         b"Host: 10.244.1.20:8080\r\n"
         b"User-Agent: kube-probe/1.30\r\n"
         b"Accept: */*\r\n"
         b"\r\n")
BEARER = (b"GET /v1/items HTTP/1.1\r\n"
          b"Host: api:8080\r\n"
          b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl\r\n"  # a token: no password
          b"Accept: */*\r\n"
          b"\r\n")
BASIC = (b"GET /v1/items HTTP/1.1\r\n"  # curl -u alice:secret
         b"Host: api:8080\r\n"
         b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n"  # base64("alice:secret")
         b"User-Agent: curl/8.5.0\r\n"
         b"Accept: */*\r\n"
         b"\r\n")
SPLIT = BASIC.index(b"Authorization")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CONNECTIONS = {  # client port -> the client's segments (the head of the last one whole)
    41000: [PROBE],  # teaches the outcome: the first connection of its key is judged in Python
    41001: [PROBE],
    41002: [BEARER],
    41003: [BASIC],
    41004: [BASIC[:SPLIT], BASIC[SPLIT:]],  # the Authorization header in the second segment
}


def _segment(t: float, sport: int, *, from_client: bool, flags: str, seq: int, ack: int, data: bytes = b"") -> tuple:
    ends = (FRONTEND_POD, API_POD) if from_client else (API_POD, FRONTEND_POD)
    ports = (sport, 8080) if from_client else (8080, sport)
    frame = (Ether(src="02:42:0a:f4:01:0a", dst="02:42:0a:f4:01:14") / IP(src=ends[0], dst=ends[1])
             / TCP(sport=ports[0], dport=ports[1], flags=flags, seq=seq, ack=ack, window=64240))
    return (t, 1, bytes(frame / data if data else frame))


def _connection(t: float, sport: int, segments: list[bytes]) -> list[tuple]:
    """SYN, SYN-ACK, ACK, the client's segments, the server's answer."""
    cseq, sseq = 1000, 5000
    frames = [_segment(t, sport, from_client=True, flags="S", seq=cseq, ack=0),
              _segment(t + 1e-4, sport, from_client=False, flags="SA", seq=sseq, ack=cseq + 1),
              _segment(t + 2e-4, sport, from_client=True, flags="A", seq=cseq + 1, ack=sseq + 1)]
    cseq += 1
    for i, data in enumerate(segments):
        frames.append(_segment(t + 3e-4 + i * 1e-4, sport, from_client=True, flags="PA", seq=cseq, ack=sseq + 1,
                               data=data))
        cseq += len(data)
    frames.append(_segment(t + 1e-3, sport, from_client=False, flags="PA", seq=sseq + 1, ack=cseq, data=OK))
    return frames


class Classified:
    """A sink keeping what each Python flow's first bytes were classified as (compact flows have no such point)."""
    aggregates = True
    stages = frozenset({CLASSIFIED})

    def __init__(self) -> None:
        self.flows: dict[int, tuple[str | None, str | None]] = {}

    def emit(self, judged: Judged) -> None:
        self.flows[judged.flow.src_port] = (judged.flow.app, judged.flow.credentials)

    def flush(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


def _run(mode: str) -> tuple[dict, bytes, object, int]:
    """Every connection through a pipeline: what Python classified, the events, the totals, the Python flows."""
    events, classified = io.BytesIO(), Classified()
    pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(),
                        sinks=[EventSink(events), MetricsSink(), classified])
    if mode == "python":
        pipeline.table.compiled = False  # the per-packet loop FLOWWARDEN_PURE_PYTHON=1 runs
    pipeline.compact(mode == "compact")
    for i, (sport, segments) in enumerate(CONNECTIONS.items()):
        pipeline.feed(_connection(100.0 + i * 0.01, sport, segments))
    in_python = pipeline.table.flows_started
    pipeline.finish()
    return classified.flows, events.getvalue(), pipeline.totals, in_python


def _available(mode: str) -> bool:
    return mode == "python" or HOTPATH is not None


@pytest.mark.parametrize("mode", MODES)
def test_basic_credentials_reach_the_flow_whether_whole_or_split_over_two_segments(mode):
    if not _available(mode):
        pytest.skip("the compiled per-packet path is off (FLOWWARDEN_PURE_PYTHON=1, or no C compiler)")
    flows, _events, totals, _in_python = _run(mode)
    assert flows[41003] == ("http", "http-basic")
    assert flows[41004] == ("http", "http-basic")
    assert flows[41000] == ("http", None)
    assert totals.flows == len(CONNECTIONS)


@pytest.mark.skipif(HOTPATH is None, reason="the compact table is part of the compiled per-packet path, "
                                            "which FLOWWARDEN_PURE_PYTHON=1 (or no C compiler) turns off")
def test_the_compact_table_keeps_only_requests_python_calls_http_without_credentials():
    runs = {mode: _run(mode) for mode in MODES}
    compact, compiled, python = (runs[m] for m in MODES)
    assert compiled[:3] == python[:3]  # classifications, events and totals
    assert (compact[1], compact[2]) == (python[1], python[2])
    # The probe and the Bearer request stayed compact (classified in C, never seen by a Python judge);
    # the Basic requests, whole or split, moved to Python and were classified exactly as there.
    assert set(python[0]) - set(compact[0]) == {41001, 41002}
    assert compact[0] == {port: python[0][port] for port in compact[0]}
    assert python[0][41001] == python[0][41002] == ("http", None)
    assert (compact[3], python[3]) == (3, len(CONNECTIONS))
