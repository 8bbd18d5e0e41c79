"""A flow's life as the FlowTable tells it: start, answer, classified, active, end.

Trace-like tests: frames (built with tests/flows/test_table.py's builders) are fed
with explicit capture times, every callback the table makes is recorded as one
tuple in one list, and each test reads what a feed or a tick added to it:

    ("start", port)  ("answer", port, established)  ("classified", port, app)
    ("active", port)  ("end", port)

where `port` is the initiator's port (flow.src_port). Every test runs on both
folds: agent/_hotpath.c (`compiled`) and the Python loop (`python`).
"""
from __future__ import annotations

import pytest

from agent.config import FlowConfig
from agent.decode.hotpath import HOTPATH
from agent.flows.table import FlowTable
from tests.decode.test_tls import HELLO, SERVER_HELLO
from tests.flows.test_table import A, C, FA, PA, RA, SA, SRV, R, S, handshake, sctp, tcp, udp

NOT_BUILT = ("agent/_hotpath.c is NOT BUILT (or FLOWWARDEN_PURE_PYTHON is set): the compiled fold's "
             "lifecycle is NOT TESTED here, only the Python loop's")


@pytest.fixture(params=[pytest.param(True, id="compiled", marks=pytest.mark.skipif(HOTPATH is None, reason=NOT_BUILT)),
                        pytest.param(False, id="python")])
def compiled(request) -> bool:
    return request.param


GET = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
# The first 60 bytes of a TLS record that claims 16 KiB (the largest allowed) holding a ClientHello:
# unfinished first bytes that keep a connection waiting to be classified.
LONG_RECORD_START = b"\x16\x03\x01\x40\x00" + b"\x01\x00\x3f\xfc" + b"\x03\x03" + bytes(49)


class Trace:
    """A FlowTable on `compiled` or Python fold, and every callback it made, in order."""

    def __init__(self, compiled: bool, **settings):
        self.calls: list[tuple] = []
        self.flows: dict[int, object] = {}  # port -> the latest flow started with it
        self.classified: dict[int, object] = {}  # port -> what on_classified received
        self.ended: dict[int, object] = {}  # port -> what on_end received
        self.table = FlowTable(on_start=self._start, on_answer=self._answer, on_classified=self._classified,
                               on_active=self._active, on_end=self._end, settings=FlowConfig(**settings),
                               compiled=compiled)
        assert self.table.compiled is compiled

    def _start(self, flow) -> None:
        self.flows[flow.src_port] = flow
        self.calls.append(("start", flow.src_port))

    def _answer(self, flow) -> None:
        self.calls.append(("answer", flow.src_port, flow.established))

    def _classified(self, flow, classification) -> None:
        self.classified[flow.src_port] = classification
        self.calls.append(("classified", flow.src_port, classification.app))

    def _active(self, flow) -> None:
        self.calls.append(("active", flow.src_port))

    def _end(self, flow, classification) -> None:
        self.ended[flow.src_port] = classification
        self.calls.append(("end", flow.src_port))

    def _since(self, action) -> list[tuple]:
        before = len(self.calls)
        action()
        return self.calls[before:]

    def feed(self, *frames) -> list[tuple]:
        """Each argument one batch: a (ts, linktype, frame) or a list of them. -> the calls they made."""
        def ingest():
            for f in frames:
                self.table.ingest(f if isinstance(f, list) else [f])
        return self._since(ingest)

    def tick(self, now: float) -> list[tuple]:
        return self._since(lambda: self.table.tick(now))

    def sweep(self, now: float) -> list[tuple]:
        return self._since(lambda: self.table.sweep(now))

    def flush(self) -> list[tuple]:
        return self._since(self.table.flush)

    def count(self, stage: str, port: int) -> int:
        return sum(1 for c in self.calls if c[:2] == (stage, port))


def data(t: float, sport: int, payload: bytes, *, dport: int = 8080, seq: int = 1001) -> tuple:
    """A client segment after handshake(t0, sport, dport) (client ISN 1000)."""
    return (t, 1, tcp(C, sport, SRV, dport, PA, seq=seq, payload=payload))


def reply(t: float, sport: int, payload: bytes, *, dport: int = 8080, seq: int = 5001) -> tuple:
    """A server segment after handshake(t0, sport, dport) (server ISN 5000)."""
    return (t, 1, tcp(SRV, dport, C, sport, PA, seq=seq, payload=payload))


# --- 1. on_answer at the responder's first packet ------------------------------------

