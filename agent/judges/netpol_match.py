"""How a compiled NetworkPolicy rule admits a flow: its peers and its ports (judges stage).

`netpol.NetpolEngine` asks, for each policy selecting a flow's end in one direction, whether
a rule of it admits the other end on the flow's port: `admit` returns the first (rule, peer,
port) that does, which the explanations name.
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Mapping

from agent.judges.netpol_compile import CompiledPolicy, Peer, PortSpec, Rule
from agent.model import POD, Endpoint

_UNSET = object()


class PeerMatcher:
    """The other end of a flow, with its parsed IP and namespace labels computed once."""
    __slots__ = ("namespace_labels", "ep", "_ip", "_ns_labels")

    def __init__(self, namespace_labels: Callable[[str], Mapping[str, str]], ep: Endpoint):
        self.namespace_labels, self.ep = namespace_labels, ep
        self._ip: object = _UNSET  # None once known not to be an IP
        self._ns_labels: Mapping[str, str] | None = None

    def matches(self, peer: Peer, policy_ns: str) -> bool:
        if peer.net is not None:
            ip = self._address()
            return (ip is not None and ip in peer.net
                    and not any(ip in ex for ex in peer.excepts))
        ep = self.ep
        if ep.kind != POD:
            return False
        if peer.ns_sel is None:
            if ep.namespace != policy_ns:
                return False
        else:
            if self._ns_labels is None:
                self._ns_labels = self.namespace_labels(ep.namespace)
            if not peer.ns_sel(self._ns_labels):
                return False
        return peer.pod_sel(ep.labels)

    def _address(self):
        if self._ip is _UNSET:
            try:
                self._ip = ipaddress.ip_address(self.ep.ip)
            except ValueError:
                self._ip = None
        return self._ip


def admit(cp: CompiledPolicy, rules: tuple[Rule, ...], matcher: PeerMatcher, *,
           port: int, protocol: str, dst_ports: tuple) -> dict | None:
    """The first (rule, peer, port) of `cp` admitting the flow, or None."""
    for i, rule in enumerate(rules):
        port_index = _port_index(rule.ports, port=port, protocol=protocol, dst_ports=dst_ports)
        if port_index is False:
            continue
        if rule.peers is None:
            return {"policy": cp.key, "rule": i, "peer": None, "port": port_index}
        for j, peer in enumerate(rule.peers):
            if matcher.matches(peer, cp.namespace):
                return {"policy": cp.key, "rule": i, "peer": j, "port": port_index}
    return None


def _port_index(ports: tuple[PortSpec, ...] | None, *, port: int, protocol: str,
                dst_ports: tuple) -> int | None | bool:
    """Index of the first matching port entry; None when the rule has no ports; False: no match."""
    if ports is None:
        return None
    for k, spec in enumerate(ports):
        if spec.protocol != protocol:
            continue
        if spec.name is not None:
            # Named port: the destination pod must define it with the same protocol.
            if any(cp.name == spec.name and cp.protocol == protocol and cp.port == port
                   for cp in dst_ports):
                return k
        elif spec.lo is None or spec.lo <= port <= spec.hi:
            return k
    return False
