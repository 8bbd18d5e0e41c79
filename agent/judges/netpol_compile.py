"""NetworkPolicy validation and compilation for the netpol judge.

Judges stage: every networking.k8s.io/v1 NetworkPolicy is checked the way the
API server checks it (pkg/apis/networking/validation) and compiled once into
plain tuples of matcher functions, so that the engine in `netpol.py` never
re-reads a spec on the verdict path.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from agent.inventory.selectors import Matcher, SelectorError, compile_selector, match_all
from agent.model import SCTP, TCP, UDP, NetworkPolicy

INGRESS, EGRESS = "Ingress", "Egress"
POLICY_PROTOCOLS = (TCP, UDP, SCTP)
# IANA_SVC_NAME (RFC 6335 section 5.1): at most 15 characters.
_PORT_NAME_MAX = 15
_PORT_NAME_RE = re.compile(r"^[-a-z0-9]+$")
_PORT_MAX = 65535
_SPEC_FIELDS = frozenset(("podSelector", "ingress", "egress", "policyTypes"))
_PEER_FIELDS = frozenset(("podSelector", "namespaceSelector", "ipBlock"))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A NetworkPolicy the API server would reject; the message names object and field."""


@dataclass(slots=True, frozen=True)
class PortSpec:
    protocol: str
    lo: int | None = None  # None: every port of the protocol
    hi: int | None = None
    name: str | None = None  # named port, resolved against the destination pod


@dataclass(slots=True, frozen=True)
class Peer:
    """podSelector/namespaceSelector peer, or an ipBlock (`net` set)."""
    pod_sel: Matcher = match_all
    ns_sel: Matcher | None = None  # None: only the policy's own namespace
    net: Network | None = None
    excepts: tuple[Network, ...] = ()


@dataclass(slots=True, frozen=True)
class Rule:
    peers: tuple[Peer, ...] | None  # None: every peer
    ports: tuple[PortSpec, ...] | None  # None: every port and protocol


@dataclass(slots=True, frozen=True)
class CompiledPolicy:
    key: str  # "namespace/name"
    namespace: str
    select: Matcher
    ingress: tuple[Rule, ...] | None  # None: the policy does not affect ingress
    egress: tuple[Rule, ...] | None


def validate_policy(p: NetworkPolicy) -> None:
    """Raise PolicyError for anything the API server would refuse."""
    compile_policy(p, strict=True)


def compile_policy(p: NetworkPolicy, *, strict: bool = False) -> CompiledPolicy:
    """Compile one policy; raises PolicyError on an invalid spec.

    `strict` adds the checks that do not change matching (an `except` that is
    not a strict subset of its cidr): the engine accepts such a block and it
    simply excludes everything it covers.
    """
    key = f"{p.namespace}/{p.name}"
    try:
        return _compile(p, key, strict=strict)
    except (SelectorError, _FieldError) as e:
        raise PolicyError(f"networkpolicy {key}: {e}") from e


class _FieldError(ValueError):
    pass


def _compile(p: NetworkPolicy, key: str, *, strict: bool) -> CompiledPolicy:
    spec = p.spec
    if not isinstance(spec, Mapping):
        raise _FieldError("spec: must be an object")
    unknown = set(spec) - _SPEC_FIELDS
    if unknown:
        raise _FieldError(f"spec.{sorted(unknown)[0]}: unknown field")
    select = compile_selector(spec.get("podSelector"), where="spec.podSelector")
    types = _policy_types(spec)
    ingress = _rules(spec.get("ingress"), "spec.ingress", "from", strict=strict)
    egress = _rules(spec.get("egress"), "spec.egress", "to", strict=strict)
    return CompiledPolicy(
        key=key, namespace=p.namespace, select=select,
        ingress=ingress if INGRESS in types else None,
        egress=egress if EGRESS in types else None)


def _policy_types(spec: Mapping) -> frozenset[str]:
    types = spec.get("policyTypes")
    if types is not None and not isinstance(types, list):
        raise _FieldError("spec.policyTypes: must be a list")
    if not types:
        # API defaulting (SetDefaults_NetworkPolicy): Ingress always, Egress
        # when there is at least one egress rule.
        return frozenset((INGRESS, EGRESS) if spec.get("egress") else (INGRESS,))
    if len(types) > 2:
        raise _FieldError("spec.policyTypes: must have at most 2 items")
    for i, t in enumerate(types):
        if t not in (INGRESS, EGRESS):
            raise _FieldError(f"spec.policyTypes[{i}]: unsupported value {t!r}: "
                              "supported values: 'Ingress', 'Egress'")
    return frozenset(types)


def _rules(rules: object, where: str, peer_field: str, *, strict: bool) -> tuple[Rule, ...]:
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise _FieldError(f"{where}: must be a list")
    out = []
    for i, rule in enumerate(rules):
        at = f"{where}[{i}]"
        if rule is None:
            rule = {}
        if not isinstance(rule, Mapping):
            raise _FieldError(f"{at}: must be an object")
        unknown = set(rule) - {"ports", peer_field}
        if unknown:
            raise _FieldError(f"{at}.{sorted(unknown)[0]}: unknown field")
        peers = _peers(rule.get(peer_field), f"{at}.{peer_field}", strict=strict)
        ports = _ports(rule.get("ports"), f"{at}.ports")
        out.append(Rule(peers=peers, ports=ports))
    return tuple(out)


