"""Verdict data types of the netpol judge and the sentences that explain them.

Judges stage: `netpol.py` fills `SideDecision`/`Decision`; this module turns
them into the reason lines carried by `policy-violation` events and printed
by `flowwarden evaluate --explain`, so that both say the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from agent.model import ALLOW, BOTH, DENY, NODE, POD, SERVICE, Endpoint

EGRESS_SIDE, INGRESS_SIDE = "egress", "ingress"


@dataclass(slots=True, frozen=True)
class SideDecision:
    """One direction of a flow: the source's egress or the destination's ingress."""
    direction: str  # "egress" | "ingress"
    isolated: bool
    selected_by: tuple[str, ...] = ()
    # {"policy": "ns/name", "rule": i, "peer": j | None, "port": k | None};
    # None for peer/port means the rule has no from/to or no ports.
    allowed_by: Mapping | None = None
    subject_is_pod: bool = True  # False: a node/external/service end, no policy applies

    @property
    def allowed(self) -> bool:
        return not self.isolated or self.allowed_by is not None

    def as_dict(self) -> dict:
        return {
            "isolated": self.isolated,
            "allowed": self.allowed,
            "selected_by": list(self.selected_by),
            "allowed_by": dict(self.allowed_by) if self.allowed_by is not None else None,
        }


@dataclass(slots=True, frozen=True)
class Decision:
    verdict: str  # model.ALLOW | model.DENY
    egress: SideDecision
    ingress: SideDecision
    # For deny: the policies isolating the denying side(s); for allow: those that admitted.
    policies: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "egress": self.egress.as_dict(),
            "ingress": self.ingress.as_dict(),
            "policies": list(self.policies),
            "reasons": list(self.reasons),
        }


def describe(ep: Endpoint) -> str:
    """Short human name of an endpoint: ns/pod, node/NAME (ip), service ns/name (ip), or the ip."""
    if ep.kind == POD and ep.pod:
        return f"{ep.namespace}/{ep.pod}"
    if ep.kind == NODE:
        return f"node/{ep.node} ({ep.ip})" if ep.node else f"node {ep.ip}"
    if ep.kind == SERVICE and ep.service:
        return f"service {ep.namespace}/{ep.service} ({ep.ip})"
    return ep.ip


def side_reason(side: SideDecision, *, subject: Endpoint, peer: Endpoint, port: int, protocol: str) -> str:
    """One line saying why a direction allowed or denied the flow."""
    d = side.direction
    what = f"{describe(peer)} on {port}/{protocol}"
    if not side.subject_is_pod:
        return f"{d} open: {describe(subject)} is not a pod, so no {d} policy applies"
    if not side.isolated:
        return f"{d} open: no policy selects {describe(subject)} for {d}"
    if side.allowed_by is not None:
        a = side.allowed_by
        peer_part = "any peer" if a["peer"] is None else f"peer {a['peer']}"
        port_part = "any port" if a["port"] is None else f"port {a['port']}"
        return f"{d} allowed: {a['policy']} rule {a['rule']} ({peer_part}, {port_part}) admits {what}"
    verb = "selects" if len(side.selected_by) == 1 else "select"
    return (f"{d} denied: {', '.join(side.selected_by)} {verb} {describe(subject)} "
            f"but no rule admits {what}")


def deciding_policies(verdict: str, egress: SideDecision, ingress: SideDecision) -> tuple[str, ...]:
    """Isolating policies of the denying sides for deny; admitting policies for allow."""
    names: list[str] = []
    for side in (egress, ingress):
        if verdict == DENY and not side.allowed:
            names.extend(side.selected_by)
        elif verdict == ALLOW and side.allowed_by is not None:
            names.append(side.allowed_by["policy"])
    return tuple(dict.fromkeys(names))


def combine_backends(service: Endpoint, results: list[tuple[Endpoint, Decision]]) -> Decision:
    """One Decision for a flow to a Service: deny if any backend pod would deny it."""
    denied = [(ep, d) for ep, d in results if d.verdict == DENY]
    svc = describe(service)
    if not denied:
        first = results[0][1]
        names = tuple(dict.fromkeys(p for _, d in results for p in d.policies))
        head = f"{svc}: all {len(results)} backends allow"
        return Decision(ALLOW, first.egress, first.ingress, names, (head,) + first.reasons)
    head = (f"{svc}: {len(denied)} of {len(results)} backends deny: "
            + ", ".join(describe(ep) for ep, _ in denied))
    reasons = [head]
    for ep, d in denied:
        reasons.extend(f"backend {describe(ep)}: {r}" for r in d.reasons)
    names = tuple(dict.fromkeys(p for _, d in denied for p in d.policies))
    first = denied[0][1]
    return Decision(DENY, first.egress, first.ingress, names, tuple(reasons))


def explained(decision: Decision, src: Endpoint, dst: Endpoint, port: int, protocol: str, *,
              loopback: bool) -> Decision:
    """The decision with the reasons of this flow's ends and port (a new Decision: it is frozen)."""
    if loopback:
        reasons = (f"loopback: {describe(src)} reaching itself is not subject to policy",)
    else:
        reasons = (side_reason(decision.egress, subject=src, peer=dst, port=port, protocol=protocol),
                   side_reason(decision.ingress, subject=dst, peer=src, port=port, protocol=protocol))
    return Decision(decision.verdict, decision.egress, decision.ingress, decision.policies, reasons)


def on_side(decision: Decision, side: str) -> Decision:
    """The decision as one direction alone makes it (BOTH: as it is), for a node that judges only its
    own pods' side (model.side_of): the other direction's reason is dropped, its policies do not decide."""
    if side == BOTH:
        return decision
    judged = decision.egress if side == EGRESS_SIDE else decision.ingress
    verdict = ALLOW if judged.allowed else DENY
    unjudged = SideDecision(INGRESS_SIDE if side == EGRESS_SIDE else EGRESS_SIDE, isolated=False)
    reasons = decision.reasons
    if len(reasons) == 2:  # (egress, ingress), as `explained` writes them
        reasons = (reasons[0 if side == EGRESS_SIDE else 1],)
    return Decision(verdict, decision.egress, decision.ingress, deciding_policies(verdict, judged, unjudged), reasons)
