"""EventSink: one event per (kind, src, dst, dst port, protocol); counts add up, the worst wins."""
import io

import orjson

from agent.model import CRITICAL, POD, POLICY_VIOLATION, WARNING, Endpoint, Finding, Flow
from agent.sinks.events import EventSink

A = Endpoint("10.0.0.1", kind=POD, namespace="web", pod="a", uid="ua")
B = Endpoint("10.0.0.2", kind=POD, namespace="db", pod="b", uid="ub")


def _flow(sport, start, *, established=False, port=5432):
    return Flow("TCP", A.ip, sport, B.ip, port, start, start + 1, packets_src=3, bytes_src=180,
                packets_dst=2, bytes_dst=120, established=established)


def _events(sink: EventSink, out: io.BytesIO) -> list[dict]:
    sink.flush()
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_repeated_violations_of_one_group_are_one_event_with_the_sums_and_the_worst_severity():
    out = io.BytesIO()
    sink = EventSink(out)
    sink.emit(Finding(POLICY_VIOLATION, WARNING, policies=("db/p",)), _flow(40001, 10.0), A, B)
    sink.emit(Finding(POLICY_VIOLATION, CRITICAL, policies=("db/p",)), _flow(40002, 5.0, established=True), A, B)
    sink.emit(Finding(POLICY_VIOLATION, WARNING), _flow(40003, 20.0, port=6379), A, B)
    first, second = _events(sink, out)
    assert (first["dst"]["port"], first["count"], first["packets"], first["bytes"]) == (5432, 2, 10, 600)
    assert first["severity"] == CRITICAL and first["established"] is True
    assert first["src"]["port"] == 40001, "the first occurrence's details are kept"
    assert (first["first_seen"], first["last_seen"]) == ("1970-01-01T00:00:05.000000Z", "1970-01-01T00:00:11.000000Z")
    assert first["time"] == first["first_seen"]
    assert second["dst"]["port"] == 6379 and second["count"] == 1


def test_a_live_window_closes_after_its_length_and_flush_starts_a_new_one():
    out = io.BytesIO()
    sink = EventSink(out, window=60)
    sink.emit(Finding(POLICY_VIOLATION, WARNING), _flow(40001, 100.0), A, B)
    assert not sink.due(159.0) and sink.due(160.0)
    assert len(_events(sink, out)) == 1
    assert not sink.due(1000.0), "an empty window never closes"
