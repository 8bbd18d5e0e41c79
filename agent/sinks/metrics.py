"""Verdicts and pipeline counters -> Prometheus metrics (judges -> **sinks**).

Everything is registered in an injected `CollectorRegistry`, never the global
one. Per-flow counters are incremented here; per-packet counts stay plain ints
in the flow table and are read by a custom collector at scrape time, so the
packet path never takes a metric lock. Labels are bounded: namespaces, kinds,
reasons; never IPs, ports or pod names.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.model import ANSWER, CLASSIFIED, POLICY_CHANGE, RULE, Endpoint, Judged, is_violation

NO_NAMESPACE = ""  # label value for ends that are not in a namespace (external, node)

disable_created_metrics()  # `_created` series double the output and no alert uses them


class PipelineStats:
    """What the pipeline counts per packet; read at scrape time."""

    def __init__(self, *, packets: Callable[[], int], dropped: Callable[[], Mapping[tuple[str, str], int]],
                 skipped: Callable[[], Mapping[str, int]], flows_active: Callable[[], int],
                 evicted: Callable[[], int], judge_errors: Callable[[], Mapping[str, int]] = dict,
                 cap_hits: Callable[[], Mapping[str, int]] = dict, shedding: Callable[[], bool] = bool,
                 transit: Callable[[], int] = int, compact: Callable[[], int] = int):
        self.packets, self.dropped, self.skipped = packets, dropped, skipped
        self.flows_active, self.evicted = flows_active, evicted
        self.judge_errors, self.cap_hits, self.shedding = judge_errors, cap_hits, shedding
        self.transit, self.compact = transit, compact


class _StatsCollector(Collector):
    def __init__(self, stats: PipelineStats):
        self.stats = stats

    def collect(self) -> Iterable:
        s = self.stats
        yield CounterMetricFamily("flowwarden_packets", "Packets read from capture.", value=s.packets())
        dropped = CounterMetricFamily("flowwarden_packets_dropped", "Packets dropped, by stage and reason.",
                                      labels=("stage", "reason"))
        for (stage, reason), n in sorted(s.dropped().items()):
            dropped.add_metric((stage, reason), n)
        yield dropped
        skipped = CounterMetricFamily("flowwarden_packets_skipped",
                                      "Well-formed packets not judged (non-IP, ICMP, later fragments).",
                                      labels=("reason",))
        for reason, n in sorted(s.skipped().items()):
            skipped.add_metric((reason,), n)
        yield skipped
        yield GaugeMetricFamily("flowwarden_flows_active", "Flows in the flow table.", value=s.flows_active())
        yield CounterMetricFamily("flowwarden_flow_evictions", "Flows ended early because the table was full.",
                                  value=s.evicted())
        errors = CounterMetricFamily("flowwarden_judge_errors", "Judge exceptions (logged once each kind).",
                                     labels=("judge",))
        for judge, n in sorted(s.judge_errors().items()):
            errors.add_metric((judge,), n)
        yield errors
        caps = CounterMetricFamily("flowwarden_cap_hits", "Times a memory cap bit and load was shed, by cap "
                                   "(flows: ended early; stream_bytes: classified early; event_groups: "
                                   "follow-up written early).", labels=("cap",))
        for cap, n in sorted(s.cap_hits().items()):
            caps.add_metric((cap,), n)
        yield caps
        yield GaugeMetricFamily("flowwarden_load_shedding", "1 while a memory cap bites (within the last 10 s).",
                                value=int(s.shedding()))
        yield CounterMetricFamily("flowwarden_transit_flows", "Flows between pods of other nodes (or a pod of another "
                                  "node and an address that is no pod): not judged here, their nodes judge them.",
                                  value=s.transit())
        yield CounterMetricFamily("flowwarden_compact_flows", "Flows that lived in the compact table to their end, "
                                  "never a Python object (their outcomes were known).",
                                  value=s.compact())


OTHER_NAMESPACES = "_other"  # label value for namespaces past `max_namespaces`


class MetricsSink:
    def __init__(self, registry: CollectorRegistry | None = None, stats: PipelineStats | None = None, *,
                 max_namespaces: int = 1000, staged: bool = False):
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.max_namespaces = max_namespaces
        self._namespaces: set[str] = set()
        if stats is not None:
            self.watch(stats)
        self.flows = Counter("flowwarden_flows_total", "Flows judged, by verdict.", ("verdict",), registry=registry)
        self.violations = Counter("flowwarden_violations_total", "Flows with a finding, by kind, built-in rule "
                                  "(kind rule; else empty) and the policy side judged on this node.",
                                  ("kind", "rule", "severity", "src_namespace", "dst_namespace", "side"),
                                  registry=registry)
        self.gaps = Counter("flowwarden_enforcement_gaps_total",
                            "Denied flows that were established anyway: the CNI let them through.",
                            ("src_namespace", "dst_namespace", "side"), registry=registry)
        self.tls = Counter("flowwarden_tls_connections_total", "TLS connections, by version.",
                           ("version", "dst_namespace"), registry=registry)
        self.count_staged = staged  # the live agent's staged candidates (replay's what-if is in its summary)
        self.staged: Counter | None = None  # registered at the first policy-change
        self._children: dict[tuple, Counter] = {}

    name = "metrics"
    stages = frozenset((ANSWER, CLASSIFIED))
    aggregates = True  # takes `Judged.count`

    def watch(self, stats: PipelineStats) -> None:
        """Export what the pipeline counts per packet, read at each scrape."""
        self.registry.register(_StatsCollector(stats))

    def emit(self, judged: Judged) -> None:
        """Counters move when the verdict is made: flows at their answer, TLS at classification."""
        flow, stage, n = judged.flow, judged.stage, judged.count
        if stage == ANSWER:
            self._inc(n, self.flows, flow.verdict)
        for f in judged.findings:
            if is_violation(f):
                src_ns, dst_ns = self._ns(judged.src), self._ns(judged.dst)
                rule = f.detail["rule"] if f.kind == RULE else ""
                self._inc(n, self.violations, f.kind, rule, f.severity, src_ns, dst_ns, flow.side)
                if f.detail and f.detail.get("enforcement_gap"):
                    self._inc(n, self.gaps, src_ns, dst_ns, flow.side)
            elif f.kind == POLICY_CHANGE and f.detail and self.count_staged:
                if self.staged is None:
                    self.staged = Counter("flowwarden_staged_verdict_changes_total",
                                          "Flows whose verdict the staged candidate policies would change "
                                          "(policy-change events).", ("direction", "dst_namespace"),
                                          registry=self.registry)
                self._inc(n, self.staged, f"{f.detail['before']}->{f.detail['after']}", self._ns(judged.dst))
        if stage == CLASSIFIED and flow.tls is not None and flow.tls.version:
            self._inc(n, self.tls, flow.tls.version, self._ns(judged.dst))

    def flush(self, now: float) -> None:
        """Counters are read at scrape time (live) or written by `write` (replay): nothing to do."""

    def close(self) -> None:
        pass

    def _ns(self, ep: Endpoint) -> str:
        """The namespace label: bounded to `max_namespaces` values, the rest count as `_other`."""
        ns = ep.namespace or NO_NAMESPACE
        if ns in self._namespaces:
            return ns
        if len(self._namespaces) >= self.max_namespaces:
            return OTHER_NAMESPACES
        self._namespaces.add(ns)
        return ns

    def _inc(self, n: int, counter: Counter, *labels: str) -> None:
        """`counter.labels(*labels).inc(n)`, with the labelled child looked up once per label set."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc(n)

    def forget_namespace(self, namespace: str) -> None:
        """Drop the series of a deleted namespace, keeping label cardinality bounded."""
        self._namespaces.discard(namespace)
        for counter in (self.violations, self.gaps, self.tls, self.staged):
            if counter is None:
                continue
            positions = [i for i, name in enumerate(counter._labelnames) if name.endswith("namespace")]
            for key in [k for k in self._children if k[0] == id(counter)
                        and any(k[1][i] == namespace for i in positions)]:
                with contextlib.suppress(KeyError):
                    counter.remove(*key[1])
                del self._children[key]

    def write(self, path: str) -> None:
        """Atomically (temp file + rename) write the registry in the text format."""
        write_to_textfile(path, self.registry)
