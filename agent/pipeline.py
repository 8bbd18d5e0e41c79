"""Wiring: capture -> decode -> flows -> inventory -> judges -> sinks.

The only module that knows the stage order. `replay` and the live agent build a
`Pipeline` and feed it batches of frames; everything after the entry is one
code path. A failing step (enrichment, a judge, a sink) is logged once, counted,
and the loop goes on; a bad packet never reaches here (the flow table counts it).
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import Sequence

from agent.config import Config
from agent.decode.hotpath import PcapRecords
from agent.flows.table import FlowTable
from agent.judges import build_judges
from agent.judges.netpol import NetpolEngine, NetpolJudge, policy_change
from agent.judges.tls import tls_record
from agent.model import (
    ALLOW, DENY, JUDGED_PROTOCOLS, POLICY_VIOLATION, UNKNOWN, ClusterView, Endpoint, Finding, Flow,
    NetworkPolicy,
)
from agent.sinks.events import EventSink, FlowRecordSink
from agent.sinks.metrics import MetricsSink, PipelineStats

log = logging.getLogger("flowwarden.pipeline")


GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


def settle_heap() -> None:
    """Call once the cluster state is loaded: keep the cyclic GC off it, and run it less often.

    Per packet and per flow the pipeline allocates acyclic objects (tuples, flows,
    stream buffers) that reference counting frees; the cycle collector only walks
    them, and each full collection walked the whole loaded inventory again. Freezing
    what is loaded and collecting the young generation every 20,000 allocations
    instead of 700 made a replay ~25 % faster (bench/run.py); cycles, if any, are
    still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@dataclass
class Totals:
    """What the summary line reports."""
    flows: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    what_if: dict[str, int] = field(default_factory=dict)  # "allow->deny" -> flows


class WhatIf:
    """Judges each flow again with candidate policies on top; reports verdict changes."""

    def __init__(self, view: ClusterView, candidates: Sequence[NetworkPolicy], before: NetpolEngine):
        self.view, self.before = view, before
        self.after = NetpolEngine(view, extra_policies=candidates)

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> Finding | None:
        if not self.view.synced or flow.protocol not in JUDGED_PROTOCOLS:
            return None
        return policy_change(self.before.decide_flow(src, dst, flow.dst_port, flow.protocol),
                             self.after.decide_flow(src, dst, flow.dst_port, flow.protocol))


class Pipeline:
    def __init__(self, *, view: ClusterView, config: Config, events: EventSink | None = None,
                 flow_records: FlowRecordSink | None = None, metrics: MetricsSink | None = None,
                 candidates: Sequence[NetworkPolicy] = ()):
        self.view, self.config = view, config
        self.events, self.flow_records, self.metrics = events, flow_records, metrics
        self.judges = build_judges(config, view)
        self.what_if = None
        if candidates:
            netpol = next((j for j in self.judges if isinstance(j, NetpolJudge)), None)
            self.what_if = WhatIf(view, candidates, netpol.engine if netpol else NetpolEngine(view))
        self.table = FlowTable(on_end=self.judge_flow, settings=config.flows)
        self.dropped: dict[tuple[str, str], int] = {}
        self.totals = Totals()
        self._failed_steps: set[tuple[str, str]] = set()

    def stats(self) -> PipelineStats:
        t = self.table
        # Read from the HTTP thread while the pipeline thread adds keys: copy first (one C call).
        return PipelineStats(
            packets=lambda: t.packets, skipped=lambda: dict(t.skipped), flows_active=lambda: len(t),
            evicted=lambda: t.evicted,
            dropped=lambda: {**{("decode", r): n for r, n in dict(t.dropped).items()}, **dict(self.dropped)})

    def feed(self, frames: list | PcapRecords) -> None:
        self.table.ingest(frames)

    def count_drop(self, stage: str, reason: str, n: int = 1) -> None:
        self.dropped[(stage, reason)] = self.dropped.get((stage, reason), 0) + n

    def judge_flow(self, flow: Flow, classification) -> None:
        """Called once per flow when it ends: enrich, judge, hand to the sinks.

        Nothing here may stop the agent: a failing step is logged once per step, counted
        in `flowwarden_packets_dropped_total{stage}` (judges: `flowwarden_judge_errors_total`),
        and the flow goes on to the next step without it.
        """
        try:
            if classification is not None and (classification.tls or not flow.mid_stream):
                # A flow whose start was missed may still show a handshake; never a plaintext verdict.
                flow.app = classification.app
                flow.tls = tls_record(classification)
                flow.client_hello = classification.client_hello
            elif flow.protocol == "TCP":
                flow.app = UNKNOWN
            src = self.view.endpoint(flow.src_ip, flow.first_seen)
            dst = self.view.endpoint(flow.dst_ip, flow.first_seen)
        except Exception:
            self._failed("enrich", "flow")
            return
        findings: list[Finding] = []
        for judge in self.judges:
            try:
                findings.extend(judge.judge(flow, src, dst))
            except Exception:
                self._failed("judge", judge.name)
        verdict = (DENY if findings and any(f.kind == POLICY_VIOLATION for f in findings)
                   else ALLOW if self.view.synced else UNKNOWN)
        t = self.totals
        t.flows += 1
        t.verdicts[verdict] = t.verdicts.get(verdict, 0) + 1
        for f in findings:
            t.findings[f.kind] = t.findings.get(f.kind, 0) + 1
        events = findings
        if self.what_if is not None:
            change = self._what_if(flow, src, dst)
            if change is not None:
                events = [*findings, change]
        if self.events is not None:
            try:
                for f in events:
                    self.events.emit(f, flow, src, dst)
            except Exception:
                self._failed("sink", "events")
        for name, sink in (("metrics", self.metrics), ("flows", self.flow_records)):
            if sink is not None:
                try:
                    sink.emit(flow, src, dst, verdict=verdict, findings=findings)
                except Exception:
                    self._failed("sink", name)

    def _what_if(self, flow: Flow, src: Endpoint, dst: Endpoint) -> Finding | None:
        """The `policy-change` finding the candidate policies would make, counted for the summary."""
        try:
            change = self.what_if.judge(flow, src, dst)
        except Exception:
            self._failed("judge", "what-if")
            return None
        if change is not None:
            key = f"{change.detail['before']}->{change.detail['after']}"
            self.totals.what_if[key] = self.totals.what_if.get(key, 0) + 1
        return change

    def _failed(self, stage: str, name: str) -> None:
        """Log the first failure of each step with its traceback; count every one."""
        if (stage, name) not in self._failed_steps:
            self._failed_steps.add((stage, name))
            log.exception("%s %s failed; its later failures are only counted", stage, name)
        if stage == "judge" and self.metrics is not None:
            self.metrics.judge_errors.labels(name).inc()
        else:
            self.count_drop(stage, f"{name}-error")

    def finish(self) -> None:
        """End every flow and flush every sink (end of replay, SIGTERM)."""
        self.table.flush()
        for sink in (self.events, self.flow_records):
            if sink is not None:
                sink.close()
