"""`-o text` and the event filters (**sinks**): what a person reads on a terminal.

Text is one line per event: severity, kind, `ns/pod → ns/pod:port/proto`,
established or not, and the first reason (of a NetworkPolicy denial, the denying side's); coloured by severity on a terminal
unless `NO_COLOR` is set (https://no-color.org). It is rendered from the
JSON line the EventSink writes, so grouping and follow-ups are the same in
both formats.

The filters (`--kind`, `--namespace`, `--min-severity`, `--verdict`) choose
findings before they are grouped: the events written are those of the flows
asked for, while metrics and the summary still count everything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Mapping, Sequence

import orjson

from agent.model import CRITICAL, DENY, INFO, POLICY_VIOLATION, UNKNOWN, WARNING, Finding, Judged, finding_name

SEVERITIES = (INFO, WARNING, CRITICAL)  # least to most severe
FORMATS = ("text", "json")
_COLOURS = {CRITICAL: "\033[1;31m", WARNING: "\033[33m", INFO: "\033[36m"}
_RESET = "\033[0m"


def default_format(out: BinaryIO) -> str:
    """text on a terminal, json into a file or a pipe (for log shippers and jq)."""
    return "text" if _isatty(out) else "json"


def use_colour(out: BinaryIO) -> bool:
    return _isatty(out) and not os.environ.get("NO_COLOR")


def _isatty(out: BinaryIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


# -- filters ----------------------------------------------------------------------

@dataclass(frozen=True)
class EventFilter:
    """Which findings become events; an empty field lets everything through."""
    kinds: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()  # either end
    min_severity: str | None = None
    verdicts: frozenset[str] = frozenset()  # the flow's NetworkPolicy verdict when the finding was made

    def __bool__(self) -> bool:
        return bool(self.kinds or self.namespaces or self.min_severity or self.verdicts)

    def keeps(self, *, kind: str | None, severity: str | None, namespaces: Sequence[str | None],
              verdict: str | None, name: str | None = None) -> bool:
        if self.kinds and kind not in self.kinds and name not in self.kinds:  # `rule`, or `rule:<id>`
            return False
        if self.min_severity and (severity not in SEVERITIES or
                                  SEVERITIES.index(severity) < SEVERITIES.index(self.min_severity)):
            return False
        if self.namespaces and not self.namespaces.intersection(namespaces):
            return False
        return not self.verdicts or (verdict or UNKNOWN) in self.verdicts

    def keeps_finding(self, finding: Finding, judged: Judged) -> bool:
        return self.keeps(kind=finding.kind, severity=finding.severity, verdict=judged.flow.verdict,
                          namespaces=(judged.src.namespace, judged.dst.namespace), name=finding_name(finding))

    def keeps_verdict(self, record: Mapping) -> bool:
        """An `evaluate` result: a deny stands for a critical policy-violation, an allow for no finding."""
        deny = record["verdict"] == DENY
        return self.keeps(kind=POLICY_VIOLATION if deny else None, severity=CRITICAL if deny else None,
                          verdict=record["verdict"],
                          namespaces=(record["src"]["namespace"], record["dst"]["namespace"]))


class FilteredSink:
    """An event sink that is told only of the findings the filter keeps."""

    stages = frozenset()  # findings only, like the EventSink
    aggregates = True  # if its inner sink does: __getattr__ is not asked for class attributes

    def __init__(self, inner, keep: EventFilter):
        self.inner, self.keep = inner, keep
        self.name = inner.name

    def __getattr__(self, attr: str):  # urgent, written, cap_hits, last_shed: the inner sink's
        return getattr(self.inner, attr)

    def emit(self, judged: Judged) -> None:
        kept = [f for f in judged.findings if self.keep.keeps_finding(f, judged)]
        if kept:
            self.inner.emit(Judged(judged.stage, judged.flow, judged.src, judged.dst, kept, judged.count,
                                   judged.spread))

    def flush(self, now: float) -> None:
        self.inner.flush(now)

    def close(self) -> None:
        self.inner.close()


# -- text ---------------------------------------------------------------------------

def endpoint_text(ep: Mapping) -> str:
    """`ns/pod`, `ns/svc/name` for a Service address, else the address itself."""
    if ep.get("pod"):
        return f"{ep.get('namespace')}/{ep['pod']}"
    if ep.get("service"):
        return f"{ep.get('namespace')}/svc/{ep['service']}"
    return str(ep.get("ip"))


def _port(ep: Mapping, protocol: str) -> str:
    return f"{ep['port'] if ep.get('port') is not None else '*'}/{protocol}"


def event_text(event: Mapping, *, colour: bool = False) -> str:
    """One event as one line: severity kind src → dst:port/proto established reason."""
    severity = str(event.get("severity"))
    shown = f"{_COLOURS.get(severity, '')}{severity}{_RESET}" if colour and severity in _COLOURS else severity
    established = "established" if event.get("established") else "not-established"
    kind = f"{event.get('kind')}:{event['rule']}" if event.get("rule") else event.get("kind")
    line = (f"{shown} {kind} {endpoint_text(event['src'])} → {endpoint_text(event['dst'])}:"
            f"{_port(event['dst'], str(event.get('protocol')))} {established}")
    if reason := _first_reason(event):
        line += f" {reason}"
    if event.get("follow_up"):
        line += f" (+{event.get('count', 0):,} more)"
    return line + "\n"


def verdict_text(record: Mapping, *, colour: bool = False) -> str:
    """One `evaluate` result as one line: verdict src → dst:port/proto and the first reason."""
    verdict = str(record["verdict"])
    shown = f"{_COLOURS[CRITICAL]}{verdict}{_RESET}" if colour and verdict == DENY else verdict
    line = f"{shown} {endpoint_text(record['src'])} → {endpoint_text(record['dst'])}:" \
           f"{_port(record['dst'], str(record.get('protocol')))}"
    if reason := _first_reason(record):
        line += f" {reason}"
    return line + "\n"


def _first_reason(record: Mapping) -> str | None:
    """The first reason; of a NetworkPolicy denial on the ingress side, the ingress reason (the one that denied)."""
    reasons = record.get("reasons") or []
    if len(reasons) == 2 and record.get("verdict", DENY) == DENY and (record.get("egress") or {}).get("allowed") \
            and not (record.get("ingress") or {}).get("allowed", True):
        return reasons[1]
    return reasons[0] if reasons else None


class TextWriter:
    """A binary file for the EventSink that turns each JSON line it writes into a text line."""

    def __init__(self, out: BinaryIO, *, colour: bool):
        self.out, self.colour = out, colour
        self._partial = b""

    def write(self, data: bytes) -> int:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        text = "".join(event_text(orjson.loads(line), colour=self.colour) for line in lines if line)
        self.out.write(text.encode())
        return len(data)

    def flush(self) -> None:
        self.out.flush()
