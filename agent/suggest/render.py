"""Suggested policies -> YAML text: one stream per namespace, each rule commented with what it admits.

The last step of `suggest` before its proof (which reads back exactly these bytes).
Deterministic: policies, rules and ports are sorted, and the only times written are
the observed flows' first and last seen. Comments name ends, ports and counts, never payload.
"""
from __future__ import annotations

from datetime import datetime, timezone

import yaml

from agent.suggest.shape import INGRESS, Rule, Suggestion

MAX_SEEN = 5  # ends named in a rule's comment; the rest are counted


def render_namespace(namespace: str, suggestions: list[Suggestion], *, flows: int) -> str:
    head = [f"# flowwarden suggest: NetworkPolicies for namespace {namespace}, from {flows:,} observed flows.",
            "# Review, stage (flowwarden run --with-policies), watch policy-change events, then apply."]
    return "\n".join(head) + "\n" + "".join(render_policy(s) for s in suggestions)


def render_policy(s: Suggestion) -> str:
    obj = s.policy()
    rules_key = "ingress" if s.direction == INGRESS else "egress"
    rules = obj["spec"].pop(rules_key)
    who = f"{s.namespace}: {', '.join(s.workloads)}"
    out = ["---", f"# {who}: {s.direction.lower()} as observed"]
    out.append(_dump(obj).rstrip("\n"))
    if not rules:
        out.append(f"  {rules_key}: []")
        out.append(f"  # nothing observed {'reaching' if s.direction == INGRESS else 'leaving'} these pods: "
                   f"all {rules_key} is denied")
    else:
        out.append(f"  {rules_key}:")
        for rule, body in zip(s.rules, rules):
            out += [f"  # {line}" for line in _comment(rule, s.direction)]
            out += ["  " + line for line in _dump([body]).rstrip("\n").split("\n")]
    return "\n".join(out) + "\n"


def _dump(obj) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=1000)


def _comment(rule: Rule, direction: str) -> list[str]:
    seen = sorted(rule.seen)
    named = ", ".join(seen[:MAX_SEEN]) + (f" and {len(seen) - MAX_SEEN} more" if len(seen) > MAX_SEEN else "")
    lines = [f"{'from' if direction == INGRESS else 'to'} {named}" if named else (rule.always or "")]
    if named and rule.always:
        lines.append(rule.always)
    for (protocol, number), (name, usage) in sorted(rule.ports.items()):
        port = f"{number}/{protocol}" + (f" ({name})" if name else "")
        if usage.count:
            lines.append(f"  {port}: {usage.count:,} flow{'s' if usage.count != 1 else ''}, "
                         f"first {_time(usage.first)}, last {_time(usage.last)}")
        else:
            lines.append(f"  {port}: not observed")
    return lines


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
