"""What every built-in rule shares: its settings, allow entries, the cluster facts it reads (judges stage).

A rule is a judge (`model.Judge`) with a fixed id, severity and rationale. `Rule.judge` asks the
subclass's `finds` whether the flow breaks the rule, drops what an `allow` entry lets through, and
turns the rest into a `rule` finding. Rules speak for the source's side of a flow: a connection
between pods of two nodes is reported by the source's node (skipped on the INGRESS side), so a
cluster's agents report it once. The compact flow table (agent/outcomes.py) repeats a rule's
verdict for flows with the same key, so a rule names the networks and ports its verdict depends
on (`key_classes`) and what it reads of a pod (`src_profile`, `dst_profile`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

from agent.inventory.selectors import Matcher
from agent.model import (
    APP_TLS, APP_UNKNOWN, CONTROL_PLANE_LABEL, EXPOSE_ANNOTATION, INGRESS, JUDGED_PROTOCOLS, NAMESPACE_NAME_LABEL, NODE, POD, RULE,
    ClusterView, Endpoint, Finding, Flow)

LEGACY_CONTROL_PLANE_LABEL = "node-role.kubernetes.io/master"  # before Kubernetes 1.20; kubeadm set both until 1.24
API_SERVICE = ("default", "kubernetes")
API_PORTS = frozenset((443, 6443))


@dataclass(slots=True, frozen=True)
class Allow:
    """One `rules.<id>.allow[i]` entry: sources the rule lets through. NetworkPolicy peer fields, read
    cluster-wide: a podSelector alone matches pods of every namespace; an ipBlock matches any address."""
    pod_match: Matcher | None = None
    ns_match: Matcher | None = None
    networks: tuple = ()
    excepted: tuple = ()

    def matches(self, ep: Endpoint, namespace_labels: Callable[[str], Mapping[str, str]]) -> bool:
        if self.networks:
            ip = ipaddress.ip_address(ep.ip)
            return any(ip in n for n in self.networks) and not any(ip in n for n in self.excepted)
        if ep.kind != POD or ep.namespace is None:
            return False
        return ((self.ns_match is None or self.ns_match(namespace_labels(ep.namespace)))
                and (self.pod_match is None or self.pod_match(ep.labels)))


@dataclass(slots=True, frozen=True)
class RuleSettings:
    """`rules.<id>` of the config, validated (agent/judges/rules/settings.py)."""
    enabled: bool
    allow: tuple[Allow, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # the rule's own fields, defaults filled in


class ClusterFacts:
    """What rules read of the cluster beyond a flow's two ends, made again after a change of nodes or
    Services: the control plane (nodes labelled so, and the API server's endpoints), the API server's
    addresses and ports, and every Service's NodePorts. Shared by the rules of one pipeline."""

    def __init__(self, view: ClusterView):
        self.view = view
        self._stale = True
        self._control_plane: frozenset[str] = frozenset()
        self._api_addresses: frozenset[str] = frozenset()
        self._api_endpoints: frozenset[str] = frozenset()
        self._api_ports: frozenset[int] = API_PORTS
        self._node_ports: dict[tuple[int, str], tuple[str, bool]] = {}

    def changed(self, kind: str) -> None:
        if kind in ("Node", "Service", "EndpointSlice"):
            self._stale = True

    def _refresh(self) -> None:
        view = self.view
        self._control_plane = frozenset(n.name for n in view.nodes()
                                        if CONTROL_PLANE_LABEL in n.labels or LEGACY_CONTROL_PLANE_LABEL in n.labels)
        services = list(view.services())
        api = next((s for s in services if (s.namespace, s.name) == API_SERVICE), None)
        self._api_endpoints = frozenset(view.service_backends(*API_SERVICE))
        self._api_addresses = self._api_endpoints | frozenset(api.cluster_ips if api else ())
        self._api_ports = API_PORTS | frozenset(
            p for sp in (api.ports if api else ()) for p in (sp.port, sp.target) if isinstance(p, int))
        self._node_ports = {(sp.node_port, sp.protocol): (f"{s.namespace}/{s.name}",
                                                          s.annotations.get(EXPOSE_ANNOTATION) == "true")
                            for s in services for sp in s.ports if sp.node_port}
        self._stale = False

    def _fresh(self) -> "ClusterFacts":
        if self._stale:
            self._refresh()
        return self

    def in_control_plane(self, ep: Endpoint) -> bool:
        """A control-plane node (its address or a hostNetwork pod on it), a pod on one, or an API server."""
        facts = self._fresh()
        return ((ep.kind in (NODE, POD) and ep.node in facts._control_plane)
                or ep.ip in facts._api_endpoints)

    def is_api_server(self, ep: Endpoint) -> bool:
        """The `kubernetes` Service's ClusterIP or one of its endpoints."""
        return ep.ip in self._fresh()._api_addresses

    @property
    def api_addresses(self) -> frozenset[str]:
        return self._fresh()._api_addresses

    @property
    def api_ports(self) -> frozenset[int]:
        return self._fresh()._api_ports

    def node_port(self, port: int, protocol: str) -> tuple[str, bool] | None:
        """The Service ("ns/name") that opened `port` on every node, and whether it is annotated exposed."""
        return self._fresh()._node_ports.get((port, protocol))

    @property
    def node_ports(self) -> Iterable[int]:
        return (port for port, _ in self._fresh()._node_ports)


class Rule:
    """A built-in rule as a judge. Subclasses set the class attributes and `finds`."""
    id: ClassVar[str]
    severity: ClassVar[str]
    stage: ClassVar[str]
    rationale: ClassVar[str]  # one line, citing the guidance the rule comes from
    reached: ClassVar[bool] = False  # breaks the rule only when answered (established): a refused or
    # unanswered attempt reached nothing, the control held
    enabled_by_default: ClassVar[bool] = True
    # The rule's own config fields: name -> (default, kind: "ports", "addresses" or "number").
    options: ClassVar[Mapping[str, tuple[Any, str]]] = {}
    key_ports: ClassVar[frozenset[int]] = frozenset()  # the ports it names (the compact table's key)
    compact_safe = True  # its verdict is decided by the compact table's key (`key_classes`, profiles)

    def __init__(self, view: ClusterView, facts: ClusterFacts, settings: RuleSettings):
        self.name = f"rule:{self.id}"
        self.view, self.facts, self.settings = view, facts, settings

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> list[Finding]:
        if flow.side == INGRESS or flow.protocol not in JUDGED_PROTOCOLS or (self.reached and not flow.established):
            return []  # the source's node reports it; an attempt that was not answered reached nothing
        found = self.finds(flow, src, dst)
        if found is None or self.allowed(src):
            return []
        reason, detail = found
        return [Finding(kind=RULE, severity=self.severity, requirement=f"rule {self.id}",
                        reasons=(reason, self.rationale), detail={"rule": self.id, **detail})]

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint) -> tuple[str, dict] | None:
        """(reason, extra event fields) when the flow breaks the rule, else None."""
        raise NotImplementedError

    def allowed(self, src: Endpoint) -> bool:
        return any(a.matches(src, self._namespace_labels) for a in self.settings.allow)

    def _namespace_labels(self, name: str) -> Mapping[str, str]:
        ns = self.view.namespace(name)
        return {**(ns.labels if ns else {}), NAMESPACE_NAME_LABEL: name}

    def on_change(self, kind: str, old, new) -> None:
        self.facts.changed(kind)

    # --- the compact flow table's key (agent/outcomes.py) -------------------------------------
    def key_classes(self) -> tuple[tuple, frozenset[int]]:
        """The networks and ports the verdict depends on: other addresses outside the inventory, and
        other ports, are judged alike."""
        return tuple(n for a in self.settings.allow for n in (*a.networks, *a.excepted)), self.key_ports

    def src_profile(self, ep: Endpoint) -> tuple:
        """All the rule reads of a source pod: pods with one profile are judged alike."""
        return tuple(a.matches(ep, self._namespace_labels) for a in self.settings.allow)

    def dst_profile(self, ep: Endpoint) -> object:
        """... of a destination pod."""
        return None

    def silent_on_plaintext(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        """Whether it would find nothing were the flow's first bytes an HTTP request without credentials,
        the only plaintext the compact table decides (CLASSIFIED rules override this)."""
        return True

    def silent_on_tls(self, flow: Flow, src: Endpoint, dst: Endpoint) -> bool:
        return True


def plaintext(flow: Flow) -> bool:
    """The connection's first bytes were seen and are no TLS (as the TLS judge reads them)."""
    return not flow.mid_stream and flow.app not in (APP_TLS, APP_UNKNOWN, None) and flow.tls is None


def networks_of(addresses: Iterable[str]) -> tuple:
    """Single addresses as networks (key classes of the compact flow table)."""
    return tuple(ipaddress.ip_network(a) for a in addresses)
