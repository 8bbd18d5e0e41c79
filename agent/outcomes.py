"""Known outcomes: what the pipeline decided at a flow's answer, repeated by the compact flow table.

flows -> judges -> sinks, for flows that need no Python. When the pipeline has judged a flow at its
answer, `Outcomes.remember` gives agent/_compact.h the outcome under the flow's key (its table is in
docs/architecture.md): each end's class for a flow without findings (a pod by its NetworkPolicy class and
whether it runs on this node, as a destination with what its TLS expectations read), each end's identity
for a flow with findings (an address the inventory knows is itself; any other is the set of the
policies', TLS rules' and built-in rules' CIDRs that hold it), the port's class, the protocol, whether both ends are one
address, and the answer (established, refused, unanswered). Later flows with that key live in the
compact table and add to the outcome's aggregate; `drain` hands the aggregates to the sinks after every
batch as one `Judged` with `count` (ANSWER; START when judges speak at the first packet, whose outcome
a new compact flow then needs; CLASSIFIED for the TLS versions counted in C; END).

What is remembered is exactly what the key decides, and nothing a sink could tell apart. Not remembered,
so judged in Python one by one: a finding whose event group names an address the key does not (an
established flow from, or any finding to, an address outside the inventory), and everything before the
inventory's first sync. A finding's outcome is forgotten when its event group closes, so the next
occurrence writes its own first line, and its id is reused once no compact flow answered under it is
left; identities and classes are made again when the cluster changes. A flow's end is counted under an
outcome of the same verdict and kinds of ends (`end_as`), which is never reused.

Used only when every judge is `compact_safe`, every sink `aggregates`, and the compiled per-packet path
is on; the Python flow table is the reference, with the same events, metrics and summary
(tests/flows/test_compact.py compares both).
"""
from __future__ import annotations

import ipaddress
import math
import socket
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.decode.hotpath import HOTPATH
from agent.model import (
    AMBIGUOUS, APP_TLS, CLASSIFIED, END, EXTERNAL, POD, POLICY_VIOLATION, START, TCP, UDP, Flow, Judged, Spread,
    TlsInfo, finding_name, is_violation)
from agent.sinks.events import group_key

if TYPE_CHECKING:
    from agent.pipeline import Pipeline

ESTABLISHED, REFUSED, UNANSWERED, FIRST_PACKET = 1, 2, 3, 4  # agent/_compact.h's states
PROTOCOL_NUMBERS = {TCP: 6, UDP: 17}
CIDR_IDENTS = 1 << 31  # identities of CIDR classes; those of known addresses count from 1
POD_CLASSES = 1 << 30  # classes of pods (what policies and TLS expectations can tell of them)
MAX_OUTCOMES = 100_000  # outcomes held at once; past it nothing new is remembered until some are reused


