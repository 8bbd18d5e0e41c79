"""Pipeline: one failing step is logged once, counted, and never stops the flow path."""
import io
import logging
import subprocess
import sys
from pathlib import Path

from agent.capture.pcap import read_frames
from agent.config import Config
from agent.inventory.snapshot import load_cluster
from agent.model import END
from agent.pipeline import Pipeline
from agent.sinks.events import EventSink

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
