"""Flow.dns_query: the flow table keeps the first query's name of UDP/53 flows, when asked.

DNS queries and answers built with scapy are fed through the FlowTable on both folds
(agent/_hotpath.c and the Python loop) with `dns_queries` on and off; what the ANSWER
stage's callback reads is recorded, since that is when `dns-exfil-shape` judges. The
recorded dig queries of pcaps/dns/ go through both folds too, and the pipeline is shown
to switch the setting on exactly when an enabled judge declares `needs_dns_query`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from agent.capture.pcap import read_frames
from agent.config import Config, FlowConfig
from agent.decode.hotpath import HOTPATH
from agent.flows.table import FlowTable
from agent.inventory.snapshot import load_cluster
from agent.pipeline import Pipeline
from agent.run import TimedJudge
from agent.sinks.events import EventSink

ROOT = Path(__file__).resolve().parents[2]
NOT_BUILT = "agent/_hotpath.c is NOT BUILT (or FLOWWARDEN_PURE_PYTHON is set): only the Python loop is tested"
CLIENT, SERVER = "10.244.1.50", "10.244.1.53"  # pcaps/dns: dns-client/resolver-test and coredns
FUZZ = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)
EXFIL = "mzxw6ytboi2dqnzrgq3tmmrzgiytmobsha2teojugi3dkmjqgezdgnbv.exfil.example.com"


@pytest.fixture(params=[pytest.param(True, id="compiled", marks=pytest.mark.skipif(HOTPATH is None, reason=NOT_BUILT)),
                        pytest.param(False, id="python")])
def compiled(request) -> bool:
    return request.param


def query(t: float, name: str, *, sport: int = 40053, dport: int = 53, v6: bool = False) -> tuple:
    ip = IPv6(src="fd00::50", dst="fd00::53") if v6 else IP(src=CLIENT, dst=SERVER)
    return (t, 1, bytes(Ether() / ip / UDP(sport=sport, dport=dport) / DNS(id=7, rd=1, qd=DNSQR(qname=name))))


def answer(t: float, name: str, *, sport: int = 40053, dport: int = 53, v6: bool = False) -> tuple:
    ip = IPv6(src="fd00::53", dst="fd00::50") if v6 else IP(src=SERVER, dst=CLIENT)
    return (t, 1, bytes(Ether() / ip / UDP(sport=dport, dport=sport) /
                        DNS(id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.96.0.1"))))


class Table:
    """A FlowTable on one fold, and what each flow's name was when its answer was told."""

    def __init__(self, compiled: bool, *, dns_queries: bool = True):
        self.answered: list[str | None] = []
        self.ended: list = []
        self.table = FlowTable(on_end=lambda flow, result: self.ended.append(flow),
                               on_answer=lambda flow: self.answered.append(flow.dns_query),
                               settings=FlowConfig(answer_timeout=2.0), compiled=compiled)
        assert self.table.compiled is compiled
        self.table.dns_queries = dns_queries

    def feed(self, *frames) -> "Table":
        for frame in frames:
            self.table.ingest([frame])
        return self

    def flows(self) -> list:
        """Every flow, ended now."""
        self.table.flush()
        return self.ended

    def names(self) -> list[str | None]:
        return [f.dns_query for f in self.flows()]


def test_the_first_query_names_its_flow_before_the_answer_is_told(compiled):
    t = Table(compiled).feed(query(10.0, EXFIL), answer(10.01, EXFIL))
    assert t.answered == [EXFIL]
    assert t.names() == [EXFIL]


def test_an_unanswered_query_has_its_name_when_the_answer_timeout_tells_it(compiled):
    t = Table(compiled).feed(query(10.0, "nosuch.default.svc.cluster.local"))
    t.table.tick(12.5)
    assert t.answered == ["nosuch.default.svc.cluster.local"]


def test_the_first_datagram_only_names_the_flow(compiled):
    t = Table(compiled).feed(query(10.0, "first.example.com"), query(10.001, "second.example.com"),
                             answer(10.01, "first.example.com"))
    assert t.names() == ["first.example.com"]


def test_ipv6_queries_are_named_too(compiled):
    t = Table(compiled).feed(query(10.0, EXFIL, v6=True), answer(10.01, EXFIL, v6=True))
    assert t.names() == [EXFIL]