def test_the_syn_ack_is_the_answer_and_the_flow_is_established_when_it_is_called(compiled):
    tr = Trace(compiled)
    syn, syn_ack, ack = handshake(10.0, sport=40001)
    assert tr.feed(syn) == [("start", 40001)]
    assert tr.feed(syn_ack) == [("answer", 40001, True)]
    assert tr.feed(ack) == []


def test_a_reset_answering_the_syn_is_a_refusal_not_an_establishment(compiled):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, tcp(C, 40001, SRV, 9090, S, seq=1000))) == [("start", 40001)]
    assert tr.feed((10.001, 1, tcp(SRV, 9090, C, 40001, RA))) == [("answer", 40001, False)]


def test_a_udp_reply_is_the_answer(compiled):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, udp(C, 40053, SRV, 53, b"query"))) == [("start", 40053)]
    assert tr.feed((10.0, 1, udp(C, 40053, SRV, 53, b"again"))) == []  # the initiator again: no answer
    assert tr.feed((10.01, 1, udp(SRV, 53, C, 40053, b"reply"))) == [("answer", 40053, True)]


@pytest.mark.parametrize(("chunk", "established"), [(2, True), (6, False)], ids=["init-ack", "abort"])
def test_an_sctp_answer_establishes_unless_it_is_an_abort(compiled, chunk, established):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, sctp(C, 40001, SRV, 9999, 1))) == [("start", 40001)]  # INIT
    assert tr.feed((10.001, 1, sctp(SRV, 9999, C, 40001, chunk))) == [("answer", 40001, established)]


def test_a_syn_ack_seen_first_starts_and_answers_its_flow_at_once(compiled):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, tcp(SRV, 8080, C, 40001, SA, seq=5000))) == [("start", 40001), ("answer", 40001, True)]


def test_an_answered_flow_is_answered_once_however_many_replies_and_deadlines_follow(compiled):
    tr = Trace(compiled)
    frames = handshake(10.0, sport=40001) + [reply(10.01 + i / 100, 40001, b"r" * 10, seq=5001 + 10 * i)
                                             for i in range(20)]
    tr.feed(frames[:2], frames[2:10], *frames[10:])
    tr.feed((10.0, 1, udp(C, 40053, SRV, 53, b"q")), [(10.1 + i, 1, udp(SRV, 53, C, 40053, b"a")) for i in range(5)])
    tr.tick(60.0)
    tr.flush()
    assert tr.count("answer", 40001) == 1 and tr.count("answer", 40053) == 1
    assert [c for c in tr.calls if c[0] == "answer"] == [("answer", 40001, True), ("answer", 40053, True)]


# --- 2. unanswered: on_answer once answer_timeout has passed ---------------------------

@pytest.mark.parametrize("first", [tcp(C, 40001, SRV, 8080, S, seq=1000), udp(C, 40001, SRV, 8125, b"m:1|c")],
                         ids=["lone-syn", "udp-without-reply"])
def test_an_unanswered_flow_is_answered_by_a_tick_once_answer_timeout_has_passed(compiled, first):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, first)) == [("start", 40001)]
    assert tr.tick(11.0) == []
    assert tr.tick(11.999) == []
    assert tr.tick(12.0) == [("answer", 40001, False)]
    assert tr.tick(13.0) == [] and tr.tick(50.0) == []
    assert tr.flush() == [("end", 40001)]


@pytest.mark.parametrize("first", [tcp(C, 40001, SRV, 8080, S, seq=1000), udp(C, 40001, SRV, 8125, b"m:1|c")],
                         ids=["lone-syn", "udp-without-reply"])
def test_an_unanswered_flow_is_answered_by_a_later_batch_past_its_deadline(compiled, first):
    tr = Trace(compiled)
    assert tr.feed((10.0, 1, first)) == [("start", 40001)]
    assert tr.feed((11.5, 1, udp(C, 40002, SRV, 53, b"q"))) == [("start", 40002)]
    # The deadline is judged at the end of the batch, by the batch's last capture time.
    assert tr.feed([(11.9, 1, udp(C, 40003, SRV, 53, b"q")), (12.0, 1, udp(C, 40004, SRV, 53, b"q"))]) == [
        ("start", 40003), ("start", 40004), ("answer", 40001, False)]
    assert tr.feed((12.5, 1, udp(SRV, 53, C, 40002, b"a"))) == [("answer", 40002, True)]
    assert tr.tick(20.0) == [("answer", 40003, False), ("answer", 40004, False)]


