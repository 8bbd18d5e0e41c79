"""`flowwarden evaluate`: judge flows given as JSON Lines, and load what-if policies.

Entry at the judges stage (no capture): each input line is a flow, both ends
are attributed through the ClusterView, the NetpolEngine decides, and one
JSON line (or an `--explain` text block) is written per input line. Also
loads candidate NetworkPolicies for `--with-policies` (evaluate and replay).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping, Sequence

import orjson
import yaml

from agent.judges.netpol import Decision, NetpolEngine, PolicyError, describe, validate_policy
from agent.model import DENY, JUDGED_PROTOCOLS, TCP, ClusterView, Endpoint, NetworkPolicy
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

def evaluate_lines(engine: NetpolEngine, view: ClusterView, lines: Iterable[str | bytes],
                   out: BinaryIO, *, explain: bool, at: float, text: bool = False, colour: bool = False,
                   keep: EventFilter | None = None, before: NetpolEngine | None = None) -> int:
    """Judge every flow line, writing one result per line (JSON, `text`, or an `explain` block).

    With `before` (the engine without the candidate policies), `explain` shows
    the verdict before → after. Returns the number of denies (all of them,
    whatever `keep` shows). Blank
    lines are skipped; a malformed line raises ValueError naming its number.
    """
    denied = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        src_ip, src_port, dst_ip, dst_port, protocol = parse_flow_line(line, number=number)
        src, dst = view.endpoint(src_ip, at), view.endpoint(dst_ip, at)
        decision = engine.decide_flow(src, dst, dst_port, protocol)
        denied += decision.verdict == DENY
        record = {"verdict": decision.verdict,
                  "src": endpoint_record(src, src_port), "dst": endpoint_record(dst, dst_port),
                  "egress": decision.egress.as_dict(), "ingress": decision.ingress.as_dict(),
                  "policies": list(decision.policies), "reasons": list(decision.reasons)}
        if keep and not keep.keeps_verdict(record):
            continue
        if explain and before is not None:
            out.write(before_after_text(before.decide_flow(src, dst, dst_port, protocol), decision,
                                        src=src, dst=dst, port=dst_port, protocol=protocol).encode())
        elif explain:
            out.write(explain_text(decision, src=src, dst=dst, port=dst_port,
                                   protocol=protocol).encode())
        elif text:
            out.write(verdict_text({**record, "protocol": protocol}, colour=colour).encode())
        else:
            out.write(orjson.dumps(record) + b"\n")
    return denied


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
