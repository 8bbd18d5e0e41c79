"""`flowwarden evaluate`: judge flows given as JSON Lines, and load what-if policies.

A flow source (no capture): each input line is a flow known by its metadata,
given to the same pipeline as captured flows (`Pipeline.judge_flow`: ends
attributed through the ClusterView, judged by the NetworkPolicy judge in its
every-verdict mode) and written by its own sink (`VerdictSink`), one JSON line
(or an `--explain` text block) per input line. Also loads candidate NetworkPolicies
for `--with-policies` (evaluate, replay and run).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping, Sequence

import orjson
import yaml

from agent.config import Config
from agent.judges.netpol import Decision, PolicyError, describe, validate_policy
from agent.judges.netpol_judges import NetpolJudge
from agent.model import (
    ANSWER, DENY, JUDGED_PROTOCOLS, POLICY_VERDICT, TCP, ClusterView, Endpoint, Flow, Judged, NetworkPolicy)
from agent.pipeline import Pipeline
from agent.sinks.events import endpoint_record
from agent.sinks.text import EventFilter, verdict_text

POLICY_API_VERSION = "networking.k8s.io/v1"
_POLICY_SUFFIXES = (".yaml", ".yml", ".json")
_LIST_KINDS = ("List", "NetworkPolicyList")


def load_policy_files(paths: Sequence[str]) -> list[NetworkPolicy]:
    """NetworkPolicies from YAML/JSON files or folders (multi-document, List kinds), validated.

    Raises PolicyError (prefixed with the file) for a policy the API server
    would reject, ValueError naming the file for anything else unreadable.
    """
    policies: list[NetworkPolicy] = []
    for path in paths:
        for file in _policy_files(Path(path)):
            for doc_no, doc in enumerate(_documents(file)):
                for obj in _objects(doc, file=file, doc_no=doc_no):
                    policy = _to_policy(obj, file=file)
                    try:
                        validate_policy(policy)
                    except PolicyError as e:
                        raise PolicyError(f"{file}: {e}") from e
                    policies.append(policy)
    return policies


def policy_files(paths: Sequence[str]) -> list[str]:
    """Every file that `--with-policies paths` reads; a missing path is left for the loader to name."""
    return [str(f) for p in paths for f in (_policy_files(Path(p)) if Path(p).exists() else [Path(p)])]


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _POLICY_SUFFIXES)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    return [path]


def _documents(file: Path) -> list:
    try:
        text = file.read_bytes()
        if file.suffix == ".json":
            return [orjson.loads(text)]
        return list(yaml.safe_load_all(text))
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{file}: cannot read policies: {e}") from e


def _objects(doc: object, *, file: Path, doc_no: int) -> list[Mapping]:
    if doc is None:
        return []  # an empty YAML document ("---" at the end)
    if not isinstance(doc, Mapping):
        raise ValueError(f"{file}: document {doc_no}: expected an object")
    if doc.get("kind") in _LIST_KINDS:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ValueError(f"{file}: document {doc_no}: items must be a list")
        out = []
        for item in items:
            out.extend(_objects(item, file=file, doc_no=doc_no))
        return out
    return [doc]


def _to_policy(obj: Mapping, *, file: Path) -> NetworkPolicy:
    kind, api = obj.get("kind"), obj.get("apiVersion")
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if kind != "NetworkPolicy":
        what = " ".join(str(x) for x in (kind or "object", name) if x)
        raise ValueError(f"{file}: {what}: only NetworkPolicy objects are accepted")
    if api is not None and api != POLICY_API_VERSION:
        raise ValueError(f"{file}: networkpolicy {name}: apiVersion {api!r} is not {POLICY_API_VERSION}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{file}: networkpolicy: metadata.name is required")
    namespace = meta.get("namespace") or "default"
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    return NetworkPolicy(namespace=namespace, name=name, spec=spec, uid=str(meta.get("uid") or ""))


# -- evaluating flows ---------------------------------------------------------------

def evaluate_lines(view: ClusterView, lines: Iterable[str | bytes], out: BinaryIO, *, explain: bool, at: float,
                   text: bool = False, colour: bool = False, keep: EventFilter | None = None,
                   candidates: Sequence[NetworkPolicy] = ()) -> int:
    """Judge every flow line through the pipeline, writing one result per line (JSON, `text`, or an
    `explain` block; with `candidates`, the verdict after them, and `explain` shows before → after).

    Returns the number of denies (all of them, whatever `keep` shows). Blank lines are skipped; a
    malformed line raises ValueError naming its number.
    """
    judges = [NetpolJudge(view, extra_policies=candidates, every_verdict="after")]
    if candidates and explain:
        judges.append(NetpolJudge(view, every_verdict="before"))
    verdicts = VerdictSink(out, explain=explain, text=text, colour=colour, keep=keep)
    pipeline = Pipeline(view=view, config=Config(), sinks=[verdicts], judges=judges)
    for number, line in enumerate(lines, 1):
        if line.strip():
            src_ip, src_port, dst_ip, dst_port, protocol = parse_flow_line(line, number=number)
            pipeline.judge_flow(Flow(protocol, src_ip, src_port, dst_ip, dst_port, at, at))
    pipeline.finish()
    return verdicts.denied


def parse_flow_line(line: str | bytes, *, number: int) -> tuple[str, int | None, str, int, str]:
    """(src_ip, src_port, dst_ip, dst_port, protocol) of one input line (a flow, or a --flows record)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"flows line {number}: not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"flows line {number}: expected a JSON object")
    if isinstance(obj.get("src"), dict) and isinstance(obj.get("dst"), dict):  # a flow record of --flows
        obj = {"src_ip": obj["src"].get("ip"), "src_port": obj["src"].get("port"),
               "dst_ip": obj["dst"].get("ip"), "dst_port": obj["dst"].get("port"),
               "protocol": obj.get("protocol", TCP)}
    for field in ("src_ip", "dst_ip"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise ValueError(f"flows line {number}: {field} must be a non-empty string")
        try:
            ipaddress.ip_address(obj[field])
        except ValueError:
            raise ValueError(f"flows line {number}: {field} {obj[field]!r} is not an IPv4 or IPv6 address") from None
    dst_port = obj.get("dst_port")
    if not _is_port(dst_port):
        raise ValueError(f"flows line {number}: dst_port must be an integer 1-65535")
    src_port = obj.get("src_port")
    if src_port is not None and not _is_port(src_port):
        raise ValueError(f"flows line {number}: src_port must be an integer 1-65535")
    protocol = obj.get("protocol", TCP)
    if not isinstance(protocol, str) or protocol.upper() not in JUDGED_PROTOCOLS:
        raise ValueError(f"flows line {number}: protocol must be TCP, UDP or SCTP, "
                         f"got {protocol!r}")
    return obj["src_ip"], src_port, obj["dst_ip"], dst_port, protocol.upper()


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


class VerdictSink:
    """`evaluate`'s renderer: told of the `policy-verdict` findings of every flow, it writes one JSON line
    per flow (`text`: one line; `explain`: a headline and a reason per line, or before → after)."""
    name = "verdicts"
    stages = frozenset((ANSWER,))

    def __init__(self, out: BinaryIO, *, explain: bool = False, text: bool = False, colour: bool = False,
                 keep: EventFilter | None = None):
        self.out, self.explain, self.text, self.colour, self.keep = out, explain, text, colour, keep
        self.denied = 0  # every deny, whatever `keep` shows

    def emit(self, judged: Judged) -> None:
        verdicts = {f.detail["as"]: f.detail["decision"] for f in judged.findings if f.kind == POLICY_VERDICT}
        if "after" not in verdicts:
            return
        flow, src, dst, decision = judged.flow, judged.src, judged.dst, verdicts["after"]
        self.denied += decision.verdict == DENY
        record = {"verdict": decision.verdict,
                  "src": endpoint_record(src, flow.src_port), "dst": endpoint_record(dst, flow.dst_port),
                  "egress": decision.egress.as_dict(), "ingress": decision.ingress.as_dict(),
                  "policies": list(decision.policies), "reasons": list(decision.reasons)}
        if self.keep and not self.keep.keeps_verdict(record):
            return
        where = {"src": src, "dst": dst, "port": flow.dst_port, "protocol": flow.protocol}
        if self.explain and "before" in verdicts:
            self.out.write(before_after_text(verdicts["before"], decision, **where).encode())
        elif self.explain:
            self.out.write(explain_text(decision, **where).encode())
        elif self.text:
            self.out.write(verdict_text({**record, "protocol": flow.protocol}, colour=self.colour).encode())
        else:
            self.out.write(orjson.dumps(record) + b"\n")

    def flush(self, now: float) -> None:
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


def before_after_text(before: Decision, after: Decision, *, src: Endpoint, dst: Endpoint, port: int,
                      protocol: str) -> str:
    """What the candidate policies change for one flow: the verdicts before → after, each with its reasons."""
    head = f"{before.verdict} → {after.verdict}: {describe(src)} -> {describe(dst)} on {port}/{protocol}"
    if before.verdict == after.verdict:
        head += " (unchanged)"
    lines = [head]
    for label, decision in (("before", before), ("after", after)):
        policies = f" [{', '.join(decision.policies)}]" if decision.policies else ""
        lines.append(f"  {label}: {decision.verdict}{policies}")
        lines += [f"    {r}" for r in decision.reasons]
    return "\n".join(lines) + "\n"


def explain_text(decision: Decision, *, src: Endpoint, dst: Endpoint, port: int,
                 protocol: str) -> str:
    """The readable form of one verdict: a headline and one indented reason per line."""
    head = f"{decision.verdict}: {describe(src)} -> {describe(dst)} on {port}/{protocol}"
    if decision.policies:
        head += f" [{', '.join(decision.policies)}]"
    return "\n".join([head] + [f"  {r}" for r in decision.reasons]) + "\n"
