"""Settings of every stage, read from `--config FILE` (YAML, mounted from a ConfigMap).

Validated at start-up: an unknown key, a wrong type or a bad value fails with one
line naming the file and the field. TLS rules are kept as written here and
compiled (and checked) by the TLS judge.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml


CONFIGMAP_KEY = "flowwarden.yaml"  # the settings file's key in the DaemonSet's ConfigMap


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and field."""


@dataclass
class FlowConfig:
    tcp_timeout: float = 300.0
    """Seconds without packets after which a TCP flow ends."""
    udp_timeout: float = 60.0
    """Seconds without packets after which a UDP or SCTP flow ends."""
    closed_linger: float = 5.0
    """Seconds a TCP flow is kept after FIN/RST, for the last ACKs."""
    max_flows: int = 100_000
    """Flows held at once (~1 KiB each); past it the oldest flows end early (counted as evictions)."""
    answer_timeout: float = 2.0
    """Seconds a connection may wait for its answer (SYN-ACK, reply, refusal) before it is judged unanswered."""
    active_timeout: float = 60.0
    """Seconds between the periodic records (`--flows`) of a flow that is still open, as IPFIX's active timeout."""
    max_stream_bytes: int = 64 << 20
    """First bytes held, over all connections still being classified; past it a connection is classified
    with what it has (counted in flowwarden_cap_hits_total{cap="stream_bytes"})."""


@dataclass
class EventConfig:
    window: float = 60.0
    """Seconds over which repeats of an event group (after its first line) are summed into one follow-up line."""
    max_groups: int = 20_000
    """Event groups held at once (~2 KiB each); past it the oldest group's follow-up is written early."""


@dataclass
class InventoryConfig:
    grace: float = 120.0
    """Seconds a deleted pod keeps its IPs for late packets; the live agent raises it to cover the
    flow timeouts (a flow is attributed by its start but judged when it ends)."""


@dataclass
class CaptureConfig:
    interfaces: list[str] = field(default_factory=list)
    """Interface names or globs; empty = discover pod veths, CNI bridges and overlays."""
    udp_packets_per_flow: int = 4
    """UDP packets per flow direction per 10 s that reach the flow table (live capture)."""
    tcp_segments_per_flow: int = 8
    """TCP data segments per flow direction per 10 s that reach the flow table (live capture)."""
    payload_bytes: int = 4096
    """Payload bytes of a TCP data segment the kernel filter keeps (enough for a ClientHello)."""
    queue_size: int = 65536
    """Frames held between capture and the pipeline; past it frames drop and are counted."""
    ring_block_size: int = 262144
    """Bytes per block of an interface's TPACKET_V3 capture ring: a power of two, at least 65536."""
    ring_blocks: int = 8
    """Blocks per capture ring; each captured interface maps ring_block_size x ring_blocks bytes (per worker)."""
    ring_block_timeout: float = 0.05
    """Seconds after its first frame a partly filled block is handed to the agent (at least 0.001)."""
    workers: int = 1
    """Capture threads; above 1 every interface gets a ring per worker in a PACKET_FANOUT hash group."""
    conntrack: bool = True
    """Use the kernel's connection tracker, where available, for complete counters and Service DNAT."""
    conntrack_wait: float = 130.0
    """Seconds an ended flow waits for conntrack's final counters (TCP TIME_WAIT is 120 s); 0 judges at once."""


@dataclass
class MetricsConfig:
    max_namespaces: int = 1000
    """Distinct namespace label values per metric; further namespaces are counted as `_other`."""


@dataclass
class TlsConfig:
    rules: list[Mapping[str, Any]] = field(default_factory=list)
    """TLS expectations: [{namespaceSelector, podSelector, ipBlock, ports, minVersion}]."""


@dataclass
class PoliciesConfig:
    staged: str = ""
    """Candidate NetworkPolicies (a file or a folder of YAML/JSON) judged as if applied, on top of the
    cluster's: a verdict they would change is a `policy-change` event and counted in
    flowwarden_staged_verdict_changes_total. Empty: none. Re-read on SIGHUP; `run --with-policies` overrides it."""


@dataclass
class Config:
    flows: FlowConfig = field(default_factory=FlowConfig)
    events: EventConfig = field(default_factory=EventConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    rules: dict[str, Any] = field(default_factory=dict)
    """Built-in rules by id: {enabled, allow: [{namespaceSelector, podSelector, ipBlock}], the rule's own
    fields}; every rule but dns-exfil-shape is on by default (docs/rules.md)."""
    judges: list[str] = field(default_factory=lambda: ["netpol", "tls", "rules"])
    """Judges to run, by name; `rules` stands for the enabled built-in rules."""
    source: str = "defaults"


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}".replace("\n", " ")) from e
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    if doc.get("kind") == "ConfigMap":  # the DaemonSet's manifest itself: its settings file
        doc = _from_configmap(doc, source=source)
    config = _build(Config, doc, source=source, where="")
    config.source = source
    return config


def _from_configmap(manifest: Mapping, *, source: str) -> Mapping:
    text = (manifest.get("data") or {}).get(CONFIGMAP_KEY)
    if not isinstance(text, str):
        raise ConfigError(f"{source}: a ConfigMap without data.{CONFIGMAP_KEY}")
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: data.{CONFIGMAP_KEY}: invalid YAML: {e}".replace("\n", " ")) from e
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: data.{CONFIGMAP_KEY}: expected a mapping at the top level")
    return doc


def _build(cls: type, doc: Mapping, *, source: str, where: str) -> Any:
    known = {f.name: f for f in fields(cls) if f.name != "source"}
    values = {}
    for key, value in doc.items():
        name = f"{where}{key}"
        if key not in known:
            raise ConfigError(f"{source}: {name}: unknown setting (known: {', '.join(known)})")
        default = getattr(cls(), key)
        if hasattr(default, "__dataclass_fields__"):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {name}: expected a mapping")
            values[key] = _build(type(default), value, source=source, where=name + ".")
        else:
            values[key] = _coerce(value, default, source=source, name=name)
    return cls(**values)


def _coerce(value: Any, default: Any, *, source: str, name: str) -> Any:
    if isinstance(default, (bool, list, dict)):
        if type(value) is not type(default):
            raise ConfigError(f"{source}: {name}: expected a {type(default).__name__}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{source}: {name}: expected a non-negative number, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: {name}: expected a string")
    return value
