"""Pipeline: a connection's life from frames to sinks; a failing step is logged once, counted, and
never stops the flow path."""
import io
import logging
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from agent.capture.pcap import read_frames
from agent.config import Config, FlowConfig
from agent.inventory.snapshot import load_cluster
from agent.model import END
from agent.pipeline import Pipeline
from agent.sinks.events import EventSink, FlowRecordSink
from agent.sinks.metrics import MetricsSink
from tests.flows.test_table import A, PA, SA, S, tcp

SCENARIO = Path(__file__).resolve().parents[1] / "pcaps" / "http-allowed-and-denied"


class DiskFullSink:
    """A flow-record sink whose disk is full: every write fails."""
    name = "flows"

    def emit(self, judged):
        if judged.stage == END:
            raise OSError(28, "No space left on device")

    def flush(self, now):
        pass

    def close(self):
        pass


def test_a_failing_sink_is_logged_once_counted_and_the_other_sinks_get_every_flow(caplog):
    events = io.BytesIO()
    pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(),
                        sinks=[EventSink(events), DiskFullSink()])
    with caplog.at_level(logging.ERROR, logger="flowwarden.pipeline"):
        for frames in read_frames([SCENARIO / "capture.pcap"]):
            pipeline.feed(frames)
        pipeline.finish()
    assert pipeline.totals.flows == 5
    assert events.getvalue().count(b"\n") == 2  # both policy violations still written
    assert pipeline.dropped == {("sink", "flows-error"): 5}
    assert len([r for r in caplog.records if "sink flows failed" in r.getMessage()]) == 1


def test_after_settle_heap_the_young_generation_is_collected_less_often_and_cycles_still_are():
    # In a child: settle_heap changes the whole process's collector.
    script = """
import gc, weakref
from agent.pipeline import GC_YOUNG_THRESHOLD, settle_heap
settle_heap()
assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_threshold()
assert gc.get_freeze_count() > 0
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
probe = weakref.ref(a)
del a, b
gc.collect()
assert probe() is None, "a cycle made after settle_heap was not collected"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr


# --- a connection's life through the pipeline -----------------------------------------------


BATCH_POD, API_POD = "10.244.1.30", "10.244.1.20"  # api-allow-frontend denies batch-job -> api:8080


def _pipeline(**flows) -> tuple[Pipeline, io.BytesIO, io.BytesIO, CollectorRegistry]:
    events, records, registry = io.BytesIO(), io.BytesIO(), CollectorRegistry()
    metrics = MetricsSink(registry)
    pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(flows=FlowConfig(**flows)),
                        sinks=[EventSink(events), metrics, FlowRecordSink(records)])
    metrics.watch(pipeline.stats())
    return pipeline, events, records, registry


def _violations(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("flowwarden_violations_total", {
        "kind": "policy-violation", "rule": "", "severity": "critical", "src_namespace": "other", "dst_namespace": "api",
        "side": "both"})


def test_a_denied_connection_is_reported_at_its_syn_ack_while_it_stays_open():
    pipeline, events, _records, registry = _pipeline()
    pipeline.feed([(100.0, 1, tcp(BATCH_POD, 40000, API_POD, 8080, S, seq=1))])
    assert events.getvalue() == b"" and _violations(registry) is None  # not answered yet
    pipeline.feed([(100.001, 1, tcp(API_POD, 8080, BATCH_POD, 40000, SA, seq=9))])
    [line] = events.getvalue().splitlines()  # flushed with the batch that made the verdict
    assert b'"enforcement_gap":true' in line and _violations(registry) == 1
    assert registry.get_sample_value("flowwarden_enforcement_gaps_total",
                                     {"src_namespace": "other", "dst_namespace": "api", "side": "both"}) == 1
    for i in range(100):  # busy for 100 s more: no second line, no second count
        pipeline.feed([(101.0 + i, 1, tcp(BATCH_POD, 40000, API_POD, 8080, PA, seq=2 + i, payload=b"x"))])
    pipeline.finish()
    assert len(events.getvalue().splitlines()) == 1 and _violations(registry) == 1


def test_a_long_connection_gets_a_flow_record_every_active_timeout_and_a_final_one():
    pipeline, _events, records, _registry = _pipeline(active_timeout=60.0)
    pipeline.feed([(0.0, 1, tcp(BATCH_POD, 40001, API_POD, 8080, S, seq=1)),
                   (0.001, 1, tcp(API_POD, 8080, BATCH_POD, 40001, SA, seq=9))])
    for t in range(1, 151):
        pipeline.feed([(float(t), 1, tcp(BATCH_POD, 40001, API_POD, 8080, A, seq=2))])
    pipeline.finish()
    lines = [orjson.loads(line) for line in records.getvalue().splitlines()]
    # Reported at the first sweep past each 60 s (sweeps run every few seconds of capture time).
    assert [r["final"] for r in lines] == [False, False, True]
    first, second, final = (r["packets_src"] for r in lines)
    assert 61 <= first <= 66 and first + 60 <= second <= first + 66 and final == 151
    assert {r["verdict"] for r in lines} == {"deny"} and {r["community_id"] for r in lines} == {
        lines[0]["community_id"]}
