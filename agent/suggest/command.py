"""`flowwarden suggest`, end to end: observe -> shape -> render -> read back -> prove -> write.

Called by `agent.cli` with its inputs already opened and checked; returns the exit
status (0: written and proven; 1: written over damaged input, or an admitted flow
would be denied; user errors are raised for the CLI to say in one line).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import yaml

from agent.capture.pcap import Damage
from agent.config import Config
from agent.inventory.store import Store
from agent.judges.netpol import PolicyError, validate_policy
from agent.model import NetworkPolicy
from agent.suggest.observe import Observed, observe_captures, observe_records
from agent.suggest.proof import Proof, prove
from agent.suggest.render import render_namespace
from agent.suggest.shape import suggest

EXIT_DAMAGED = 1


@dataclass
class SuggestOptions:
    captures: list[str] = field(default_factory=list)
    flows: list[tuple[str, BinaryIO]] = field(default_factory=list)  # (name, opened records)
    max_prefix: tuple[int, int] = (24, 64)
    ingress_only: bool = False
    namespaces: tuple[str, ...] = ()
    output_dir: str | None = None


def parse_max_prefix(value: str) -> tuple[int, int]:
    """`24`, `/24`, `24,64` or `/24,/64`: the widest ipBlock for IPv4 (and IPv6; default 64)."""
    parts = [p.strip().lstrip("/") for p in value.split(",")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--max-prefix {value}: expected an IPv4 prefix length, optionally with an IPv6 one "
                         "(e.g. 24 or 24,64)")
    v4, v6 = int(parts[0]), int(parts[1]) if len(parts) == 2 else 64
    if v4 > 32 or v6 > 128:
        raise ValueError(f"--max-prefix {value}: IPv4 prefixes are 0-32 and IPv6 prefixes 0-128")
    return v4, v6


def run_suggest(options: SuggestOptions, *, store: Store, config: Config, out: BinaryIO,
                err: TextIO = sys.stderr) -> int:
    damaged: list[Damage] = []
    observed: list[Observed] = []
    if options.captures:
        observed += observe_captures(options.captures, view=store, config=config, damaged=damaged)
    if options.flows:
        observed += observe_records(options.flows, view=store)
    if options.captures and len(damaged) == len(options.captures) and not any(d.records for d in damaged):
        raise ValueError("; ".join(d.describe() for d in damaged))
    made = suggest(observed, store, max_prefix=options.max_prefix, ingress_only=options.ingress_only,
                   namespaces=options.namespaces)
    texts = {}
    for ns in sorted({s.namespace for s in made.policies}):
        mine = [s for s in made.policies if s.namespace == ns]
        texts[ns] = render_namespace(ns, mine, flows=_flows_of(observed, ns))
    suggested = [p for ns, text in texts.items() for p in read_back(text, source=f"{ns}.yaml")]
    proof = prove(observed, store, suggested, notes=made.notes)
    _write(texts, proof, options.output_dir, out)
    for d in damaged:
        print(f"flowwarden: damaged input: {d.describe()}", file=err)
    for line in proof.lines():
        print(line, file=err)
    return EXIT_DAMAGED if damaged or not proof.holds else 0


def read_back(text: str, *, source: str) -> list[NetworkPolicy]:
    """The policies exactly as written (the proof judges these bytes), each checked as the API server would."""
    policies = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        meta = doc["metadata"]
        policy = NetworkPolicy(namespace=meta["namespace"], name=meta["name"], spec=doc["spec"])
        try:
            validate_policy(policy)
        except PolicyError as e:  # a bug here, not bad input: say which policy
            raise PolicyError(f"{source}: suggested {e}") from e
        policies.append(policy)
    return policies


def _flows_of(observed: list[Observed], ns: str) -> int:
    return sum(1 for o in observed if ns in (o.src.namespace, o.dst.namespace))


def _write(texts: dict[str, str], proof: Proof, output_dir: str | None, out: BinaryIO) -> None:
    if output_dir is None:
        out.write("".join(texts.values()).encode())
        out.flush()
        return
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for ns, text in texts.items():
        (folder / f"{ns}.yaml").write_text(text)
    (folder / "PROOF.txt").write_text("\n".join(proof.lines()) + "\n")
