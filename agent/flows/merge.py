"""Conntrack events + packet flows -> one judged flow per connection (flows stage).

The live agent has two views of a connection: the packet flow (capture: first
bytes for TLS, handshakes) and the kernel's conntrack entry (every connection,
complete counters, the NAT translation). `ConntrackMerge` sits between the flow
table and the pipeline (`table.on_answer = merge.on_answer`, `table.on_end =
merge.on_end`) and applies three rules:

1. A packet flow whose 5-tuple matches an entry's original tuple (captured
   before DNAT, client -> ClusterIP) or its translated one (captured after
   DNAT, client -> pod) is that connection. It is judged against the backend
   from the reply tuple, with `orig_dst` = the ClusterIP. Its captured counters
   are replaced (never added to) by conntrack's at DESTROY, so the flow waits
   for the DESTROY up to `wait` seconds. The same connection captured on a
   second interface (before and after DNAT) is judged once: later copies are
   counted in `duplicates` and dropped.
2. A DESTROY whose connection no packet flow ever matched becomes a flow of
   its own, `mid_stream` (no payload seen: the TLS judge leaves it alone).
3. A packet flow without an entry (conntrack unavailable, event lost) is
   judged as it is.

The verdict is made at the flow's answer: a flow whose connection conntrack
already reported (its NEW event) is translated to the backend then, and a
second packet flow of the same connection is not judged again. At the end, the
complete counters replace the captured ones before the flow record is written.

Everything runs on the pipeline thread; no locks.
"""
from __future__ import annotations

import socket
import struct
from typing import Callable

from agent.flows.table import FlowTable
from agent.model import APP_UNKNOWN, CONNTRACK, CT_DESTROY, CT_NEW, PROTOCOLS, TCP, ConntrackEvent, Flow

_PORTS = struct.Struct("!HH")
Key = tuple[str, str, int, str, int]  # protocol name, src, sport, dst, dport


def event_keys(event: ConntrackEvent) -> tuple[Key, Key]:
    """The flow keys a packet flow of this connection has: before NAT, and after it (reply reversed)."""
    name = PROTOCOLS.get(event.protocol, str(event.protocol))
    (osrc, odst, osport, odport), (rsrc, rdst, rsport, rdport) = event.orig, event.reply
    return (name, osrc, osport, odst, odport), (name, rdst, rdport, rsrc, rsport)


