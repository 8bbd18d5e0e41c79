"""What a person sees on stderr during and after a replay (**sinks**).

A progress bar while a large input is read (only on a terminal) and, always,
the one-line summary: packets, flows, violations, packets/s; plus a what-if
section when candidate policies were given.
"""
from __future__ import annotations

import time
from typing import TextIO

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


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items())) or "none"


def summary_lines(pipeline, *, elapsed: float) -> list[str]:
    table, t = pipeline.table, pipeline.totals
    dropped = sum(table.dropped.values()) + sum(pipeline.dropped.values())
    violations = sum(n for k, n in t.findings.items())
    lines = [
        f"flowwarden: {table.packets:,} packets ({dropped:,} malformed, {sum(table.skipped.values()):,} not judged), "
        f"{t.flows:,} flows ({_counts(t.verdicts)}), {violations:,} violations ({_counts(t.findings)}), "
        f"{table.packets / max(elapsed, 1e-9):,.0f} packets/s"
    ]
    if pipeline.what_if:
        changes = sum(t.what_if.values())
        lines.append(f"flowwarden: what-if: the candidate policies change the verdict of {changes:,} flows"
                     + (f" ({_counts(t.what_if)})" if changes else ""))
    return lines