def test_without_the_setting_no_name_is_kept(compiled):
    t = Table(compiled, dns_queries=False).feed(query(10.0, EXFIL), answer(10.01, EXFIL))
    assert t.answered == [None] and t.names() == [None]


def test_only_flows_to_port_53_are_read(compiled):
    t = Table(compiled).feed(query(10.0, EXFIL, dport=5353), answer(10.01, EXFIL, dport=5353))
    assert t.names() == [None]


def test_a_flow_first_seen_at_its_answer_is_not_named_from_it(compiled):
    # The answer's sender is taken for the initiator: the flow goes to the client's port, not 53.
    t = Table(compiled).feed(answer(10.0, EXFIL))
    assert t.names() == [None]


def test_a_first_datagram_that_is_no_query_leaves_no_name(compiled):
    garbage = (10.0, 1, bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=40053, dport=53) / (b"\xc0" * 20)))
    t = Table(compiled).feed(garbage, query(10.001, EXFIL))
    assert t.names() == [None]


def test_the_recorded_dig_queries_give_the_same_names_on_both_folds():
    names = {}
    for compiled in ([True, False] if HOTPATH is not None else [False]):
        t = Table(compiled)
        for batch in read_frames([ROOT / "pcaps" / "dns" / "capture.pcap"]):
            t.table.ingest(batch if compiled else list(batch))  # compiled: pcap records, as replay gives them
        names[compiled] = sorted((f.protocol, f.dst_port, f.dns_query) for f in t.flows())
    assert names[False] == [("TCP", 53, None), ("UDP", 53, "api.api.svc.cluster.local"),
                            ("UDP", 53, "api.api.svc.cluster.local"), ("UDP", 53, "nosuch.default.svc.cluster.local")]
    assert names.get(True, names[False]) == names[False]


@pytest.mark.skipif(HOTPATH is None, reason=NOT_BUILT)
@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([53, 5353]), st.integers(0, 3), st.binary(max_size=40)),
                max_size=12))
def test_both_folds_name_the_same_flows_from_any_datagrams(datagrams):
    # (from the client?, server port, client port index, payload: a real query's bytes when empty)
    frames = []
    for i, (forward, port, client, payload) in enumerate(datagrams):
        payload = payload or bytes(DNS(id=i, rd=1, qd=DNSQR(qname=f"n{i}.example.com")))
        ends = (IP(src=CLIENT, dst=SERVER) / UDP(sport=40000 + client, dport=port) if forward else
                IP(src=SERVER, dst=CLIENT) / UDP(sport=port, dport=40000 + client))
        frames.append((10.0 + i / 1000, 1, bytes(Ether() / ends / payload)))
    names = []
    for compiled in (True, False):
        t = Table(compiled).feed(*frames)
        names.append(sorted((f.src_port, f.dst_port, f.dns_query) for f in t.flows()))
    assert names[0] == names[1]


# --- the pipeline switches it on for the judges that read names --------------------------

def _pipeline(rules: dict) -> tuple[Pipeline, io.BytesIO]:
    events = io.BytesIO()
    return Pipeline(view=load_cluster(ROOT / "pcaps" / "dns" / "cluster.json"), config=Config(rules=rules),
                    sinks=[EventSink(events)]), events


def test_the_pipeline_keeps_names_only_while_an_enabled_judge_needs_them():
    pipeline, events = _pipeline({"dns-exfil-shape": {"enabled": True}})
    assert pipeline.table.dns_queries
    pipeline.judges = [TimedJudge(j, lambda seconds: None) for j in pipeline.judges]  # as `run` wraps them
    assert pipeline.table.dns_queries
    pipeline.feed([query(10.0, EXFIL), answer(10.01, EXFIL)])
    pipeline.finish()
    found = [orjson.loads(line) for line in events.getvalue().splitlines()]
    assert [e["dns"]["domain"] for e in found if e.get("rule") == "dns-exfil-shape"] == ["example.com"]
    assert EXFIL not in events.getvalue().decode()  # the name is never written out
    assert not _pipeline({})[0].table.dns_queries  # off by default