def table_key(protocol: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    """The raw key FlowTable stores a flow under (layout of agent.decode.packet)."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    key = socket.inet_pton(family, src) + socket.inet_pton(family, dst) + _PORTS.pack(sport, dport)
    return key if protocol == 6 else key + bytes((protocol,))


class Entry:
    """One tracked connection: its events and what became of its packet flows."""
    __slots__ = ("new", "destroy", "parked", "judged", "answered", "keys")

    def __init__(self, event: ConntrackEvent):
        self.new = event if event.kind == CT_NEW else None
        self.destroy: ConntrackEvent | None = None
        self.parked: tuple[Flow, object] | None = None  # (flow, classification) waiting for DESTROY
        self.judged = False
        self.answered: Flow | None = None  # the packet flow whose answer was judged
        self.keys = event_keys(event)

    @property
    def event(self) -> ConntrackEvent:
        return self.destroy or self.new


def translate(flow: Flow, event: ConntrackEvent) -> None:
    """Turn a packet flow into the connection as conntrack saw it: initiator -> backend.

    A flow whose direction the table guessed wrong (start not captured) is
    turned around; a ClusterIP destination becomes the backend, remembered in
    `orig_dst`; a masqueraded source becomes the real client.
    """
    (osrc, odst, osport, odport), (rsrc, rdst, rsport, rdport) = event.orig, event.reply
    if (flow.dst_ip, flow.dst_port) in ((osrc, osport), (rdst, rdport)):  # reversed
        flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port = flow.dst_ip, flow.dst_port, flow.src_ip, flow.src_port
        flow.packets_src, flow.packets_dst = flow.packets_dst, flow.packets_src
        flow.bytes_src, flow.bytes_dst = flow.bytes_dst, flow.bytes_src
    if (odst, odport) != (rsrc, rsport):  # DNAT
        flow.orig_dst = (odst, odport)
        flow.dst_ip, flow.dst_port = rsrc, rsport
    flow.src_ip, flow.src_port = osrc, osport


def apply_counters(flow: Flow, event: ConntrackEvent) -> None:
    """Replace the captured counts with the kernel's complete ones (DESTROY with accounting on)."""
    if event.counters is not None:
        flow.packets_src, flow.bytes_src, flow.packets_dst, flow.bytes_dst = event.counters
        flow.accounting = CONNTRACK
    if event.seen_reply:
        flow.established = True


def conntrack_flow(entry: Entry) -> Flow:
    """A connection no packet flow matched, as a flow without payload information."""
    event = entry.destroy
    start = entry.new.at if entry.new is not None else event.at
    src, dst, sport, dport = event.orig
    name = PROTOCOLS.get(event.protocol, str(event.protocol))
    flow = Flow(name, src, sport, dst, dport, start, event.at, mid_stream=True, closed=True,
                app=APP_UNKNOWN if name == TCP else None)  # no byte of it was seen
    translate(flow, event)
    apply_counters(flow, event)
    return flow


class ConntrackMerge:
    """Merges conntrack events into the flow table's ends; see the module docstring."""

    def __init__(self, table: FlowTable, judge: Callable[[Flow, object], None], *,
                 answer: Callable[[Flow], None] | None = None,
                 wait: float = 130.0, max_entries: int = 1_000_000, max_parked: int = 100_000,
                 clock: Callable[[], float] | None = None):
        self.table, self.judge, self.answer = table, judge, answer
        self.wait, self.max_entries, self.max_parked = wait, max_entries, max_parked
        self.clock = clock
        self.entries: dict[Key, Entry] = {}  # both keys of every live connection
        self.parked: dict[Entry, float] = {}  # entry -> deadline, oldest first
        self.events = 0
        self.duplicates = 0  # packet flows of a connection already judged (captured twice)
        self.conntrack_only = 0  # flows made from a DESTROY alone
        self.completed = 0  # flows whose counters came from conntrack
        self.expired = 0  # parked flows judged with captured counters (no DESTROY in time)
        self.evicted = 0  # entries dropped at max_entries (DESTROY lost or never sent)

    # --- events ---------------------------------------------------------------------
    def feed(self, events: list[ConntrackEvent]) -> None:
        for event in events:
            self.events += 1
            entry = self.entries.get(event_keys(event)[0])
            if entry is not None and event.kind == CT_NEW:  # the tuple is reused; the old DESTROY was lost
                self._retire(entry)
                entry = None
            if entry is None:
                entry = self._add(Entry(event))
            if event.kind == CT_DESTROY:
                self._destroy(entry, event)

    def _add(self, entry: Entry) -> Entry:
        for key in entry.keys:
            self.entries[key] = entry
        while len(self.entries) > 2 * self.max_entries:
            self._retire(self.entries[next(iter(self.entries))])
            self.evicted += 1
        return entry

    def _retire(self, entry: Entry) -> None:
        """Forget an entry whose DESTROY will not come; a parked flow is judged as captured."""
        if entry.parked is not None:
            self._judge_parked(entry)
        self._forget(entry)

    def _forget(self, entry: Entry) -> None:
        for key in entry.keys:
            if self.entries.get(key) is entry:
                del self.entries[key]

    def _destroy(self, entry: Entry, event: ConntrackEvent) -> None:
        entry.destroy = event
        if entry.parked is not None:
            self._judge_parked(entry)
        else:  # live packet flows of the connection end now, through on_end
            for _name, src, sport, dst, dport in entry.keys:
                self.table.end(table_key(event.protocol, src, dst, sport, dport))
            if not entry.judged:
                entry.judged = True
                self.conntrack_only += 1
                self.completed += event.counters is not None
                self.judge(conntrack_flow(entry), None)
        self._forget(entry)

    # --- packet flows ---------------------------------------------------------------
    def _entry(self, flow: Flow) -> Entry | None:
        return (self.entries.get((flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port))
                or self.entries.get((flow.protocol, flow.dst_ip, flow.dst_port, flow.src_ip, flow.src_port)))

    def on_answer(self, flow: Flow) -> None:
        """The flow table's `on_answer`: judge the connection as conntrack sees it, once per connection."""
        if self.answer is None or flow.verdict is not None:
            return
        entry = self._entry(flow)
        if entry is not None:
            if entry.answered is not None and entry.answered is not flow:
                return  # the same connection captured again (before/after DNAT): judged once
            translate(flow, entry.event)
            entry.answered = flow
        self.answer(flow)

    def on_end(self, flow: Flow, classification) -> None:
        """The flow table's `on_end`: judge now, drop as a duplicate, or park until DESTROY."""
        entry = self._entry(flow)
        if entry is None:
            self.judge(flow, classification)
            return
        if entry.judged or entry.parked is not None or entry.answered not in (None, flow):
            self.duplicates += 1
            if entry.parked is not None and entry.parked[1] is None and classification is not None:
                translate(flow, entry.event)  # this copy saw the first bytes; the other did not
                entry.parked = (flow, classification)
            return
        translate(flow, entry.event)
        if entry.destroy is not None:
            entry.judged = True
            apply_counters(flow, entry.destroy)
            self.completed += entry.destroy.counters is not None
            self.judge(flow, classification)
        elif self.wait > 0 and len(self.parked) < self.max_parked:
            entry.parked = (flow, classification)
            self.parked[entry] = self._now() + self.wait
        else:
            entry.judged = True
            self.judge(flow, classification)

    def _judge_parked(self, entry: Entry) -> None:
        flow, classification = entry.parked
        entry.parked, entry.judged = None, True
        self.parked.pop(entry, None)
        if entry.destroy is not None:
            apply_counters(flow, entry.destroy)
            self.completed += entry.destroy.counters is not None
        else:
            self.expired += 1
        self.judge(flow, classification)

    def sweep(self, now: float) -> int:
        """Judge parked flows whose DESTROY did not come within `wait`, oldest first."""
        ended = 0
        for entry, deadline in list(self.parked.items()):
            if deadline > now:
                break
            self._judge_parked(entry)
            ended += 1
        return ended

    def finish(self) -> None:
        """Shutdown: judge every parked flow now, and park nothing from here on."""
        self.wait = 0.0
        for entry in list(self.parked):
            self._judge_parked(entry)

    def _now(self) -> float:
        return self.clock() if self.clock is not None else self.table.now