def test_answer_timeout_is_read_from_the_settings(compiled):
    tr = Trace(compiled, answer_timeout=0.5)
    tr.feed((10.0, 1, tcp(C, 40001, SRV, 8080, S, seq=1000)))
    assert tr.tick(10.499) == []
    assert tr.tick(10.5) == [("answer", 40001, False)]


def test_a_flow_ended_before_its_deadline_gets_its_end_and_no_answer_from_the_table(compiled):
    tr = Trace(compiled)
    tr.feed((10.0, 1, tcp(C, 40001, SRV, 8080, S, seq=1000)), (10.5, 1, udp(C, 40002, SRV, 53, b"q")))
    assert tr.flush() == [("end", 40001), ("end", 40002)]
    assert tr.tick(12.0) == [] and tr.tick(100.0) == []
    assert tr.count("answer", 40001) == tr.count("answer", 40002) == 0


@pytest.mark.parametrize("frames", [
    # One direction captured (asymmetric routing): the handshake's and the data's own deadlines both pass.
    [(10.0, 1, tcp(C, 40001, SRV, 8080, S, seq=1000)), (10.001, 1, tcp(C, 40001, SRV, 8080, A, seq=1001)),
     data(10.01, 40001, GET)],
    [data(10.0, 40001, b"x" * 20, dport=443)],  # a mid-stream segment nobody answers
    [(10.0, 1, tcp(C, 40001, SRV, 8080, S, seq=1000, payload=GET))],  # a TCP Fast Open SYN nobody answers
], ids=["one-way-handshake-and-data", "mid-stream-segment", "fast-open-syn"])
def test_an_unanswered_flow_that_sent_data_is_judged_unanswered_exactly_once(compiled, frames):
    tr = Trace(compiled)
    tr.feed(frames)
    tr.tick(13.0)
    tr.tick(20.0)
    tr.flush()
    assert [c for c in tr.calls if c[0] == "answer"] == [("answer", 40001, False)]


# --- 3. on_classified once the first bytes are decided -------------------------------

def test_an_http_request_is_classified_at_once_and_the_end_gets_the_same_classification(compiled):
    tr = Trace(compiled)
    assert tr.feed(handshake(10.0, sport=40001)) == [("start", 40001), ("answer", 40001, True)]
    assert tr.feed(data(10.01, 40001, GET)) == [("classified", 40001, "http")]
    assert tr.feed(reply(10.02, 40001, OK), data(10.03, 40001, GET, seq=1001 + len(GET))) == []
    assert tr.tick(30.0) == []
    assert tr.flush() == [("end", 40001)]
    assert tr.ended[40001] is tr.classified[40001]


def test_a_client_hello_is_classified_at_the_server_hello(compiled):
    tr = Trace(compiled)
    tr.feed(handshake(10.0, sport=40001, dport=443))
    assert tr.feed(data(10.01, 40001, HELLO, dport=443)) == []  # TLS, but the answer is still to come
    assert tr.feed(reply(10.02, 40001, SERVER_HELLO, dport=443)) == [("classified", 40001, "tls")]
    cls = tr.classified[40001]
    assert cls.tls and cls.client_hello.sni == "a.example" and cls.server_hello.version == "1.3"
    assert tr.feed(reply(10.03, 40001, b"\x17\x03\x03\x00\x10" + bytes(16), dport=443, seq=5001 + len(SERVER_HELLO)),
                   data(10.04, 40001, b"\x17\x03\x03\x00\x10" + bytes(16), dport=443, seq=1001 + len(HELLO))) == []
    assert tr.tick(30.0) == []
    assert tr.flush() == [("end", 40001)]
    assert tr.ended[40001] is cls


@pytest.mark.parametrize("by", ["tick", "batch"])
def test_an_unanswered_client_hello_is_classified_tls_answer_timeout_after_it(compiled, by):
    tr = Trace(compiled)
    tr.feed(handshake(10.0, sport=40001, dport=443))
    assert tr.feed(data(10.5, 40001, HELLO, dport=443)) == []
    assert tr.tick(12.499) == []  # the handshake's own deadline (12.0) passed: it was answered
    if by == "tick":
        assert tr.tick(12.5) == [("classified", 40001, "tls")]
    else:
        assert tr.feed((12.5, 1, udp(C, 40002, SRV, 53, b"q"))) == [("start", 40002), ("classified", 40001, "tls")]
    cls = tr.classified[40001]
    assert cls.tls and cls.client_hello.sni == "a.example" and cls.server_hello is None
    assert tr.feed(reply(12.6, 40001, SERVER_HELLO, dport=443)) == []  # too late: decided already
    tr.tick(30.0)
    tr.flush()
    assert tr.count("classified", 40001) == 1 and tr.ended[40001] is cls


