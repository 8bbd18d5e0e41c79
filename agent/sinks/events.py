"""Findings -> JSON Lines events, and flows -> flow records (judges -> **sinks**).

Events are grouped by (kind, src, dst, dst port, protocol): the first occurrence
is kept, flows/packets/bytes add up, `established` and the severity take the
worst seen. `replay` writes every group once at the end; the live agent writes
the groups of each window (`events.window`). The field contract is in
docs/events.md. No payload byte ever reaches an event.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import BinaryIO, Iterable

import orjson

from agent.flows.community_id import community_id
from agent.model import CRITICAL, INFO, POD, SERVICE, WARNING, Endpoint, Finding, Flow

SEVERITY_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}
_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def endpoint_record(ep: Endpoint, port: int | None) -> dict:
    """The `src`/`dst` object of events and flow records."""
    record = {"ip": ep.ip, "port": port, "kind": ep.kind, "namespace": ep.namespace, "pod": ep.pod,
              "uid": ep.uid, "node": ep.node, "workload": ep.workload, "service": ep.service,
              "attribution": ep.attribution}
    if ep.candidates:
        record["candidates"] = [{"namespace": c.namespace, "pod": c.pod, "ip": c.ip, "kind": c.kind}
                                for c in ep.candidates]
    return record


def _orig_dst(flow: Flow) -> dict | None:
    """The Service address the client dialled, when conntrack saw it translated to the backend."""
    return {"ip": flow.orig_dst[0], "port": flow.orig_dst[1]} if flow.orig_dst else None


def _who(ep: Endpoint) -> tuple:
    """An endpoint's identity for grouping: its pod or service, else its address."""
    if ep.kind == POD and ep.pod:
        return (POD, ep.namespace, ep.pod)
    if ep.kind == SERVICE:
        return (SERVICE, ep.namespace, ep.service)
    return (ep.kind, ep.ip)


class _Group:
    __slots__ = ("event", "first_seen", "last_seen", "count", "packets", "bytes", "rank")

    def __init__(self, event: dict, flow: Flow, rank: int):
        self.event, self.rank = event, rank
        self.first_seen, self.last_seen = flow.first_seen, flow.last_seen
        self.count = self.packets = self.bytes = 0


class EventSink:
    """Groups findings and writes them as one JSON object per line."""

    def __init__(self, out: BinaryIO, *, window: float | None = None):
        self.out, self.window = out, window
        self.groups: dict[tuple, _Group] = {}
        self.window_start: float | None = None
        self.written = 0

    def emit(self, finding: Finding, flow: Flow, src: Endpoint, dst: Endpoint, *, extra: dict | None = None) -> None:
        key = (finding.kind, _who(src), _who(dst), flow.dst_port, flow.protocol)
        group = self.groups.get(key)
        rank = SEVERITY_RANK.get(finding.severity, 0)
        if group is None:
            event = {
                "time": None, "kind": finding.kind, "severity": finding.severity,
                "protocol": flow.protocol,
                "src": endpoint_record(src, flow.src_port), "dst": endpoint_record(dst, flow.dst_port),
                "established": flow.established, "policies": list(finding.policies),
                "reasons": list(finding.reasons), "requirement": finding.requirement,
                "app": flow.app, "tls": flow.tls_fields(), "orig_dst": _orig_dst(flow),
                "community_id": community_id(flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port,
                                             flow.protocol),
            }
            if finding.detail:
                event.update(finding.detail)
            group = self.groups[key] = _Group(event, flow, rank)
            if self.window_start is None:
                self.window_start = flow.first_seen
        elif rank > group.rank:
            group.rank = rank
            group.event["severity"] = finding.severity
        group.event["established"] = group.event["established"] or flow.established
        group.first_seen = min(group.first_seen, flow.first_seen)
        group.last_seen = max(group.last_seen, flow.last_seen)
        group.count += 1
        group.packets += flow.packets_src + flow.packets_dst
        group.bytes += flow.bytes_src + flow.bytes_dst

    def due(self, now: float) -> bool:
        """Live mode: has the current window closed?"""
        return self.window is not None and self.window_start is not None and now - self.window_start >= self.window

    def flush(self) -> None:
        """Write every pending group, oldest first, and start a new window."""
        groups = sorted(self.groups.values(), key=lambda g: (g.first_seen, g.event["kind"]))
        self.out.write(b"".join(orjson.dumps(_finish(g), option=_DUMPS_OPTS) for g in groups))
        self.out.flush()
        self.written += len(groups)
        self.groups.clear()
        self.window_start = None

    def close(self) -> None:
        self.flush()


def _finish(group: _Group) -> dict:
    event = group.event
    event["time"] = rfc3339(group.first_seen)
    event["first_seen"] = rfc3339(group.first_seen)
    event["last_seen"] = rfc3339(group.last_seen)
    event["count"], event["packets"], event["bytes"] = group.count, group.packets, group.bytes
    return event


class FlowRecordSink:
    """`--flows FILE`: every flow as one JSON line when it ends (the cluster's conn.log)."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self._pending: list[bytes] = []

    def emit(self, flow: Flow, src: Endpoint, dst: Endpoint, *, verdict: str,
             findings: Iterable[Finding] = ()) -> None:
        record = {
            "time": rfc3339(flow.first_seen), "protocol": flow.protocol,
            "src": endpoint_record(src, flow.src_port), "dst": endpoint_record(dst, flow.dst_port),
            "established": flow.established, "mid_stream": flow.mid_stream, "closed": flow.closed,
            "packets_src": flow.packets_src, "bytes_src": flow.bytes_src,
            "packets_dst": flow.packets_dst, "bytes_dst": flow.bytes_dst,
            "first_seen": rfc3339(flow.first_seen), "last_seen": rfc3339(flow.last_seen),
            "community_id": community_id(flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port, flow.protocol),
            "verdict": verdict, "app": flow.app, "tls": flow.tls_fields(),
            "findings": sorted({f.kind for f in findings}),
            "orig_dst": _orig_dst(flow), "accounting": flow.accounting,
        }
        self._pending.append(orjson.dumps(record, option=_DUMPS_OPTS))
        if len(self._pending) >= 1024:
            self.flush()

    def flush(self) -> None:
        self.out.write(b"".join(self._pending))
        self.out.flush()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
