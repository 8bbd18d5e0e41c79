"""The NetworkPolicy judges: `policy-violation` at a flow's answer, and `policy-change` for candidates.

Judges stage, on top of `netpol.NetpolEngine` (the verdicts and their cache). Both
judges speak at the ANSWER stage, when `established` is known: a denied flow that
was answered anyway is an enforcement gap. They ask the engine for the verdict
alone and explain only what they report.
"""
from __future__ import annotations

from typing import Sequence

from agent.judges.netpol import Decision, NetpolEngine
from agent.model import (
    ALLOW, ANSWER, CRITICAL, DENY, EGRESS, INFO, INGRESS, JUDGED_PROTOCOLS, POLICY_CHANGE, POLICY_VERDICT,
    POLICY_VIOLATION, WARNING, ClusterView,
    Endpoint, Finding, Flow, NetworkPolicy)


class NetpolJudge:
    """Pipeline judge: a `policy-violation` finding for every denied flow, at its answer.

    Judged at the answer, so that `established` is known: a denied flow that was answered
    anyway is an enforcement gap (the CNI let it through), reported as the finding's
    `enforcement_gap` and counted in `flowwarden_enforcement_gaps_total` from that same field.
    """
    name = "netpol"
    stage = ANSWER
    compact_safe = True  # its verdict is decided by the compact table's key (agent/outcomes.py)

    def __init__(self, view: ClusterView, *, engine: NetpolEngine | None = None,
                 extra_policies: Sequence[NetworkPolicy] = (), every_verdict: str | None = None):
        self.view = view
        self.engine = engine if engine is not None else NetpolEngine(
            view, extra_policies=extra_policies)
        # `evaluate`: a `policy-verdict` finding for every flow, allowed or not, tagged with this label
        # ("after" the candidate policies, or "before" them), instead of findings for denials alone.
        self.every_verdict = every_verdict
        if every_verdict:
            self.name = f"netpol-{every_verdict}"
            self.compact_safe = False

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> list[Finding]:
        if self.every_verdict and flow.protocol in JUDGED_PROTOCOLS:  # the state as given, synced or not
            decision = self.engine.decide_flow(src, dst, flow.dst_port, flow.protocol)
            return [Finding(kind=POLICY_VERDICT, severity=INFO, policies=decision.policies, reasons=decision.reasons,
                            detail={"as": self.every_verdict, "decision": decision})]
        if not self.view.synced or flow.protocol not in JUDGED_PROTOCOLS:
            return []
        args = (src, dst, flow.dst_port, flow.protocol)
        if self.engine.decide_flow(*args, explain=False, side=flow.side).verdict == ALLOW:
            return []
        decision = self.engine.decide_flow(*args, side=flow.side)  # explained: cached now
        # A side judged on the other end's node is not said here (null).
        return [Finding(
            kind=POLICY_VIOLATION,
            severity=CRITICAL if flow.established else WARNING,
            policies=decision.policies, reasons=decision.reasons,
            detail={"enforcement_gap": flow.established,
                    "egress": decision.egress.as_dict() if flow.side != INGRESS else None,
                    "ingress": decision.ingress.as_dict() if flow.side != EGRESS else None})]

    def decide_flow(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Decision:
        return self.engine.decide_flow(src, dst, port, protocol)

    def on_change(self, kind: str, old, new) -> None:
        self.engine.on_change(kind, old, new)


class WhatIfJudge:
    """`replay --with-policies`: judges each flow again with candidate policies on top, at its answer,
    and reports the verdicts they would change (`policy-change`)."""
    name = "what-if"
    stage = ANSWER

    def __init__(self, view: ClusterView, candidates: Sequence[NetworkPolicy], *, before: NetpolEngine | None = None):
        self.view = view
        self.before = before if before is not None else NetpolEngine(view)
        self._owns_before = before is None  # a shared engine is kept current by its own judge
        self.after = NetpolEngine(view, extra_policies=candidates)

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> list[Finding]:
        if not self.view.synced or flow.protocol not in JUDGED_PROTOCOLS:
            return []
        args, side = (src, dst, flow.dst_port, flow.protocol), flow.side
        before = self.before.decide_flow(*args, explain=False, side=side)
        if before.verdict == self.after.decide_flow(*args, explain=False, side=side).verdict:
            return []
        return [policy_change(self.before.decide_flow(*args, side=side), self.after.decide_flow(*args, side=side))]

    def on_change(self, kind: str, old, new) -> None:
        self.after.on_change(kind, old, new)
        if self._owns_before:
            self.before.on_change(kind, old, new)


def policy_change(before: Decision, after: Decision) -> Finding | None:
    """A `policy-change` finding when candidate policies flip a verdict, else None.

    allow -> deny is a warning (the candidates would break this traffic);
    deny -> allow is info.
    """
    if before.verdict == after.verdict:
        return None
    deciding = after if after.verdict == DENY else before
    return Finding(
        kind=POLICY_CHANGE,
        severity=WARNING if after.verdict == DENY else INFO,
        policies=tuple(dict.fromkeys(after.policies + deciding.policies)),
        reasons=after.reasons,
        detail={"before": before.verdict, "after": after.verdict,
                "before_reasons": list(before.reasons)})