def _peers(peers: object, where: str, *, strict: bool) -> tuple[Peer, ...] | None:
    if peers is None:
        return None
    if not isinstance(peers, list):
        raise _FieldError(f"{where}: must be a list")
    if not peers:
        return None  # an empty list, like a missing one, matches every peer
    out = []
    for j, peer in enumerate(peers):
        at = f"{where}[{j}]"
        if not isinstance(peer, Mapping):
            raise _FieldError(f"{at}: must be an object")
        unknown = set(peer) - _PEER_FIELDS
        if unknown:
            raise _FieldError(f"{at}.{sorted(unknown)[0]}: unknown field")
        present = [f for f in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(f) is not None]
        if not present:
            raise _FieldError(f"{at}: must specify a peer")
        if "ipBlock" in present:
            if len(present) > 1:
                raise _FieldError(f"{at}: may not specify both ipBlock and another peer")
            out.append(_ip_block(peer["ipBlock"], f"{at}.ipBlock", strict=strict))
            continue
        pod_sel = compile_selector(peer.get("podSelector"), where=f"{at}.podSelector")
        ns_sel = None
        if "namespaceSelector" in present:
            ns_sel = compile_selector(peer["namespaceSelector"], where=f"{at}.namespaceSelector")
        out.append(Peer(pod_sel=pod_sel, ns_sel=ns_sel))
    return tuple(out)


def _ip_block(block: object, where: str, *, strict: bool) -> Peer:
    if not isinstance(block, Mapping):
        raise _FieldError(f"{where}: must be an object")
    unknown = set(block) - {"cidr", "except"}
    if unknown:
        raise _FieldError(f"{where}.{sorted(unknown)[0]}: unknown field")
    cidr = block.get("cidr")
    if not cidr:
        raise _FieldError(f"{where}.cidr: required value")
    net = _network(cidr, f"{where}.cidr")
    excepts = block.get("except") or []
    if not isinstance(excepts, list):
        raise _FieldError(f"{where}.except: must be a list")
    nets = []
    for i, text in enumerate(excepts):
        ex = _network(text, f"{where}.except[{i}]")
        # Same test as the API server: except.IP inside cidr and a longer prefix.
        if strict and (ex.version != net.version or ex.network_address not in net
                       or ex.prefixlen <= net.prefixlen):
            raise _FieldError(f"{where}.except[{i}]: {text!r} must be a strict subset of `cidr` {cidr!r}")
        nets.append(ex)
    return Peer(net=net, excepts=tuple(nets))


def _network(text: object, where: str) -> Network:
    # The API parses with ParseCIDRSloppy: host bits may be set, the network is used.
    if not isinstance(text, str) or "/" not in text:
        raise _FieldError(f"{where}: invalid CIDR {_quote(text)}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise _FieldError(f"{where}: invalid CIDR {_quote(text)}") from e


def _quote(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _ports(ports: object, where: str) -> tuple[PortSpec, ...] | None:
    if ports is None:
        return None
    if not isinstance(ports, list):
        raise _FieldError(f"{where}: must be a list")
    if not ports:
        return None  # empty or missing: every port
    return tuple(_port(p, f"{where}[{k}]") for k, p in enumerate(ports))


def _port(entry: object, where: str) -> PortSpec:
    if entry is None:
        entry = {}
    if not isinstance(entry, Mapping):
        raise _FieldError(f"{where}: must be an object")
    unknown = set(entry) - {"port", "endPort", "protocol"}
    if unknown:
        raise _FieldError(f"{where}.{sorted(unknown)[0]}: unknown field")
    protocol = entry.get("protocol")
    if protocol is None:
        protocol = TCP
    if protocol not in POLICY_PROTOCOLS:
        raise _FieldError(f"{where}.protocol: unsupported value {protocol!r}: "
                          "supported values: 'TCP', 'UDP', 'SCTP'")
    port, end = entry.get("port"), entry.get("endPort")
    if end is not None:
        if port is None:
            raise _FieldError(f"{where}.endPort: must be defined only if `port` is also defined")
        if not isinstance(port, int) or isinstance(port, bool):
            raise _FieldError(f"{where}.endPort: may not be specified when `port` is non-numeric")
        if not _valid_number(end):
            raise _FieldError(f"{where}.endPort: {end!r} must be between 1 and 65535, inclusive")
        if end < port:
            raise _FieldError(f"{where}.endPort: {end} must be greater than or equal to `port` {port}")
    if port is None:
        return PortSpec(protocol=protocol)
    if isinstance(port, str):
        problem = port_name_problem(port)
        if problem:
            raise _FieldError(f"{where}.port: {problem}")
        return PortSpec(protocol=protocol, name=port)
    if not _valid_number(port):
        raise _FieldError(f"{where}.port: {port!r} must be between 1 and 65535, inclusive")
    return PortSpec(protocol=protocol, lo=port, hi=end if end is not None else port)


def _valid_number(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= _PORT_MAX


def port_name_problem(name: str) -> str | None:
    """Why `name` is not an IANA_SVC_NAME (k8s IsValidPortName), or None."""
    if not 1 <= len(name) <= _PORT_NAME_MAX:
        return f"port name {name!r} must be no more than 15 characters"
    if not _PORT_NAME_RE.match(name):
        return f"port name {name!r} must contain only lowercase alphanumerics and '-'"
    if "--" in name:
        return f"port name {name!r} must not contain consecutive hyphens"
    if name[0] == "-" or name[-1] == "-":
        return f"port name {name!r} must not begin or end with a hyphen"
    if not any("a" <= c <= "z" for c in name):
        return f"port name {name!r} must contain at least one letter"
    return None

