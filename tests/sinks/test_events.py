"""EventSink: a group's first line when judged, its repeats summed into one follow-up per window.

Groups are (kind, src, dst, dst port, protocol); attempts that were never established group
without their port and with external sources as one class, so scans and floods stay a few lines.
"""
import io

import orjson

from agent.model import (
    ANSWER, CRITICAL, EXTERNAL, POD, POLICY_VIOLATION, WARNING, Endpoint, Finding, Flow, Judged)
from agent.sinks.events import MAX_SOURCES, EventSink

A = Endpoint("10.0.0.1", kind=POD, namespace="web", pod="a", uid="ua")
B = Endpoint("10.0.0.2", kind=POD, namespace="db", pod="b", uid="ub")
DENIED = Finding(POLICY_VIOLATION, CRITICAL, policies=("db/p",))
ATTEMPT = Finding(POLICY_VIOLATION, WARNING, policies=("db/p",))


def _flow(sport, start, *, established=True, port=5432, src=A):
    return Flow("TCP", src.ip, sport, B.ip, port, start, start + 1, packets_src=3, bytes_src=180,
                packets_dst=2, bytes_dst=120, established=established)


def _emit(sink: EventSink, finding: Finding, flow: Flow, src: Endpoint = A) -> None:
    sink.emit(Judged(ANSWER, flow, src, B, (finding,)))


def _lines(out: io.BytesIO) -> list[dict]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_the_first_occurrence_is_written_at_the_next_flush_not_at_the_window_end():
    out = io.BytesIO()
    sink = EventSink(out, window=60)
    _emit(sink, DENIED, _flow(40001, 10.0))
    sink.flush(11.0)
    [line] = _lines(out)
    assert (line["follow_up"], line["count"], line["src"]["port"], line["established"]) == (False, 1, 40001, True)
    assert line["time"] == line["first_seen"] == "1970-01-01T00:00:10.000000Z"


def test_repeats_within_the_window_become_one_follow_up_with_their_sums_and_worst_severity():
    out = io.BytesIO()
    sink = EventSink(out, window=60)
    _emit(sink, ATTEMPT, _flow(40001, 10.0, established=False))
    _emit(sink, DENIED, _flow(40002, 20.0))  # established: a group of its own (with its port)
    _emit(sink, DENIED, _flow(40003, 30.0))
    _emit(sink, DENIED, _flow(40004, 25.0))
    _emit(sink, DENIED, _flow(40005, 40.0, port=6379))
    sink.flush(50.0)
    assert [(e["follow_up"], e["dst"]["port"]) for e in _lines(out)] == [(False, 5432), (False, 5432), (False, 6379)]
    sink.flush(81.0)  # the 5432 group's window (from t=21) ended with two repeats; the attempt had none
    follow_up = _lines(out)[-1]
    assert (follow_up["follow_up"], follow_up["count"], follow_up["packets"], follow_up["bytes"]) == (True, 2, 10, 600)
    assert (follow_up["first_seen"], follow_up["last_seen"]) == ("1970-01-01T00:00:25.000000Z",
                                                                 "1970-01-01T00:00:31.000000Z")
    assert follow_up["severity"] == CRITICAL and follow_up["src"]["port"] == 40002, "the group's identity is kept"
    sink.close()
    assert len(_lines(out)) == 4, "no follow-up for groups without repeats"


def test_a_group_that_keeps_repeating_gets_one_follow_up_per_window_and_a_quiet_one_is_forgotten():
    out = io.BytesIO()
    sink = EventSink(out, window=10)
    for t in range(0, 30):
        _emit(sink, DENIED, _flow(40000 + t, float(t)))
        sink.flush(float(t) + 1)
    counts = [(e["follow_up"], e["count"]) for e in _lines(out)]
    assert counts[0] == (False, 1) and all(up for up, _ in counts[1:]) and sum(n for _, n in counts) == 30 - (
        sink.groups[next(iter(sink.groups))].count)
    sink.flush(1000.0)  # the last window's repeats
    sink.flush(2000.0)  # a window without repeats: the group is forgotten
    assert not sink.groups
    assert sum(e["count"] for e in _lines(out)) == 30


def test_a_port_scan_is_one_line_and_one_follow_up_naming_the_port_count_and_range():
    out = io.BytesIO()
    sink = EventSink(out)
    for port in range(1, 65536):
        _emit(sink, ATTEMPT, _flow(40000, 1.0, established=False, port=port))
    sink.close()
    first, follow_up = _lines(out)
    assert first["ports"] == {"count": 1, "min": 1, "max": 1}
    assert follow_up["ports"] == {"count": 65534, "min": 2, "max": 65535}
    assert follow_up["count"] == 65534 and follow_up["sources"] == {"count": 1, "complete": True}


def test_a_flood_from_many_external_sources_is_one_group_counting_its_sources():
    out = io.BytesIO()
    sink = EventSink(out)
    for i in range(MAX_SOURCES + 100):
        src = Endpoint(f"203.0.{i // 256}.{i % 256}", kind=EXTERNAL)
        _emit(sink, ATTEMPT, _flow(40000, 1.0, established=False, src=src), src)
    sink.close()
    first, follow_up = _lines(out)
    assert first["src"]["ip"] == "203.0.0.0"
    assert follow_up["sources"] == {"count": MAX_SOURCES, "complete": False}
    assert follow_up["count"] == MAX_SOURCES + 99


def test_past_max_groups_the_oldest_group_is_closed_early_and_counted():
    out = io.BytesIO()
    sink = EventSink(out, max_groups=2)
    for port in (1, 2, 1, 3):
        _emit(sink, DENIED, _flow(40000, 1.0, port=port))
    assert len(sink.groups) == 2 and sink.cap_hits == {"event_groups": 1}
    sink.close()
    lines = [(e["follow_up"], e["dst"]["port"], e["count"]) for e in _lines(out)]
    assert lines == [(False, 1, 1), (False, 2, 1), (True, 1, 1), (False, 3, 1)], "nothing is lost"