def test_a_connection_is_classified_once_whatever_follows(compiled):
    tr = Trace(compiled)
    tr.feed(handshake(10.0, sport=40001))
    seq = 1001
    for i in range(5):
        tr.feed(data(10.01 + i, 40001, GET, seq=seq), reply(10.02 + i, 40001, OK, seq=5001 + i * len(OK)))
        seq += len(GET)
    tr.tick(30.0)
    tr.flush()
    assert [c for c in tr.calls if c[0] == "classified"] == [("classified", 40001, "http")]


@pytest.mark.parametrize(("payload", "answer", "app"), [(GET, OK, "http"), (HELLO, SERVER_HELLO, "tls")],
                         ids=["http", "tls"])
def test_first_bytes_carried_in_the_syn_tcp_fast_open_are_classified_from_their_first_byte(compiled, payload,
                                                                                             answer, app):
    # RFC 7413: a SYN's data starts at its sequence number + 1, as after any SYN.
    tr = Trace(compiled)
    tr.feed((10.0, 1, tcp(C, 40001, SRV, 443, S, seq=1000, payload=payload)),
            (10.001, 1, tcp(SRV, 443, C, 40001, SA, seq=5000)),
            reply(10.002, 40001, answer, dport=443))
    tr.flush()
    assert [c for c in tr.calls if c[0] == "classified"] == [("classified", 40001, app)]
    assert tr.ended[40001] is tr.classified[40001]


# --- 4. on_active every active_timeout while the flow lasts --------------------------

def test_an_open_flow_is_reported_active_every_active_timeout_at_a_sweep(compiled):
    tr = Trace(compiled, active_timeout=5.0)
    tr.feed(handshake(100.0, sport=40001))
    flow = tr.flows[40001]
    assert flow.reported == 0.0
    assert tr.sweep(104.9) == []
    assert tr.sweep(105.0) == [("active", 40001)] and flow.reported == 105.0
    assert tr.feed(data(107.0, 40001, GET)) == [("classified", 40001, "http")]
    assert tr.sweep(109.9) == [] and flow.reported == 105.0
    assert tr.sweep(110.0) == [("active", 40001)] and flow.reported == 110.0
    assert tr.sweep(114.0) == []
    assert tr.flush() == [("end", 40001)]
    assert tr.sweep(200.0) == []


def test_ticks_report_an_open_flow_active_when_a_sweep_is_due(compiled):
    tr = Trace(compiled, active_timeout=5.0)
    tr.feed(handshake(100.0, sport=40001))
    flow = tr.flows[40001]
    assert tr.tick(104.0) == []
    assert tr.tick(106.0) == [("active", 40001)] and flow.reported == 106.0
    assert tr.tick(107.0) == []
    assert tr.tick(112.0) == [("active", 40001)] and flow.reported == 112.0


def test_flows_that_ended_are_never_reported_active(compiled):
    tr = Trace(compiled, active_timeout=5.0, closed_linger=2.0, udp_timeout=3.0)
    tr.feed(handshake(100.0, sport=40001) + handshake(100.0, sport=40002) +
            [(100.0, 1, udp(C, 40003, SRV, 53, b"q")), (100.0, 1, udp(SRV, 53, C, 40003, b"a")),
             (101.0, 1, tcp(SRV, 8080, C, 40002, R, seq=5001))])
    # The reset flow's linger and the UDP flow's idle timeout are over: they end, the open one is reported.
    assert tr.sweep(105.0) == [("end", 40002), ("end", 40003), ("active", 40001)]
    assert tr.sweep(110.0) == [("active", 40001)]
    assert tr.flush() == [("end", 40001)]
    assert tr.sweep(120.0) == [] and tr.tick(200.0) == []


# --- 5. table pressure -----------------------------------------------------------------

