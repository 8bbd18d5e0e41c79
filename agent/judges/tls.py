"""TLS judge: is this connection encrypted where the cluster says it must be? (judges stage)

Users declare expectations with the `flowwarden.io/require-tls` and
`flowwarden.io/tls-min-version` annotations (pod over service over namespace,
the most specific declaration wins) or with `tls.rules` in the config file
(used where no annotation speaks). The flow table classified the connection
and set `flow.app` and `flow.tls`; this judge only compares. Mid-stream and `unknown` connections are never reported:
we cannot prove they were plaintext.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Mapping

from agent.inventory.selectors import SelectorError, compile_selector
from agent.model import (
    APP_TLS, APP_UNKNOWN, CLASSIFIED, CRITICAL, EGRESS, EXTERNAL, NAMESPACE_NAME_LABEL, PLAINTEXT, POD,
    REQUIRE_TLS_ANNOTATION, SERVICE, TCP, TLS_MIN_VERSION_ANNOTATION, TLS_RANK, TLS_VERSION, WARNING, ClusterView,
    Endpoint, Finding, Flow, backend_port, highest_version,
)

MIN_VERSIONS = ("1.2", "1.3")  # what tls-min-version / minVersion accept
MAX_CACHED = 100_000  # requirements kept per judge; past it the cache starts over
RULE_FIELDS = frozenset(("namespaceSelector", "podSelector", "ipBlock", "ports", "minVersion"))
NOT_JUDGED_APPS = frozenset((APP_UNKNOWN, None))


@dataclass(slots=True, frozen=True)
class TlsRule:
    """One `tls.rules[i]` entry: destinations that must be TLS (at least `min_version`)."""
    name: str  # "rule tls.rules[0]"
    ports: frozenset[int] | None  # None: every port
    min_version: str | None
    pod_match: Callable[[Mapping[str, str]], bool] | None = None  # labels -> bool
    ns_match: Callable[[Mapping[str, str]], bool] | None = None
    networks: tuple = ()
    excepted: tuple = ()

    def matches(self, dst: Endpoint, port: int, ns_labels: Mapping[str, str]) -> bool:
        if self.ports is not None and port not in self.ports:
            return False
        if self.networks:
            ip = ipaddress.ip_address(dst.ip)
            return any(ip in n for n in self.networks) and not any(ip in n for n in self.excepted)
        if self.pod_match is None and self.ns_match is None:
            return True
        if dst.kind != POD or dst.namespace is None:
            return False
        return (self.ns_match is None or self.ns_match(ns_labels)) and (
            self.pod_match is None or self.pod_match(dst.labels))


@dataclass(slots=True, frozen=True)
class Requirement:
    required: bool
    source: str | None  # what declared it, for Finding.requirement
    min_version: str | None = None
    min_source: str | None = None


def load_tls_rules(cfg: Mapping, *, source: str) -> list[TlsRule]:
    """Validate and compile `tls.rules` of a config mapping; ValueError names source and field."""
    tls = cfg.get("tls") if isinstance(cfg, Mapping) else None
    if tls is None:
        return []
    if not isinstance(tls, Mapping):
        raise ValueError(f"{source}: tls: must be a mapping")
    rules = tls.get("rules")
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise ValueError(f"{source}: tls.rules: must be a list")
    return [_load_rule(rule, where=f"tls.rules[{i}]", source=source) for i, rule in enumerate(rules)]


def _load_rule(rule: object, *, where: str, source: str) -> TlsRule:
    if not isinstance(rule, Mapping):
        raise ValueError(f"{source}: {where}: must be a mapping")
    unknown = sorted(set(rule) - RULE_FIELDS)
    if unknown:
        raise ValueError(f"{source}: {where}.{unknown[0]}: unknown field")
    if "ipBlock" in rule and ("podSelector" in rule or "namespaceSelector" in rule):
        raise ValueError(f"{source}: {where}.ipBlock: cannot be combined with podSelector/namespaceSelector")
    try:
        pod = compile_selector(rule["podSelector"], where=f"{where}.podSelector") if "podSelector" in rule else None
        ns = (compile_selector(rule["namespaceSelector"], where=f"{where}.namespaceSelector")
              if "namespaceSelector" in rule else None)
    except SelectorError as e:
        raise ValueError(f"{source}: {e}") from e
    networks, excepted = parse_ip_block(rule.get("ipBlock"), where=f"{where}.ipBlock", source=source)
    min_version = rule.get("minVersion")
    if min_version is not None and str(min_version) not in MIN_VERSIONS:
        raise ValueError(f"{source}: {where}.minVersion: must be one of {', '.join(MIN_VERSIONS)}, got {min_version!r}")
    return TlsRule(
        name=f"rule {where}", ports=_ports(rule.get("ports"), where=f"{where}.ports", source=source),
        min_version=None if min_version is None else str(min_version),
        pod_match=pod, ns_match=ns, networks=networks, excepted=excepted,
    )


def _ports(value: object, *, where: str, source: str) -> frozenset[int] | None:
    """`[443, {port: 8443, protocol: TCP}]`; None or absent means every port."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{source}: {where}: must be a list")
    out = set()
    for i, item in enumerate(value):
        port = item.get("port") if isinstance(item, Mapping) else item
        if isinstance(item, Mapping) and item.get("protocol", TCP) != TCP:
            raise ValueError(f"{source}: {where}[{i}].protocol: TLS rules apply to TCP only")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{source}: {where}[{i}]: port must be an integer 1-65535, got {port!r}")
        out.add(port)
    return frozenset(out)


