"""Wiring: capture -> decode -> flows -> inventory -> judges -> sinks.

The only module that knows the stage order. `replay` and the live agent build a
`Pipeline` and feed it batches of frames; everything after the entry is one code
path (`evaluate` enters with flows known by their metadata: `judge_flow`).

A connection is judged at the earliest point of its life where each verdict is
known (STYLE §5): the flow table reports its answer (or its silence after
`flows.answer_timeout`), its classification and its end; at each, the judges
registered for that stage speak once and the sinks receive a `Judged`. The end
adds counters, it never judges again. A failing step (enrichment, a judge, a
sink) is logged once, counted, and the loop goes on; a bad packet never
reaches here (the flow table counts it).
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
from agent.outcomes import Outcomes
from agent.sinks.metrics import PipelineStats
from agent.model import (
    ACTIVE, ANSWER, CLASSIFIED, END, NODE, POLICY_CHANGE, POLICY_VERDICT, START, UNKNOWN, ClusterView, Endpoint,
    Finding, Flow, Judge, Judged, NetworkPolicy, Sink, finding_name, is_violation, side_of, verdict_of,
)

log = logging.getLogger("flowwarden.pipeline")


GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
FLUSH_EVERY = 1.0  # seconds (of capture time in a replay) between sink flushes: events out within 1 s
SHEDDING_HOLD = 10.0  # seconds flowwarden_load_shedding stays 1 after a cap last bit


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


class Pipeline:
    def __init__(self, *, view: ClusterView, config: Config, sinks: Sequence[Sink] = (),
                 candidates: Sequence[NetworkPolicy] = (), judges: Sequence[Judge] | None = None,
                 node: str | None = None):
        self.view, self.config = view, config
        self.node = node  # the node this agent judges for (model.side_of); None: everything, whole
        self.transit = 0  # flows between other nodes' pods: not judged, not reported
        self.sinks = list(sinks)
        # Per stage, the sinks told of flows without findings there (by default every sink).
        self._listening = {stage: [s for s in self.sinks if stage in getattr(s, "stages", (stage,))]
                           for stage in (START, ANSWER, CLASSIFIED, ACTIVE, END)}
        self.table = FlowTable(on_end=self.end, on_answer=self.answer, on_classified=self.classified,
                               on_active=self.active, settings=config.flows)
        self.what_if = bool(candidates)
        self.outcomes: Outcomes | None = None  # the compact flow table's outcomes, when it can be used
        self._compact = True
        self.judges = build_judges(config, view, candidates=candidates) if judges is None else judges
        self.dropped: dict[tuple[str, str], int] = {}
        self.judge_errors: dict[str, int] = {}
        self.totals = Totals()
        self._failed_steps: set[tuple[str, str]] = set()
        self._next_flush = float("-inf")

    @property
    def judges(self) -> list[Judge]:
        return self._judges

    @judges.setter
    def judges(self, judges: Sequence[Judge]) -> None:
        """Set (or, on reload, replace) the judges; each speaks at its stage (CLASSIFIED when it declares none)."""
        self._judges = list(judges)
        self._by_stage = {stage: [j for j in self._judges if getattr(j, "stage", CLASSIFIED) == stage]
                          for stage in (START, ANSWER, CLASSIFIED)}
        self.table.on_start = self.start if self._by_stage[START] else None
        self.table.dns_queries = any(getattr(getattr(j, "inner", j), "needs_dns_query", False) for j in self._judges)
        self.compact(self._compact)

    def compact(self, on: bool) -> None:
        """Whether flows whose outcome is known may live in the compact table (agent/outcomes.py);
        off when any judge or sink could not take it."""
        self._compact = on
        usable = on and Outcomes.usable(self)
        if usable and self.outcomes is None:
            self.outcomes = Outcomes(self)
            self.table.compact = self.outcomes.compact
        elif self.outcomes is not None:
            self.outcomes.enabled = usable
            self.outcomes.cluster_changed()

    def cluster_changed(self) -> None:
        """An inventory change (any thread): known outcomes are forgotten before the next batch."""
        if self.outcomes is not None:
            self.outcomes.cluster_changed()

    def stats(self) -> PipelineStats:
        """What metrics read at scrape time (from the HTTP thread: copy dicts first, one C call each)."""
        t = self.table
        return PipelineStats(
            packets=lambda: t.packets, skipped=lambda: dict(t.skipped), flows_active=lambda: len(t),
            evicted=lambda: t.evicted + self._compact_counts()[1], judge_errors=lambda: dict(self.judge_errors),
            cap_hits=self._cap_hits, shedding=lambda: t.now - self._last_shed() < SHEDDING_HOLD,
            transit=lambda: self.transit, compact=lambda: self._compact_counts()[0],
            dropped=lambda: {**{("decode", r): n for r, n in dict(t.dropped).items()}, **dict(self.dropped)})

    def _cap_hits(self) -> dict[str, int]:
        """How often each cap bit: the flow table's and the sinks' (`cap_hits` where they have caps)."""
        hits = dict(self.table.cap_hits)
        if evicted := self._compact_counts()[1]:
            hits["flows"] = hits.get("flows", 0) + evicted
        for sink in self.sinks:
            for cap, n in dict(getattr(sink, "cap_hits", {})).items():
                hits[cap] = hits.get(cap, 0) + n
        return hits

    def _last_shed(self) -> float:
        return max([self.table.last_shed, self._compact_counts()[2],
                    *(getattr(s, "last_shed", float("-inf")) for s in self.sinks)])

    def _compact_counts(self) -> tuple[int, int, float]:
        """The compact table's (flows that lived there to their end, evicted, last shed)."""
        return self.table.compact.counts if self.table.compact is not None else (0, 0, float("-inf"))

    def count_drop(self, stage: str, reason: str, n: int = 1) -> None:
        self.dropped[(stage, reason)] = self.dropped.get((stage, reason), 0) + n

    # --- entries -------------------------------------------------------------------
    def feed(self, frames: list | PcapRecords) -> None:
        """Fold a batch of frames; sinks are flushed once a second of capture time, or at once when one
        holds something urgent (an event group's first line)."""
        self._with_outcomes(self.table.ingest, frames)
        if self.table.now >= self._next_flush or any(getattr(s, "urgent", False) for s in self.sinks):
            self.flush(self.table.now)

    def tick(self, now: float) -> None:
        """The live agent's clock (every second, packets or not): deadlines, sweeps, sink flushes."""
        self._with_outcomes(self.table.tick, now)
        self.flush(now)

    def _with_outcomes(self, step, arg) -> None:
        """A step of the flow table, with the compact table's identities current before it and its
        aggregates handed to the sinks after it."""
        if self.outcomes is not None:
            self.outcomes.before_batch()
        step(arg)
        if self.outcomes is not None:
            self.outcomes.drain()

    def flush(self, now: float) -> None:
        self._next_flush = now + FLUSH_EVERY
        for sink in self.sinks:
            try:
                sink.flush(now)
            except Exception:
                self.failed("sink", _name(sink))
        if self.outcomes is not None:
            self.outcomes.after_flush()

    def finish(self) -> None:
        """End every flow and close every sink (end of replay, SIGTERM)."""
        self.table.flush()
        if self.outcomes is not None:
            self.outcomes.drain()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                self.failed("sink", _name(sink))

    def judge_flow(self, flow: Flow) -> None:
        """A flow known by its metadata alone (`evaluate`): its start and answer are judged, then it ends."""
        if self._by_stage[START]:
            self.start(flow)
        self.answer(flow)
        self.end(flow, None)

    # --- the stages of a connection's life (the flow table's callbacks) -------------
    def start(self, flow: Flow) -> None:
        """The first packet: what the 5-tuple alone decides (judges with `stage = "start"`), once."""
        if flow.started:
            return
        flow.started = True
        ends = self._ends(flow)
        if ends is not None:
            judged = self._emit(START, flow, ends, findings := self._judge(START, flow, ends))
            if self.outcomes is not None and self.outcomes.enabled:
                self.outcomes.remember(judged or Judged(START, flow, ends[0], ends[1], findings))

    def answer(self, flow: Flow) -> None:
        """Answered, refused, or unanswered after answer_timeout: the NetworkPolicy verdict, once."""
        if flow.verdict is not None:
            return
        ends = self._ends(flow)
        if ends is None:
            flow.verdict = UNKNOWN
            return
        findings = self._judge(ANSWER, flow, ends)
        flow.verdict = verdict_of(findings, synced=self.view.synced)
        judged = self._emit(ANSWER, flow, ends, findings)
        if self.outcomes is not None and self.outcomes.enabled:
            self.outcomes.remember(judged or Judged(ANSWER, flow, ends[0], ends[1], findings))

    def classified(self, flow: Flow, _classification=None) -> None:
        """The first bytes are decided: the flow table has set `flow.app` and `flow.tls`."""
        if flow.classified:
            return
        flow.classified = True
        ends = self._ends(flow)
        if ends is not None:
            self._emit(CLASSIFIED, flow, ends, self._judge(CLASSIFIED, flow, ends))

    def active(self, flow: Flow) -> None:
        """A flow still open after flows.active_timeout: sinks may report its counters so far."""
        if flow.ends:
            self._emit(ACTIVE, flow, flow.ends, ())

    def end(self, flow: Flow, classification) -> None:
        """The flow ended: the stages it never reached run now; then counters, once."""
        self.answer(flow)
        self.classified(flow, classification)
        if not flow.ends:
            return
        t = self.totals
        t.flows += 1
        t.verdicts[flow.verdict] = t.verdicts.get(flow.verdict, 0) + 1
        self._emit(END, flow, flow.ends, ())

    # --- steps --------------------------------------------------------------------------
    def _ends(self, flow: Flow) -> tuple[Endpoint, Endpoint] | None:
        """Both ends attributed at the flow's start, once, and the sides this node judges; None when
        enrichment failed (counted) or the flow is another node's (counted as transit)."""
        if flow.ends is None:
            try:
                src, dst = (self.view.endpoint(flow.src_ip, flow.first_seen),
                            self.view.endpoint(flow.dst_ip, flow.first_seen))
                if dst.kind == NODE and hasattr(self.view, "host_port"):  # a hostNetwork pod's port
                    dst = self.view.host_port(flow.dst_ip, flow.dst_port, flow.protocol) or dst
                flow.ends = (src, dst)
            except Exception:
                flow.ends = ()
                self.failed("enrich", "flow")
            else:
                side = side_of(self.node, *flow.ends)
                if side is None:
                    flow.ends = ()
                    self.transit += 1
                else:
                    flow.side = side
        return flow.ends or None

    def _judge(self, stage: str, flow: Flow, ends: tuple[Endpoint, Endpoint]) -> list[Finding]:
        findings: list[Finding] = []
        for judge in self._by_stage[stage]:
            try:
                findings.extend(judge.judge(flow, *ends))
            except Exception:
                self.failed("judge", judge.name)
        if findings:
            t = self.totals
            for f in findings:
                if f.kind == POLICY_VERDICT:
                    continue
                if f.kind == POLICY_CHANGE:
                    key = f"{f.detail['before']}->{f.detail['after']}"
                    t.what_if[key] = t.what_if.get(key, 0) + 1
                else:
                    t.findings[finding_name(f)] = t.findings.get(finding_name(f), 0) + 1
            flow.findings += tuple(finding_name(f) for f in findings if is_violation(f))
        return findings

    def _emit(self, stage: str, flow: Flow, ends: tuple[Endpoint, Endpoint],
              findings: Sequence[Finding]) -> Judged | None:
        sinks = self.sinks if findings else self._listening[stage]
        if not sinks:
            return None
        judged = Judged(stage, flow, ends[0], ends[1], findings)
        self._tell(sinks, judged)
        return judged

    def _tell(self, sinks: Sequence[Sink], judged: Judged) -> None:
        for sink in sinks:
            try:
                sink.emit(judged)
            except Exception:
                self.failed("sink", _name(sink))

    def repeat(self, judged: Judged, *, verdict: str | None = None) -> None:
        """An aggregate of the compact flow table (agent/outcomes.py): `judged.count` flows reached the
        answer with these findings (ANSWER), or ended with `verdict` (END)."""
        t = self.totals
        if judged.stage == END:
            t.flows += judged.count
            t.verdicts[verdict] = t.verdicts.get(verdict, 0) + judged.count
        for f in judged.findings:
            t.findings[finding_name(f)] = t.findings.get(finding_name(f), 0) + judged.count
        self._tell(self.sinks if judged.findings else self._listening[judged.stage], judged)

    def failed(self, stage: str, name: str) -> None:
        """Log the first failure of each step with its traceback; count every one."""
        if (stage, name) not in self._failed_steps:
            self._failed_steps.add((stage, name))
            log.exception("%s %s failed; its later failures are only counted", stage, name)
        if stage == "judge":
            self.judge_errors[name] = self.judge_errors.get(name, 0) + 1
        else:
            self.count_drop(stage, f"{name}-error")


def _name(sink: Sink) -> str:
    return getattr(sink, "name", type(sink).__name__)
