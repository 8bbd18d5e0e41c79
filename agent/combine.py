"""`flowwarden merge`: the events of many agents -> each connection once (an entry above the sinks).

Each node's agent judges and reports its own pods' policy side (an event's `observer`: node and side),
so a connection between pods of two nodes is reported twice, once per side. Merge reads events as a log
stack collected them (files or stdin, any order) and joins the first lines of one connection's finding,
(kind, a rule's id and check, community_id), into one line: `egress` from the source's node, `ingress` from the destination's,
the policies and reasons of both sides (egress first), the highest severity, established or an
enforcement gap if either side saw it, the widest counters and times; `observer` is `{"node": null,
"side": "both"}` once both sides met, and `observers` lists every (node, side) that reported it.
Follow-up lines (each agent's repeats in its own window) and lines seen once pass through unchanged.
Output is sorted by `time` (stable). A line that is not an event is named (file:line) and skipped:
exit 1 when any was, 2 when nothing was usable.
"""
from __future__ import annotations

import sys
from typing import BinaryIO, Iterable, Sequence

import orjson

from agent.model import BOTH, EGRESS, INGRESS
from agent.sinks.events import SEVERITY_RANK, SEVERITIES

SIDE_ORDER = {EGRESS: 0, BOTH: 1, INGRESS: 2, None: 1}  # whose reasons come first


def merge_files(paths: Sequence[str], out: BinaryIO) -> int:
    events, losses = [], []
    for path in paths:
        name = "stdin" if path == "-" else path
        with (sys.stdin.buffer if path == "-" else open(path, "rb")) as stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    event = None
                if isinstance(event, dict) and isinstance(event.get("kind"), str):
                    events.append(event)
                else:
                    losses.append(f"{name}:{number}: not a flowwarden event (a JSON object with a kind)")
    if losses and not events:
        raise ValueError(f"{losses[0]}" + (f" (and {len(losses) - 1} more lines)" if len(losses) > 1 else ""))
    for event in merge(events):
        out.write(orjson.dumps(event) + b"\n")
    out.flush()
    for loss in losses:
        print(f"flowwarden: damaged input: {loss}", file=sys.stderr)
    return 1 if losses else 0


def merge(events: Iterable[dict]) -> list[dict]:
    """Each connection's finding once (see the module docstring), sorted by time."""
    groups: dict[tuple, list[dict]] = {}
    order: list[list[dict]] = []
    for event in events:
        if event.get("follow_up") or not event.get("community_id"):
            order.append([event])
            continue
        key = (event["kind"], event.get("rule"), event.get("check"), event["community_id"])
        if key in groups:
            groups[key].append(event)
        else:
            order.append(groups.setdefault(key, [event]))
    merged = [_combine(group) if len(group) > 1 else group[0] for group in order]
    return sorted(merged, key=lambda e: str(e.get("time") or ""))


def _combine(group: list[dict]) -> dict:
    group = sorted(group, key=lambda e: SIDE_ORDER.get((e.get("observer") or {}).get("side"), 1))
    base = dict(min(group, key=lambda e: str(e.get("time") or "")))
    observers = sorted({((e.get("observer") or {}).get("node"), (e.get("observer") or {}).get("side"))
                        for e in group}, key=lambda o: (str(o[0]), str(o[1])))
    sides = {side for _, side in observers}
    for direction in (EGRESS, INGRESS):  # each from the node that judged it
        if direction in base:
            base[direction] = next((e[direction] for e in group if e.get(direction) is not None), None)
    base["policies"] = list(dict.fromkeys(p for e in group for p in e.get("policies") or ()))
    base["reasons"] = list(dict.fromkeys(r for e in group for r in e.get("reasons") or ()))
    base["severity"] = SEVERITIES[max(SEVERITY_RANK.get(e.get("severity"), 0) for e in group)]
    for flag in ("established", "enforcement_gap"):
        if flag in base:
            base[flag] = any(e.get(flag) for e in group)
    for field in ("count", "packets", "bytes"):
        if field in base:
            base[field] = max(e.get(field) or 0 for e in group)
    base["first_seen"] = min(str(e.get("first_seen")) for e in group)
    base["last_seen"] = max(str(e.get("last_seen")) for e in group)
    if BOTH in sides or {EGRESS, INGRESS} <= sides:
        base["observer"] = {"node": None, "side": BOTH}
    base["observers"] = [{"node": node, "side": side} for node, side in observers]
    return base