def test_table_pressure_ends_the_oldest_flows_first_and_counts_them(compiled):
    tr = Trace(compiled, max_flows=100)
    assert tr.table.last_shed == float("-inf") and tr.table.cap_hits == {}
    for i in range(150):
        tr.feed((1000.0 + i / 100, 1, udp(C, 20000 + i, SRV, 53, b"q")))
        assert len(tr.table) <= 100
    assert len(tr.table) == 100
    # Each start past the cap ends the oldest flow still held, right after it.
    assert tr.calls == [("start", 20000 + i) for i in range(100)] + [
        call for i in range(50) for call in (("start", 20100 + i), ("end", 20000 + i))]
    assert tr.table.evicted == 50 and tr.table.cap_hits == {"flows": 50}
    assert 1000.0 <= tr.table.last_shed <= 1001.49
    # The evicted flows' answer deadlines pass without a word for them.
    assert tr.tick(1010.0) == [("answer", 20000 + i, False) for i in range(50, 150)]
    assert tr.flush() == [("end", 20000 + i) for i in range(50, 150)]


def test_a_shed_is_dated_by_the_capture_time_of_the_packet_that_caused_it(compiled):
    # One batch (a pcap record block holds thousands of frames): the flows cap bites inside it.
    tr = Trace(compiled, max_flows=100)
    frames = [(1000.0 + i / 100, 1, udp(C, 20000 + i, SRV, 53, b"q")) for i in range(150)]
    tr.feed(frames)
    assert tr.table.cap_hits == {"flows": 50}
    assert tr.table.last_shed == frames[-1][0]


# --- 6. the stream budget ------------------------------------------------------------------

def test_the_connection_that_pushes_the_stream_bytes_over_the_budget_is_classified_early(compiled):
    tr = Trace(compiled, max_stream_bytes=100)
    for port in (40001, 40002, 40003):
        tr.feed(handshake(10.0, sport=port, dport=443))
    assert tr.feed(data(10.1, 40001, LONG_RECORD_START, dport=443)) == []
    assert tr.table.stream_bytes == 60 and tr.table.cap_hits == {}
    assert tr.feed(data(10.2, 40002, LONG_RECORD_START, dport=443)) == [("classified", 40002, "tls")]
    assert tr.table.cap_hits == {"stream_bytes": 1} and tr.table.stream_bytes == 60
    assert tr.table.last_shed > float("-inf")
    assert tr.feed(data(10.3, 40003, LONG_RECORD_START, dport=443)) == [("classified", 40003, "tls")]
    assert tr.table.cap_hits == {"stream_bytes": 2} and tr.table.stream_bytes == 60
    assert not tr.classified[40002].complete  # classified with what it had
    assert tr.flush() == [("end", 40001), ("end", 40002), ("end", 40003)]
    assert tr.table.stream_bytes == 0
    assert tr.ended[40002] is tr.classified[40002] and tr.ended[40001].app == "tls"


def test_stream_bytes_return_to_zero_when_the_waiting_connections_are_decided_at_their_deadline(compiled):
    tr = Trace(compiled, max_stream_bytes=100)
    for port in (40001, 40002):
        tr.feed(handshake(10.0, sport=port, dport=443))
    tr.feed(data(10.1, 40001, LONG_RECORD_START, dport=443), data(10.1, 40002, LONG_RECORD_START[:30], dport=443))
    assert tr.table.stream_bytes == 90 and tr.table.cap_hits == {}
    assert tr.tick(12.1) == [("classified", 40001, "tls"), ("classified", 40002, "tls")]
    assert tr.table.stream_bytes == 0
    tr.flush()
    assert tr.table.stream_bytes == 0


def test_a_connection_awaiting_its_server_hello_that_pushes_over_the_budget_is_classified_early(compiled):
    tr = Trace(compiled, max_stream_bytes=150)
    tr.feed(handshake(10.0, sport=40001, dport=443))
    assert tr.feed(data(10.1, 40001, HELLO, dport=443)) == []  # 98 bytes, waiting for the ServerHello
    early = b"\x17\x03\x03\x00\x37" + bytes(55)  # 0-RTT data: more client bytes, 158 held in all
    assert tr.feed(data(10.2, 40001, early, dport=443, seq=1001 + len(HELLO))) == [("classified", 40001, "tls")]
    assert tr.table.cap_hits == {"stream_bytes": 1} and tr.table.stream_bytes == 0


# --- 7. on_start once per flow, and a 5-tuple reused -------------------------------------

