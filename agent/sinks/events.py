"""Findings -> JSON Lines events, and flows -> flow records (judges -> **sinks**).

An event group is (kind, src, dst, dst port, protocol). Its first occurrence is
written when it is judged (flushed within a second); repeats within
`events.window` are summed into one follow-up line (`follow_up: true`) when the
window ends, and only when there were repeats; a group that keeps repeating
gets a follow-up each window. Attempts that were never established (unanswered
or refused) group without their port, and external sources as one class, so a
port scan or a flood from random addresses is a few lines naming port and
source counts, not one line per port or source. Groups are capped
(`events.max_groups`): past it the oldest group's follow-up is written early
(counted). The field contract is in docs/events.md. No payload byte ever
reaches an event.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import BinaryIO

import orjson

from agent.flows.community_id import community_id
from agent.model import (
    ACTIVE, CRITICAL, END, EXTERNAL, INFO, POD, POLICY_VIOLATION, RULE, SERVICE, WARNING, Endpoint, Finding, Flow,
    Judged, Spread)

SEVERITIES = (INFO, WARNING, CRITICAL)
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
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


def _who_attempting(ep: Endpoint) -> tuple:
    """The source of an attempt: pods and nodes by name or address, external addresses as one class."""
    return (EXTERNAL,) if ep.kind == EXTERNAL else _who(ep)


def group_key(finding: Finding, flow: Flow, src: Endpoint, dst: Endpoint) -> tuple:
    """The event group of a finding (a rule's: by rule id and check); attempts (never established) without their port."""
    kind = (RULE, finding.detail["rule"], finding.detail.get("check")) if finding.kind == RULE else finding.kind
    if finding.kind == POLICY_VIOLATION and not flow.established:
        return kind, _who_attempting(src), _who(dst), None, flow.protocol
    return kind, _who(src), _who(dst), flow.dst_port, flow.protocol


DEFAULT_MAX_GROUPS = 20_000
MAX_SOURCES = 4096  # distinct sources counted exactly per attempt group; past it the count is a lower bound
MAX_SOURCES_HELD = 262_144  # ... and over all groups: a flood to many destinations stays bounded
PORT_SET = 256  # distinct ports kept as a set; past it a 8 KiB bitmap


class _Spread:
    """What the repeats of an attempt group spread over: destination ports and source addresses."""
    __slots__ = ("ports", "bits", "sources", "complete")

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.bits: bytearray | None = None  # a bit per port, once there are many
        self.sources: set[str] = set()
        self.complete = True

    def add(self, port: int, source: str, room: bool) -> bool:
        """Count one attempt; True when it added a source (`room`: the sink's budget allows one)."""
        if self.bits is not None:
            self.bits[port >> 3] |= 1 << (port & 7)
        else:
            self.ports.add(port)
            if len(self.ports) > PORT_SET:
                self._to_bits()
        return self.add_source(source, room)

    def _to_bits(self) -> None:
        self.bits = bytearray(8192)
        for p in self.ports:
            self.bits[p >> 3] |= 1 << (p & 7)
        self.ports = set()

    def merge(self, spread: Spread, held: int) -> int:
        """Count an aggregate's attempts (agent/outcomes.py); returns the sources it added, and
        marks `spread.full` once no source can change the count any more."""
        if spread.ports is not None:
            bits = int.from_bytes(spread.ports, "little")
            if self.bits is None and len(self.ports) + bits.bit_count() <= PORT_SET:
                while bits:
                    low = bits & -bits
                    self.ports.add(low.bit_length() - 1)
                    bits ^= low
            else:
                if self.bits is None:
                    self._to_bits()
                self.bits = bytearray((int.from_bytes(self.bits, "little") | bits).to_bytes(8192, "little"))
        added = 0
        for source in spread.sources:
            if not source:  # not kept by the compact table (out of memory): the count is a lower bound
                self.complete = False
            else:
                added += self.add_source(source, held + added < MAX_SOURCES_HELD)
        spread.full = not self.complete and len(self.sources) >= MAX_SOURCES
        return added

    def add_source(self, source: str, room: bool) -> bool:
        if source in self.sources:
            return False
        if room and len(self.sources) < MAX_SOURCES:
            self.sources.add(source)
            return True
        self.complete = False
        return False

    def record(self) -> tuple[dict, dict]:
        """The follow-up's `ports` and `sources`."""
        if self.bits is not None:
            value = int.from_bytes(self.bits, "little")
            ports = {"count": value.bit_count(), "min": (value & -value).bit_length() - 1,
                     "max": value.bit_length() - 1}
        else:
            ports = {"count": len(self.ports), "min": min(self.ports), "max": max(self.ports)}
        return ports, {"count": len(self.sources), "complete": self.complete}


class _Group:
    """One event group: its first line, and what its repeats added since the last line."""
    __slots__ = ("event", "due", "attempt", "count", "first_seen", "last_seen", "packets", "bytes", "rank",
                 "established", "spread")

    def __init__(self, event: dict, due: float, attempt: bool):
        self.event, self.due, self.attempt = event, due, attempt
        self._reset()

    def _reset(self) -> None:
        self.count = self.packets = self.bytes = self.rank = 0
        self.first_seen = self.last_seen = 0.0
        self.established = False
        self.spread: _Spread | None = None  # attempts only, made at the first repeat

    def add(self, flow: Flow, rank: int, count: int = 1) -> None:
        if not self.count:
            self.first_seen, self.last_seen = flow.first_seen, flow.last_seen
        self.count += count
        self.first_seen = min(self.first_seen, flow.first_seen)
        self.last_seen = max(self.last_seen, flow.last_seen)
        self.packets += flow.packets_src + flow.packets_dst
        self.bytes += flow.bytes_src + flow.bytes_dst
        self.rank = max(self.rank, rank)
        self.established = self.established or flow.established

    def follow_up(self) -> dict:
        """The line summing the repeats since the last one; then count from zero again."""
        event = {**self.event, "follow_up": True, "severity": SEVERITIES[self.rank],
                 "established": self.established, "time": rfc3339(self.first_seen),
                 "first_seen": rfc3339(self.first_seen), "last_seen": rfc3339(self.last_seen),
                 "count": self.count, "packets": self.packets, "bytes": self.bytes}
        if self.spread is not None:
            event["ports"], event["sources"] = self.spread.record()
        self._reset()
        return event


class EventSink:
    """Groups findings and writes them as one JSON object per line (see the module docstring)."""

    name = "events"
    stages = frozenset()  # findings only
    aggregates = True  # takes `Judged.count` and `Judged.spread`

    def __init__(self, out: BinaryIO, *, window: float = 60.0, max_groups: int = DEFAULT_MAX_GROUPS,
                 node: str | None = None):
        self.out, self.window, self.max_groups, self.node = out, window, max_groups, node
        self.groups: dict[tuple, _Group] = {}  # in the order their window ends
        self.written = 0
        self.cap_hits: dict[str, int] = {}
        self.last_shed = float("-inf")
        self._pending: list[bytes] = []
        self._sources_held = 0  # source addresses held by all groups' spreads (MAX_SOURCES_HELD)

    @property
    def urgent(self) -> bool:
        """A first line waits to be written: the pipeline flushes now rather than at its next tick."""
        return bool(self._pending)

    def emit(self, judged: Judged) -> None:
        for finding in judged.findings:
            self._add(finding, judged)

    def holds(self, judged: Judged) -> bool:
        """Whether the group of each of the findings is open (repeats of it are still counted)."""
        return all(group_key(f, judged.flow, judged.src, judged.dst) in self.groups for f in judged.findings)

    def _add(self, finding: Finding, judged: Judged) -> None:
        flow, src, dst, count = judged.flow, judged.src, judged.dst, judged.count
        attempt = finding.kind == POLICY_VIOLATION and not flow.established
        key = group_key(finding, flow, src, dst)
        group = self.groups.get(key)
        if group is not None:
            group.add(flow, SEVERITY_RANK.get(finding.severity, 0), count)
            if group.attempt:
                if group.spread is None:
                    group.spread = _Spread()
                if judged.spread is not None:
                    self._sources_held += group.spread.merge(judged.spread, self._sources_held)
                else:
                    self._sources_held += group.spread.add(flow.dst_port, src.ip,
                                                           self._sources_held < MAX_SOURCES_HELD)
            return
        if len(self.groups) >= self.max_groups:
            self._close_oldest(flow.last_seen)
        event = {
            "time": rfc3339(flow.first_seen), "kind": finding.kind, "severity": finding.severity,
            "protocol": flow.protocol,
            "src": endpoint_record(src, flow.src_port), "dst": endpoint_record(dst, flow.dst_port),
            "established": flow.established, "policies": list(finding.policies),
            "reasons": list(finding.reasons), "requirement": finding.requirement,
            "app": flow.app, "tls": flow.tls_fields(), "orig_dst": _orig_dst(flow),
            "community_id": community_id(flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port, flow.protocol),
            "observer": {"node": self.node, "side": flow.side},
            **(finding.detail or {}),
            "follow_up": False,
            "first_seen": rfc3339(flow.first_seen), "last_seen": rfc3339(flow.last_seen),
            "count": count, "packets": flow.packets_src + flow.packets_dst, "bytes": flow.bytes_src + flow.bytes_dst,
            "ports": {"count": 1, "min": flow.dst_port, "max": flow.dst_port} if attempt else None,
            "sources": {"count": 1, "complete": True} if attempt else None,
        }
        self._write(event)
        self.groups[key] = _Group(event, flow.last_seen + self.window, attempt)

    def _follow_up(self, group: _Group) -> None:
        if group.spread is not None:
            self._sources_held -= len(group.spread.sources)
        self._write(group.follow_up())

    def _write(self, event: dict) -> None:
        self._pending.append(orjson.dumps(event, option=_DUMPS_OPTS))
        self.written += 1
        if len(self._pending) >= 512:  # bounded: each dumps result holds a few KiB until written
            self._drain()

    def _drain(self) -> None:
        self.out.write(b"".join(self._pending))
        self._pending.clear()

    def _close_oldest(self, now: float) -> None:
        """Cap: the oldest group's window ends now (its follow-up, if any, written early)."""
        key = next(iter(self.groups))
        group = self.groups.pop(key)
        if group.count:
            self._follow_up(group)
        self.cap_hits["event_groups"] = self.cap_hits.get("event_groups", 0) + 1
        self.last_shed = now

    def flush(self, now: float) -> None:
        """Write the first lines pending and the follow-ups of the windows ended by `now`."""
        due = []
        for key, group in self.groups.items():
            if group.due > now:
                break
            due.append((key, group))
        for key, group in due:
            del self.groups[key]
            if group.count:  # it repeated: report, and keep counting for another window
                self._follow_up(group)
                group.due = now + self.window
                self.groups[key] = group
        self._drain()
        self.out.flush()

    def close(self) -> None:
        """Every group's window ends: the follow-ups of those that repeated, oldest first."""
        for group in self.groups.values():
            if group.count:
                self._follow_up(group)
        self.groups.clear()
        self._drain()
        self.out.flush()


class FlowRecordSink:
    """`--flows FILE`: every flow as one JSON line when it ends (the cluster's conn.log), and a
    record with its counters so far every `flows.active_timeout` while it lasts (`final: false`)."""

    name = "flows"
    stages = frozenset((ACTIVE, END))

    def __init__(self, out: BinaryIO, *, node: str | None = None):
        self.out, self.node = out, node
        self._pending: list[bytes] = []

    def emit(self, judged: Judged) -> None:
        if judged.stage not in self.stages:
            return
        flow = judged.flow
        record = {
            "time": rfc3339(flow.first_seen), "protocol": flow.protocol,
            "src": endpoint_record(judged.src, flow.src_port), "dst": endpoint_record(judged.dst, flow.dst_port),
            "established": flow.established, "mid_stream": flow.mid_stream, "closed": flow.closed,
            "packets_src": flow.packets_src, "bytes_src": flow.bytes_src,
            "packets_dst": flow.packets_dst, "bytes_dst": flow.bytes_dst,
            "first_seen": rfc3339(flow.first_seen), "last_seen": rfc3339(flow.last_seen),
            "community_id": community_id(flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port, flow.protocol),
            "verdict": flow.verdict, "app": flow.app, "tls": flow.tls_fields(),
            "findings": sorted(set(flow.findings)),
            "orig_dst": _orig_dst(flow), "accounting": flow.accounting, "final": judged.stage == END,
            "observer": {"node": self.node, "side": flow.side},
        }
        self._pending.append(orjson.dumps(record, option=_DUMPS_OPTS))
        if len(self._pending) >= 1024:
            self._drain()

    def _drain(self) -> None:
        self.out.write(b"".join(self._pending))
        self._pending.clear()

    def flush(self, now: float) -> None:
        self._drain()
        self.out.flush()

    def close(self) -> None:
        self.flush(0.0)
