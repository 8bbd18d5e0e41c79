"""Pipeline: one failing step is logged once, counted, and never stops the flow path."""
import io
import logging
from pathlib import Path

from agent.capture.pcap import read_frames
from agent.config import Config
from agent.inventory.snapshot import load_cluster
from agent.pipeline import Pipeline
from agent.sinks.events import EventSink

SCENARIO = Path(__file__).resolve().parents[1] / "pcaps" / "http-allowed-and-denied"


class DiskFullSink:
    """A flow-record sink whose disk is full: every write fails."""

    def emit(self, flow, src, dst, *, verdict, findings):
        raise OSError(28, "No space left on device")

    def close(self):
        pass


def test_a_failing_sink_is_logged_once_counted_and_the_other_sinks_get_every_flow(caplog):
    events = io.BytesIO()
    pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(),
                        events=EventSink(events), flow_records=DiskFullSink())
    with caplog.at_level(logging.ERROR, logger="flowwarden.pipeline"):
        for frames in read_frames([SCENARIO / "capture.pcap"]):
            pipeline.feed(frames)
        pipeline.finish()
    assert pipeline.totals.flows == 5
    assert events.getvalue().count(b"\n") == 2  # both policy violations still written
    assert pipeline.dropped == {("sink", "flows-error"): 5}
    assert len([r for r in caplog.records if "sink flows failed" in r.getMessage()]) == 1