def test_on_start_comes_once_per_flow_and_before_anything_else_of_it(compiled):
    tr = Trace(compiled, active_timeout=5.0)
    frames = handshake(10.0, sport=40001) + [data(10.01, 40001, GET), reply(10.02, 40001, OK),
                                             (10.03, 1, tcp(C, 40001, SRV, 8080, S, seq=1000))]  # a stray SYN
    frames += [(10.0, 1, udp(C, 40053, SRV, 53, b"q")), (10.1, 1, udp(SRV, 53, C, 40053, b"a")),
               (10.2, 1, tcp(C, 40002, SRV, 8080, S, seq=1000))]
    tr.feed(frames[:3], *frames[3:])
    tr.tick(16.0)
    tr.flush()
    for port in (40001, 40002, 40053):
        mine = [c for c in tr.calls if c[1] == port]
        assert mine[0] == ("start", port) and tr.count("start", port) == 1
        assert mine[-1] == ("end", port) and tr.count("end", port) == 1
    assert [c for c in tr.calls if c[1] == 40001] == [
        ("start", 40001), ("answer", 40001, True), ("classified", 40001, "http"), ("active", 40001), ("end", 40001)]


@pytest.mark.parametrize("close", [
    [(10.1, 1, tcp(C, 40001, SRV, 8080, FA, seq=1001)), (10.2, 1, tcp(SRV, 8080, C, 40001, FA, seq=5001)),
     (10.3, 1, tcp(C, 40001, SRV, 8080, A, seq=1002))],
    [(10.1, 1, tcp(SRV, 8080, C, 40001, R, seq=5001))],
], ids=["fin-fin", "rst"])
def test_a_five_tuple_reused_by_a_new_syn_after_close_ends_the_old_flow_then_starts_the_new(compiled, close):
    tr = Trace(compiled)
    tr.feed(handshake(10.0, sport=40001), close)
    old = tr.flows[40001]
    assert old.closed
    assert tr.feed((11.0, 1, tcp(C, 40001, SRV, 8080, S, seq=9000))) == [("end", 40001), ("start", 40001)]
    new = tr.flows[40001]
    assert new is not old and new.first_seen == 11.0 and old.first_seen == 10.0
    assert tr.feed((11.001, 1, tcp(SRV, 8080, C, 40001, SA, seq=7000))) == [("answer", 40001, True)]
    assert tr.tick(20.0) == []
    assert tr.flush() == [("end", 40001)]


def test_an_unanswered_flow_reused_before_its_deadline_leaves_only_the_new_flows_deadline(compiled):
    tr = Trace(compiled)
    tr.feed((10.0, 1, tcp(C, 40001, SRV, 8080, S, seq=1000)), (10.5, 1, tcp(C, 40001, SRV, 8080, R, seq=1001)))
    assert tr.feed((11.0, 1, tcp(C, 40001, SRV, 8080, S, seq=9000))) == [("end", 40001), ("start", 40001)]
    assert tr.tick(12.0) == []  # the old flow's deadline: it ended
    assert tr.tick(13.0) == [("answer", 40001, False)]  # the new flow's
    assert tr.flush() == [("end", 40001)]


def test_a_retransmitted_syn_on_an_open_flow_starts_nothing(compiled):
    tr = Trace(compiled)
    tr.feed(handshake(10.0, sport=40001))
    assert tr.feed((10.5, 1, tcp(C, 40001, SRV, 8080, S, seq=1000))) == []
    assert tr.flush() == [("end", 40001)]


def test_a_stray_ack_of_an_ended_connection_and_its_rst_answer_start_no_flow(compiled):
    tr = Trace(compiled, closed_linger=1.0)
    tr.feed(*handshake(10.0, sport=40100), (10.01, 1, tcp(C, 40100, SRV, 8080, FA, seq=1001)),
            (10.02, 1, tcp(SRV, 8080, C, 40100, FA, seq=5001)))
    tr.tick(20.0)  # closed and lingered: the connection ended
    assert [c for c in tr.calls if c[0] in ("start", "end")] == [("start", 40100), ("end", 40100)]
    calls = tr._since(lambda: tr.feed((30.0, 1, tcp(C, 40100, SRV, 8080, A, seq=1002)),
                                      (30.001, 1, tcp(SRV, 8080, C, 40100, R, seq=5002))))
    tr.flush()
    assert calls == [] and len(tr.table) == 0
    assert tr.table.skipped == {"tcp-stray": 2}
    # Data, or a SYN, still starts a flow of a connection whose start was not seen.
    assert tr._since(lambda: tr.feed((31.0, 1, tcp(C, 40101, SRV, 8080, PA, seq=7, payload=GET))))[0] == (
        "start", 40101)
