"""What a person sees on stderr during and after a replay (**sinks**).

A progress bar while a large input is read (only on a terminal) and, always,
the summary: packets, flows (and how many had no pod at either end), events
and the occurrences they stand for, packets/s; then what "not judged" was,
violations by namespace, and a what-if line when candidate policies were given.
"""
from __future__ import annotations

import time
from typing import TextIO

from agent.model import END, POD, Judged, is_violation

PROGRESS_MIN_BYTES = 20 << 20  # smaller inputs finish before a bar is worth drawing
PCAP_RECORD_OVERHEAD = 16


class Progress:
    def __init__(self, out: TextIO, *, total_bytes: int):
        self.out, self.total = out, total_bytes
        self.enabled = out.isatty() and total_bytes >= PROGRESS_MIN_BYTES
        self.read = self.packets = 0
        self.started = self._last = time.monotonic()

    def advance(self, frames: list) -> None:
        if not self.enabled:
            return
        self.packets += len(frames)
        nbytes = getattr(frames, "nbytes", None)  # PcapRecords know theirs
        self.read += nbytes if nbytes is not None else sum(len(f[2]) for f in frames) + PCAP_RECORD_OVERHEAD * len(frames)
        now = time.monotonic()
        if now - self._last >= 0.25:
            self._last = now
            share = min(self.read / self.total, 1.0)
            bar = "#" * int(share * 30)
            rate = self.packets / max(now - self.started, 1e-9)
            self.out.write(f"\r[{bar:<30}] {share:4.0%} {self.packets:,} packets {rate:,.0f}/s")
            self.out.flush()

    def done(self) -> None:
        if self.enabled:
            self.out.write("\r" + " " * 79 + "\r")
            self.out.flush()


NOT_JUDGED = ("packets that start no TCP, UDP or SCTP flow: ARP and other non-IP, ICMP, "
              "later IP fragments, other IP protocols")


class SummarySink:
    """Counts for the summary that other sinks do not keep: ends without a pod, violations by namespace."""

    name = "summary"
    stages = frozenset((END,))
    aggregates = True  # takes `Judged.count`

    def __init__(self) -> None:
        self.no_pod = 0  # flows with no pod at either end: the cluster state knew neither address
        self.by_namespace: dict[str, int] = {}  # violation occurrences, under each namespace at either end

    def emit(self, judged: Judged) -> None:
        if judged.stage == END and judged.src.kind != POD and judged.dst.kind != POD:
            self.no_pod += judged.count
        violations = judged.count * sum(1 for f in judged.findings if is_violation(f))
        if violations:
            for ns in {e.namespace for e in (judged.src, judged.dst) if e.namespace}:
                self.by_namespace[ns] = self.by_namespace.get(ns, 0) + violations

    def flush(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


def plural(n: int, noun: str) -> str:
    """"1 flow", "2 flows": counts in the summary read as sentences."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items())) or "none"


def summary_lines(pipeline, *, elapsed: float, events: int | None = None,
                  counted: SummarySink | None = None) -> list[str]:
    """The summary: what was read and judged, the events written and what they stand for."""
    table, t = pipeline.table, pipeline.totals
    dropped = sum(table.dropped.values()) + sum(pipeline.dropped.values())
    skipped = sum(table.skipped.values())
    occurrences = sum(t.findings.values()) + sum(t.what_if.values())
    kinds = dict(t.findings)
    if t.what_if:
        kinds["policy-change"] = sum(t.what_if.values())
    flows = f"{plural(t.flows, 'flow')} ({_counts(t.verdicts)}"
    if counted is not None:
        flows += f"; {counted.no_pod:,} with no pod at either end"
    written = plural(events, "event") + " (" if events is not None else ""
    found = f"{plural(occurrences, 'occurrence')}: {_counts(kinds)}" if occurrences else "no violations"
    lines = [
        f"flowwarden: {plural(table.packets, 'packet')} ({dropped:,} malformed, {skipped:,} not judged), "
        f"{flows}), {written}{found}{')' if written else ''}, "
        f"{table.packets / max(elapsed, 1e-9):,.0f} packets/s"
    ]
    if skipped:
        lines.append(f"flowwarden: not judged: {_counts(table.skipped)} ({NOT_JUDGED})")
    if counted is not None and counted.by_namespace:
        by_ns = sorted(counted.by_namespace.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("flowwarden: violations by namespace (either end): "
                     + ", ".join(f"{ns} {n:,}" for ns, n in by_ns))
    if pipeline.what_if:
        changes = sum(t.what_if.values())
        lines.append(f"flowwarden: what-if: the candidate policies change the verdict of {plural(changes, 'flow')}"
                     + (f" ({_counts(t.what_if)})" if changes else ""))
    return lines