def parse_ip_block(value: object, *, where: str, source: str) -> tuple[tuple, tuple]:
    if value is None:
        return (), ()
    if not isinstance(value, Mapping) or "cidr" not in value:
        raise ValueError(f"{source}: {where}.cidr: required")
    try:
        network = ipaddress.ip_network(value["cidr"], strict=False)
        excepted = tuple(ipaddress.ip_network(c, strict=False) for c in value.get("except") or ())
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: {where}: invalid CIDR: {e}") from e
    return (network,), excepted


def parse_require_tls(value: str) -> frozenset[int] | bool | None:
    """"true" -> True, "false" -> False, "5432,8443" -> ports; None when malformed."""
    text = value.strip().lower()
    if text in ("true", "false"):
        return text == "true"
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        return None
    return ports if ports and all(1 <= p <= 65535 for p in ports) else None


class TlsJudge:
    """Findings `plaintext` and `tls-version` for judged TCP flows, once they are classified."""

    name = "tls"
    stage = CLASSIFIED
    compact_safe = True  # silent on a flow without payload, the only kind the compact table keeps

    def __init__(self, view: ClusterView, rules: list[TlsRule] | tuple = ()) -> None:
        self._view = view
        self._rules = tuple(rules)
        # (dst kind, uid or ip, port) -> Requirement: a requirement is looked up per flow, but
        # only changes when the cluster does.
        self._requirements: dict[tuple, Requirement] = {}

    def on_change(self, kind: str, old, new) -> None:
        """Any change of a pod, namespace, service or its endpoints may change a requirement."""
        if kind != "NetworkPolicy" and kind != "Node":
            self._requirements.clear()

    def dst_profile(self, dst: Endpoint) -> tuple:
        """All that `requirement(dst, port)` reads of a pod but the port: pods with one profile have
        the same requirement on every port (agent/outcomes.py groups them)."""
        if dst.kind != POD or dst.namespace is None:
            return (dst.kind, dst.ip)
        tls_keys = lambda annotations: tuple(annotations.get(k) for k in TLS_ANNOTATIONS)  # noqa: E731
        ns = self._view.namespace(dst.namespace)
        ns_labels = {**(ns.labels if ns else {}), NAMESPACE_NAME_LABEL: dst.namespace}
        services = sorted(tls_keys(s.annotations) for s in self._view.services_for_pod(dst.uid)) if dst.uid else []
        rules = tuple((r.pod_match is None or r.pod_match(dst.labels), r.ns_match is None or r.ns_match(ns_labels),
                       _in_networks(r, dst.ip)) for r in self._rules)
        return (dst.namespace, tls_keys(dst.annotations), tuple(services),
                tls_keys(ns.annotations) if ns is not None else None, rules)

    def key_classes(self) -> tuple[tuple, frozenset[int]]:
        """The networks and ports its rules name: an address outside the inventory, or a port none
        names, has the same requirement as every other in its class (agent/outcomes.py)."""
        return (tuple(n for r in self._rules for n in (*r.networks, *r.excepted)),
                frozenset(p for r in self._rules for p in r.ports or ()))

    def silent_on_plaintext(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        """Whether it would find nothing were the flow's first bytes plaintext (agent/outcomes.py)."""
        return flow.protocol != TCP or flow.mid_stream or not self._requirement(dst, flow.dst_port).required

    def silent_on_tls(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        """... or TLS of any version."""
        return flow.protocol != TCP or flow.mid_stream or self._requirement(dst, flow.dst_port).min_version is None

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> list[Finding]:
        if flow.protocol != TCP or flow.mid_stream or flow.app in NOT_JUDGED_APPS or flow.side == EGRESS:
            return []  # TLS expectations are the destination's: its node judges them
        req = self._requirement(dst, flow.dst_port)
        tls = flow.tls
        if flow.app != APP_TLS and tls is None:
            if not req.required:
                return []
            return [Finding(kind=PLAINTEXT, severity=CRITICAL, requirement=req.source,
                            reasons=(f"TLS required on {flow.dst_port}/TCP by {req.source}, "
                                     f"but the connection starts in plaintext ({flow.app})",),
                            detail={"app": flow.app})]
        version = tls.version or highest_version(tls.offered_versions) if tls is not None else None
        if req.min_version is None or version not in TLS_RANK:
            return []
        if TLS_RANK[version] >= TLS_RANK[req.min_version]:
            return []
        how = "negotiated" if tls.version else "offered at most (no server answer seen)"
        return [Finding(kind=TLS_VERSION, severity=WARNING, requirement=req.min_source,
                        reasons=(f"TLS {version} {how}, below the minimum {req.min_version} "
                                 f"set by {req.min_source}",),
                        detail={"version": version, "min_version": req.min_version})]

    def _requirement(self, dst: Endpoint, port: int) -> Requirement:
        """`requirement`, cached for pods and Services (external addresses are unbounded)."""
        if dst.kind == EXTERNAL:
            return self.requirement(dst, port)
        key = (dst.kind, dst.uid or dst.ip, port)
        req = self._requirements.get(key)
        if req is None:
            if len(self._requirements) >= MAX_CACHED:
                self._requirements.clear()
            req = self._requirements[key] = self.requirement(dst, port)
        return req

    def requirement(self, dst: Endpoint, port: int) -> Requirement:
        """Which declaration governs (dst, port): annotations first, then config rules."""
        if dst.kind == SERVICE and dst.candidates:  # judged on the backends' (target) ports
            reqs = [self.requirement(c, target) for c in dst.candidates
                    if (target := backend_port(dst, c, port, TCP)) is not None] or [Requirement(False, None)]
            return next((r for r in reqs if r.required), reqs[0])
        required, source = None, None
        min_version, min_source = None, None
        for label, declared in self._declarations(dst, port):
            if required is None and REQUIRE_TLS_ANNOTATION in declared:
                value = declared[REQUIRE_TLS_ANNOTATION]
                parsed = parse_require_tls(value)
                if parsed is not None:
                    required = parsed if isinstance(parsed, bool) else port in parsed
                    source = f"{label} annotation {REQUIRE_TLS_ANNOTATION}={value}"
            if min_version is None and declared.get(TLS_MIN_VERSION_ANNOTATION) in MIN_VERSIONS:
                min_version = declared[TLS_MIN_VERSION_ANNOTATION]
                min_source = f"{label} annotation {TLS_MIN_VERSION_ANNOTATION}={min_version}"
        if required is None or min_version is None:
            rule = self._rule_for(dst, port)
            if rule is not None and required is None:
                required, source = True, rule.name
            if rule is not None and min_version is None and rule.min_version:
                min_version, min_source = rule.min_version, rule.name
        return Requirement(bool(required), source, min_version, min_source)

    def _declarations(self, dst: Endpoint, port: int):
        """(label, annotations) from most to least specific: pod, its services, namespace."""
        if dst.kind != POD or dst.namespace is None:
            return
        yield f"pod {dst.namespace}/{dst.pod}", dst.annotations
        services = sorted(self._view.services_for_pod(dst.uid) if dst.uid else (), key=lambda s: s.name)
        # Several services: one requiring TLS on this port speaks first (the strictest wins).
        services.sort(key=lambda s: not _requires(s.annotations.get(REQUIRE_TLS_ANNOTATION), port))
        for svc in services:
            yield f"service {svc.namespace}/{svc.name}", svc.annotations
        ns = self._view.namespace(dst.namespace)
        if ns is not None:
            yield f"namespace {ns.name}", ns.annotations

    def _rule_for(self, dst: Endpoint, port: int) -> TlsRule | None:
        if not self._rules:
            return None
        ns_labels: Mapping[str, str] = {}
        if dst.kind == POD and dst.namespace is not None:
            ns = self._view.namespace(dst.namespace)
            ns_labels = {**(ns.labels if ns else {}), NAMESPACE_NAME_LABEL: dst.namespace}
        return next((r for r in self._rules if r.matches(dst, port, ns_labels)), None)


TLS_ANNOTATIONS = (REQUIRE_TLS_ANNOTATION, TLS_MIN_VERSION_ANNOTATION)


def _in_networks(rule: TlsRule, address: str) -> bool | None:
    if not rule.networks:
        return None
    ip = ipaddress.ip_address(address)
    return any(ip in n for n in rule.networks) and not any(ip in n for n in rule.excepted)


def _requires(value: str | None, port: int) -> bool:
    parsed = parse_require_tls(value) if value is not None else None
    return parsed is True or (isinstance(parsed, frozenset) and port in parsed)
