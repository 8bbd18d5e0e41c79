"""What `suggest` learns from: the flows observed, from captures or from `--flows` records.

Captures go through the replay pipeline (capture -> ... -> judges) with one more
sink that keeps each flow's attributed ends at its end; flow records (any number
of nodes) are attributed again through the `--cluster` view, so that the pods'
labels are known. Only the 5-tuple, times and establishment are kept: never payload.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Iterable, Sequence

import orjson

from agent.capture.pcap import Damage, read_frames
from agent.config import Config
from agent.evaluate import parse_flow_line
from agent.model import END, JUDGED_PROTOCOLS, POD, ClusterView, Endpoint, Judged, NetworkPolicy
from agent.pipeline import Pipeline


@dataclass(slots=True)
class Observed:
    """One observed flow: both ends as attributed at its start, the destination port, its life."""
    src: Endpoint
    dst: Endpoint
    port: int
    protocol: str
    established: bool
    first: float
    last: float
    unknown_pod: str | None = None  # a record's pod end the cluster file does not know ("ns/pod")


class ObservingSink:
    """A pipeline sink that keeps every judged flow at its end (after the replay, the flows it saw)."""
    name = "suggest"
    stages = frozenset((END,))

    def __init__(self) -> None:
        self.flows: list[Observed] = []

    def emit(self, judged: Judged) -> None:
        flow = judged.flow
        if judged.stage == END and flow.protocol in JUDGED_PROTOCOLS:
            self.flows.append(Observed(judged.src, judged.dst, flow.dst_port, flow.protocol,
                                       flow.established, flow.first_seen, flow.last_seen))

    def flush(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


def observe_captures(captures: Sequence[str], *, view: ClusterView, config: Config,
                     damaged: list[Damage], candidates: Sequence[NetworkPolicy] = ()) -> list[Observed]:
    """Replay the captures (in time order, as `replay` does) and return the flows they hold."""
    sink = ObservingSink()
    pipeline = Pipeline(view=view, config=config, sinks=[sink], candidates=candidates)
    for frames in read_frames(captures, damaged=damaged):
        pipeline.feed(frames)
    pipeline.finish()
    return sink.flows


def observe_records(sources: Iterable[tuple[str, BinaryIO]], *, view: ClusterView) -> list[Observed]:
    """Flows from `--flows` records (several files, several nodes): one per connection.

    A long connection has periodic records (`final: false`) before its last one: they are merged by
    5-tuple and first_seen. Raises ValueError naming the source and line of a malformed record."""
    merged: dict[tuple, Observed] = {}
    for name, source in sources:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                src_ip, src_port, dst_ip, dst_port, protocol = parse_flow_line(line, number=number)
                record = orjson.loads(line)
                first = _time(record.get("first_seen") or record.get("time"), number=number)
                last = _time(record.get("last_seen"), number=number) if record.get("last_seen") else first
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from e
            key = (src_ip, src_port, dst_ip, dst_port, protocol, first)
            seen = merged.get(key)
            if seen is not None:
                seen.established |= bool(record.get("established"))
                seen.last = max(seen.last, last)
                continue
            src, dst = view.endpoint(src_ip, first), view.endpoint(dst_ip, first)
            merged[key] = Observed(src, dst, dst_port, protocol, bool(record.get("established")), first, last,
                                   unknown_pod=_unknown_pod(record, src, dst))
    return [merged[k] for k in sorted(merged, key=_sort_key)]


def _sort_key(key: tuple) -> tuple:
    return (key[5], key[0], key[1] or 0, key[2], key[3], key[4])


def _time(value: object, *, number: int) -> float:
    if not isinstance(value, str):
        raise ValueError(f"flows line {number}: first_seen must be an RFC 3339 time")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"flows line {number}: {value!r} is not an RFC 3339 time") from None


def _unknown_pod(record: dict, src: Endpoint, dst: Endpoint) -> str | None:
    """A pod the record names whose address the cluster file gives to no pod (it has changed since)."""
    for side, ep in (("src", src), ("dst", dst)):
        named = record.get(side)
        if isinstance(named, dict) and named.get("kind") == POD and ep.kind != POD:
            return f"{named.get('namespace')}/{named.get('pod')}"
    return None
