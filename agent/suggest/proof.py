"""The proof printed with `suggest`: every observed flow judged again, before and after the suggestions.

Judges stage, reused: the current policies (`NetpolEngine(view)`) against the current
policies plus the suggested ones read back from the YAML written
(`NetpolEngine(view, extra_policies=...)`, as the what-if judge of `--with-policies`).
It holds when no admitted flow goes from allowed to denied. It also says what the
suggestions isolate: pods no policy selected before, and edges that were allowed only
because no policy selected either end.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from agent.inventory.store import Store
from agent.judges.netpol import NetpolEngine, compile_policy
from agent.judges.netpol_judges import policy_change
from agent.model import ALLOW, DENY, POD, NetworkPolicy
from agent.suggest.observe import Observed
from agent.suggest.shape import Workloads, flow_text, has_pod, pairs, refusal


@dataclass
class Proof:
    flows: int = 0
    policies: int = 0
    admitted: int = 0
    broken: dict[str, int] = field(default_factory=dict)  # admitted flows allowed before, denied after
    refused: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (flow, why, before->after)
    opened: dict[str, int] = field(default_factory=dict)  # denied before, allowed after
    isolated: list[str] = field(default_factory=list)
    by_absence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.broken

    def lines(self) -> list[str]:
        out = [f"proof: {self.flows:,} observed flows with a pod at either end, judged again with the current "
               f"policies plus the {self.policies} suggested:",
               f"  admitted: {self.admitted:,}; allowed before and denied after: {sum(self.broken.values())}"
               + ("" if self.broken else " (the suggestions break no admitted flow)")]
        out += [f"    BROKEN {what} ({n} flow{'s' * (n != 1)})" for what, n in sorted(self.broken.items())]
        if self.refused:
            out.append(f"  not admitted: {sum(self.refused.values()):,}")
            out += [f"    {what}: {why}; {change} ({n} flow{'s' * (n != 1)})"
                    for (what, why, change), n in sorted(self.refused.items())]
        if self.opened:
            out.append(f"  denied before, allowed after: {sum(self.opened.values())}")
            out += [f"    {what} ({n})" for what, n in sorted(self.opened.items())]
        out.append(f"newly isolated (selected by no policy before, by a suggested one now): {len(self.isolated)}")
        out += [f"  {line}" for line in self.isolated]
        out.append(f"edges allowed only because no policy selected an end, now allowed by a suggested rule: "
                   f"{len(self.by_absence)}")
        out += [f"  {line}" for line in self.by_absence]
        if self.notes:
            out.append("no policy suggested, because a flow could not be admitted without widening:")
            out += [f"  {line}" for line in self.notes]
        return out


def prove(observed: Sequence[Observed], store: Store, suggested: Sequence[NetworkPolicy], *,
          notes: Sequence[str] = ()) -> Proof:
    before, after = NetpolEngine(store), NetpolEngine(store, extra_policies=suggested)
    workloads = Workloads(store)
    proof = Proof(policies=len(suggested), notes=list(notes))
    broken, refused, opened = defaultdict(int), defaultdict(int), defaultdict(int)
    absence: dict[str, set[str]] = defaultdict(set)
    for o in observed:
        if not has_pod(o):
            continue
        proof.flows += 1
        args = (o.src, o.dst, o.port, o.protocol)
        b, a = before.decide_flow(*args, explain=False), after.decide_flow(*args, explain=False)
        why = refusal(o, before)
        if why is not None:
            refused[(flow_text(o), why, f"{b.verdict} -> {a.verdict}")] += 1
            continue
        proof.admitted += 1
        if b.verdict == ALLOW and a.verdict == DENY:
            change = policy_change(before.decide_flow(*args), after.decide_flow(*args))
            broken[f"{flow_text(o)}: {change.reasons[-1] if change else ''}"] += 1
        elif b.verdict == DENY and a.verdict == ALLOW:
            opened[flow_text(o)] += 1
        for s, d, port in pairs(o):
            bd, ad = before.decide(s, d, port, o.protocol, explain=False), after.decide(s, d, port, o.protocol,
                                                                                       explain=False)
            edge = f"{_who(workloads, s)} -> {_who(workloads, d)} {port}/{o.protocol}"
            if s.kind == POD and not bd.egress.isolated and ad.egress.isolated:
                absence[edge].add("egress")
            if d.kind == POD and not bd.ingress.isolated and ad.ingress.isolated:
                absence[edge].add("ingress")
    proof.broken, proof.refused, proof.opened = dict(broken), dict(refused), dict(opened)
    proof.by_absence = [f"{edge} (now selected: {', '.join(sorted(sides))})" for edge, sides in sorted(absence.items())]
    proof.isolated = newly_isolated(store, workloads, suggested)
    return proof


def _who(workloads: Workloads, ep) -> str:
    if ep.kind != POD:
        return ep.ip
    ns, wl = workloads.key(ep)
    return f"{ns}/{wl}"


def newly_isolated(store: Store, workloads: Workloads, suggested: Sequence[NetworkPolicy]) -> list[str]:
    """Per workload: the directions in which its pods go from selected by no policy to selected."""
    current = defaultdict(list)
    for ns in {p.namespace for p in suggested}:
        current[ns] = [compile_policy(p) for p in store.policies(ns)]
    added = defaultdict(list)
    for p in suggested:
        added[p.namespace].append(compile_policy(p))
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for pod in workloads.pods:
        if pod.namespace not in added:
            continue
        key = Workloads.key_of_pod(pod)
        for direction in ("ingress", "egress"):
            if not _selects(current[pod.namespace], pod, direction) and _selects(added[pod.namespace], pod, direction):
                found[key].add(direction)
        count[key] += bool(found.get(key))
    return [f"{ns}/{wl} ({count[(ns, wl)]} pod{'s' * (count[(ns, wl)] != 1)}): {', '.join(sorted(d))}"
            for (ns, wl), d in sorted(found.items())]


def _selects(compiled, pod, direction: str) -> bool:
    return any(getattr(cp, direction) is not None and cp.select(pod.labels) for cp in compiled)