class Outcomes:
    """The pipeline's side of the compact flow table: identities, outcomes, aggregates."""

    def __init__(self, pipeline: "Pipeline"):
        self.pipeline = pipeline
        self.compact = HOTPATH.Compact()
        pipeline.table.on_adopt = self.adopt
        self.outcomes: list[tuple[Judged, str]] = []  # id -> (the answer's Judged, the flow's verdict)
        self._ids: dict[tuple, int] = {}  # what an outcome is -> its id (flows without findings share theirs)
        self._spread: set[int] = set()  # outcomes of attempt groups: their sources are counted
        self._findings: set[int] = set()  # outcomes with findings: forgotten when their event group closes
        self._retired: list[int] = []  # forgotten, reused once no compact flow answered under them is left
        self._free: list[int] = []
        self._ends: dict[tuple, int] = {}  # (verdict, src kind, dst kind) -> the outcome ends are counted under
        self._stale = True
        self._silencers: tuple = (None, [], [])  # (the judges they are of, silent_on_plaintext, silent_on_tls)
        self.enabled = True  # False: remember nothing new (a judge or sink that cannot take it came in)

    @staticmethod
    def usable(pipeline: "Pipeline") -> bool:
        return (HOTPATH is not None and pipeline.table.compiled and not pipeline.what_if
                and hasattr(pipeline.view, "address_windows")
                and all(getattr(j, "compact_safe", False) for j in pipeline.judges)
                and all(getattr(s, "aggregates", False) for s in pipeline.sinks))

    def cluster_changed(self) -> None:
        """Any inventory change (from any thread): identities and outcomes are made again before the next batch."""
        self._stale = True

    def _configure(self) -> None:
        view, engine = self.pipeline.view, self._engine()
        networks, named = engine.key_classes() if engine is not None else ((), bytes(65536))
        judges = [getattr(j, "inner", j) for j in self.pipeline.judges]
        ports = bytearray(named)
        for judge in judges:  # the TLS judge and the rules: the networks and ports their verdicts read
            if hasattr(judge, "key_classes"):
                more_networks, more_ports = judge.key_classes()
                networks += tuple(more_networks)
                for port in more_ports:
                    ports[port] = 1
        networks = tuple(dict.fromkeys(networks))
        for port in view.declared_ports():  # Services, containers, TLS annotations
            ports[port] = 1
        src_profiles = [j.src_profile for j in judges if hasattr(j, "src_profile")]
        dst_profiles = [j.dst_profile for j in judges if hasattr(j, "dst_profile")]
        addresses, classes = {}, {}
        for ident, (ip, since) in enumerate(view.address_windows().items(), start=1):
            as_src = as_dst = ident  # an address that is no pod is its own class
            if engine is not None:
                ep = view.endpoint(ip, since if since > -math.inf else 0.0)
                if ep.kind == POD and ep.attribution != AMBIGUOUS:  # policies see a class; judges more of it
                    cls = (engine.class_of(ep), ep.node == self.pipeline.node)  # the sides judged: model.side_of
                    as_src = classes.setdefault((cls, tuple(p(ep) for p in src_profiles), None),
                                                POD_CLASSES + len(classes))
                    as_dst = classes.setdefault((cls, None, tuple(p(ep) for p in dst_profiles)),
                                                POD_CLASSES + len(classes))
            packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
            addresses[packed] = (ident, as_src, as_dst, since)
        v4, v6 = _intervals(networks, 4), _intervals(networks, 6)
        self.compact.configure(addresses, v4, v6, bytes(ports))
        self._stale = False

    def _engine(self):
        """The NetworkPolicy engine of the first judge (unwrapped) that has one."""
        return next((j.engine for j in (getattr(j, "inner", j) for j in self.pipeline.judges) if hasattr(j, "engine")),
                    None)

    # --- the pipeline's calls ------------------------------------------------------------------
    def before_batch(self) -> None:
        if self._stale:  # outcomes stay: flows answered under them still count their ends
            self._configure()

    def remember(self, judged: Judged) -> None:
        """A flow judged at its first packet or its answer (a Python flow): its outcome, for the flows with
        its key (the answer's; or, for START judges, the first packet's)."""
        flow, src, dst, findings = judged.flow, judged.src, judged.dst, judged.findings
        if (flow.protocol not in PROTOCOL_NUMBERS or flow.mid_stream or not self.pipeline.view.synced
                or (len(self.outcomes) >= MAX_OUTCOMES and not self._free)):
            return
        if any(EXTERNAL in (who[0] for who in group_key(f, flow, src, dst)[1:3] if len(who) > 1) for f in findings):
            return  # the event group names an address outside the inventory: the key does not tell it apart
        state = (FIRST_PACKET if judged.stage == START else UNANSWERED if not flow.packets_dst else
                 ESTABLISHED if flow.established else REFUSED)
        spread = any(f.kind == POLICY_VIOLATION for f in findings) and not flow.established
        # Every port a TLS annotation or rule names is a class of its own: "any other port" shares its expectations.
        plain_ok = tls_ok = False
        if flow.protocol == TCP and flow.established:
            plain_ok, tls_ok = self._silent(flow, src, dst)
        # Flows without findings share an outcome per what sinks read of them: kinds, the verdict, dst namespace.
        what = (flow.verdict, src.kind, dst.kind, dst.namespace, plain_ok, tls_ok) if not findings else (id(judged),)
        outcome = self._ids.get(what)
        if outcome is None:
            outcome = self._new(judged)
            if findings:
                self._findings.add(outcome)
            else:
                self._ids[what] = outcome
            if spread:
                self._spread.add(outcome)
        ends = (flow.verdict, src.kind, dst.kind)
        end_as = self._ends.get(ends)
        if end_as is None:
            end_as = self._ends[ends] = self._new(judged)
        family = socket.AF_INET6 if ":" in flow.src_ip else socket.AF_INET
        self.compact.remember(socket.inet_pton(family, flow.src_ip), socket.inet_pton(family, flow.dst_ip),
                              flow.dst_port, PROTOCOL_NUMBERS[flow.protocol], state, flow.first_seen, outcome, end_as,
                              spread, plain_ok, tls_ok, not findings)

    def _new(self, judged: Judged) -> int:
        """An outcome id for this point of a flow's life: a reused one when one is free."""
        entry = (_template(judged), judged.flow.verdict)
        if self._free:
            outcome = self._free.pop()
            self.outcomes[outcome] = entry
            return outcome
        self.outcomes.append(entry)
        return len(self.outcomes) - 1

    def _silent(self, flow: Flow, src, dst) -> tuple[bool, bool]:
        """Whether every judge of the classification would find nothing were the first bytes plaintext (as
        the compact table decides it), and were they TLS."""
        judges = self.pipeline.judges
        if self._silencers[0] is not judges:  # made once per set of judges (a reload replaces it)
            classifying = [getattr(j, "inner", j) for j in judges if getattr(j, "stage", CLASSIFIED) == CLASSIFIED]
            never = lambda *_: False  # noqa: E731  (a judge that cannot tell)
            self._silencers = (judges, [getattr(j, "silent_on_plaintext", never) for j in classifying],
                               [getattr(j, "silent_on_tls", never) for j in classifying])
        _, plain, tls = self._silencers
        return all(s(flow, src, dst) for s in plain), all(s(flow, src, dst) for s in tls)

    def adopt(self, flow: Flow, outcome: int) -> None:
        """A compact flow whose answer was counted under `outcome` moves to the Python table: it is judged."""
        answer, flow.verdict = self.outcomes[outcome]
        flow.findings = tuple(finding_name(f) for f in answer.findings if is_violation(f))

    def drain(self) -> None:
        """What the compact table counted since the last drain, to the sinks as aggregates."""
        p = self.pipeline
        ip = lambda raw: socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)  # noqa: E731
        for o, count, first, last, packets, nbytes, established, ends, ports, sources, tls in self.compact.drain():
            answer, verdict = self.outcomes[o]
            if count:
                flow = replace(answer.flow, first_seen=first, last_seen=last, packets_src=packets, bytes_src=nbytes,
                               packets_dst=0, bytes_dst=0, established=established)
                spread = None
                if o in self._spread:
                    spread = Spread(ports, [ip(a) if a is not None else "" for a in sources])
                p.repeat(Judged(answer.stage, flow, answer.src, answer.dst, answer.findings, count, spread))
                if spread is not None and spread.full:  # (this drain's spread: its group can count no more)
                    self.compact.collect_sources(o, False)
            for version, n in tls.items():  # TLS connections classified in the compact table
                flow = replace(answer.flow, app=APP_TLS, tls=TlsInfo(version))
                p.repeat(Judged(CLASSIFIED, flow, answer.src, answer.dst, (), n))
            if ends:
                p.repeat(Judged(END, answer.flow, answer.src, answer.dst, (), ends), verdict=verdict)

    def after_flush(self) -> None:
        """Event groups closed and restarted at the flush: forget the closed, count the restarted's sources."""
        holders = [s for s in self.pipeline.sinks if hasattr(s, "holds")]
        for o in list(self._findings):
            if not all(s.holds(self.outcomes[o][0]) for s in holders):
                self.compact.forget_outcome(o)
                self._findings.discard(o)
                self._spread.discard(o)
                self._retired.append(o)
        for o in self._spread:
            self.compact.collect_sources(o, True)
        if self._retired:
            self._free += [o for o in self._retired if not self.compact.live(o)]
            self._retired = [o for o in self._retired if self.compact.live(o)]


def _template(judged: Judged) -> Judged:
    """The Judged kept as an outcome: a copy of the flow (the original lives on)."""
    return Judged(judged.stage, replace(judged.flow), judged.src, judged.dst, tuple(judged.findings))


def _intervals(networks: tuple, version: int) -> list[tuple[bytes, int]]:
    """The address space of one family cut where any network starts or ends: (first address, identity)
    per piece, identity 0 for the pieces no network holds."""
    nets = [n for n in networks if n.version == version]
    if not nets:
        return []
    size = 32 if version == 4 else 128
    cuts = sorted({int(n.network_address) for n in nets} | {int(n.broadcast_address) + 1 for n in nets} | {0})
    cuts = [c for c in cuts if c < 1 << size]
    classes: dict[tuple, int] = {(): 0}
    pieces = []
    for start in cuts:
        address = ipaddress.ip_address(start) if version == 4 else ipaddress.IPv6Address(start)
        holders = tuple(i for i, n in enumerate(networks) if n.version == version and address in n)
        ident = classes.setdefault(holders, CIDR_IDENTS + len(classes))
        pieces.append((start.to_bytes(size // 8, "big"), ident))
    return pieces

