"""The NetworkPolicy engine: exact networking.k8s.io/v1 verdicts for flows.

Judges stage. `NetpolEngine` compiles every policy once (netpol_compile.py)
into per-namespace tuples and answers `decide(src, dst, port, protocol)`; the
answer is cached per (src, dst, port, protocol) and dropped when a namespace or
policy it depended on changes (`on_change`; a policy that adds or removes a
selector starts the cache over: the classes change). The cache key holds
classes where the verdict cannot tell values apart: a pod by what policies can
see of it (its namespace, which of all the policies' podSelectors match its
labels, its ports when a policy names one, and which of the policies' CIDRs
hold its address), so pods no selector tells apart (the replicas of a
workload, and often whole namespaces) share their decisions; any other end by
which CIDRs hold its address (ipBlocks are all that match it); a port no
policy names (no number, range or named port) as "any other port". A flood
from random addresses or a scan of every port is then one cold decision, not
one per address or port; the reasons, which name the ends and the port, are
rebuilt for each flow. A Service's verdict (each backend judged) is held per
source class and Service endpoint, which the store keeps until a change. The pipeline's judges wrap it
(`netpol_judges.py`); `evaluate` asks `decide_flow` directly.

Rules admit peers and ports as `netpol_match.py` says; decisions are explained by
`netpol_explain.py`. Semantics, as the API defines them: a flow is allowed iff the source's egress
and the destination's ingress both allow it; a pod no policy selects for a
direction is open in it; policies only select pods of their own namespace;
non-pod ends (node, external, service without backends) have no policies and
are matched only by ipBlock peers; named ports resolve against the
destination pod.
"""
from __future__ import annotations

import ipaddress
import itertools
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from agent.judges.netpol_compile import (  # noqa: F401  (re-exported API)
    EGRESS, INGRESS, CompiledPolicy, Peer, PolicyError, PortSpec, Rule, compile_policy,
    validate_policy)
from agent.judges.netpol_explain import (  # noqa: F401  (re-exported API)
    EGRESS_SIDE, INGRESS_SIDE, Decision, SideDecision, combine_backends, deciding_policies,
    describe, explained, on_side, side_reason)
from agent.judges.netpol_match import PeerMatcher, admit
from agent.model import (
    ALLOW, AMBIGUOUS, BOTH, DENY, NAMESPACE_NAME_LABEL, POD, SERVICE, TERMINAL_PHASES, ClusterView, Endpoint,
    NetworkPolicy, Pod, backend_port)

# The API server labels every namespace with its name (since Kubernetes 1.21).
DEFAULT_MAX_CACHE = 200_000  # decisions kept (~1 KiB each); past it the cache starts over
MAX_ADDRESS_CLASSES = 65_536  # non-pod addresses whose class is remembered
MAX_CLASSES = 1_000_000  # class ids remembered (pods come and go); past it they start over


def policy_subject(pod: Pod) -> bool:
    """Whether pod policies apply to the pod: not terminated, not on the host network."""
    return pod.phase not in TERMINAL_PHASES and not pod.host_network


class NetpolEngine:
    """Compiled policies of a ClusterView (plus what-if extras) with a verdict cache."""

    def __init__(self, view: ClusterView, *, extra_policies: Sequence[NetworkPolicy] = (),
                 max_cache: int = DEFAULT_MAX_CACHE):
        self._view = view
        self._max_cache = max_cache
        self._ns_labels: dict[str, Mapping[str, str]] = {}
        self._cluster: dict[str, dict[str, CompiledPolicy]] = defaultdict(dict)
        self._extra: dict[str, dict[str, CompiledPolicy]] = defaultdict(dict)
        self._by_ns: dict[str, tuple[CompiledPolicy, ...]] = {}
        self._cache: dict[tuple, Decision] = {}
        self._keys_by_ns: dict[str, set[tuple]] = defaultdict(set)
        self._pod_classes: dict[str, int] = {}  # uid -> class id of what policies can see of the pod
        self._selectors: tuple = ()  # every podSelector of every policy and peer: a pod's class is which match
        self._via_service: dict[tuple, tuple[Endpoint, Decision]] = {}  # decide_flow of a Service, verdict only
        # What the key's classes are made of: every CIDR (and except) and every port range of every
        # policy, and whether any names a port.
        self._networks: tuple = ()
        self._port_ranges: tuple[tuple[int, int], ...] = ()
        self._port_named = bytes(65536)  # 1 for each port some policy's number or range covers
        self._named_ports = False
        self._class_ids: dict[tuple, int] = {}  # a class (see _class) -> the small int keys hold
        self._class_counter = itertools.count()
        self._address_classes: dict[str, int] = {}  # non-pod address -> its class id (bounded)
        self.cold_decisions = 0
        for ns in view.namespaces():
            self._ns_labels[ns.name] = _with_name_label(ns.name, ns.labels)
            for p in view.policies(ns.name):
                self._cluster[p.namespace][p.name] = compile_policy(p)
        for p in extra_policies:
            # A candidate named like a live policy replaces it, as `kubectl apply` would.
            self._extra[p.namespace][p.name] = compile_policy(p)
        for ns in set(self._cluster) | set(self._extra):
            self._rebuild(ns)
        self._refresh_classes()

    # -- verdicts -------------------------------------------------------------

    def decide(self, src: Endpoint, dst: Endpoint, port: int, protocol: str, *, explain: bool = True) -> Decision:
        """The verdict for src -> dst on port/protocol (dst taken as is, even a Service).

        `explain=False`: the reasons may speak of other ends of the same class (cheaper, for
        callers that only read the verdict)."""
        key = (self._class(src), self._class(dst), self._port_class(port, dst), protocol, _loopback(src, dst))
        cached = self._cache.get(key)
        if cached is None:
            return self._decide_cold(key, src, dst, port, protocol)
        decision, explained_for = cached
        if explain and explained_for != (src.ip, dst.ip, port):  # cached for a class: explain this flow
            decision = _explained(decision, src, dst, port, protocol)
        return decision

    def _class(self, ep: Endpoint) -> int:
        """What policies can tell of an end (see the module docstring), as a small int: cheap to hash."""
        if ep.kind == POD:
            cls = self._pod_classes.get(ep.uid)
            if cls is None:
                labels = ep.labels
                cls = self._pod_classes[ep.uid] = self._class_id(
                    (POD, ep.namespace, tuple(match(labels) for match in self._selectors),
                     ep.ports if self._named_ports else (), self._address_class(ep.ip)))
            return cls
        cls = self._address_classes.get(ep.ip)
        if cls is None:
            if len(self._address_classes) >= MAX_ADDRESS_CLASSES:  # a flood of random addresses
                self._address_classes.clear()
            cls = self._address_classes[ep.ip] = self._class_id((ep.kind, self._address_class(ep.ip)))
        return cls

    def _class_id(self, cls: tuple) -> int:
        """Never reused, so that forgetting classes (pods come and go) cannot make a stale key match."""
        cid = self._class_ids.get(cls)
        if cid is None:
            if len(self._class_ids) >= MAX_CLASSES:
                self._class_ids.clear()
            cid = self._class_ids[cls] = next(self._class_counter)
        return cid

    def _address_class(self, address: str) -> tuple[int, ...]:
        """Which of the policies' CIDRs (and excepts) contain the address."""
        if not self._networks:
            return ()
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ()
        return tuple(i for i, net in enumerate(self._networks) if ip in net)

    def _port_class(self, port: int, dst: Endpoint) -> int | None:
        """The port itself when a policy could tell it from others, else None ("any other port")."""
        if self._port_named[port]:
            return port
        if self._named_ports and dst.kind == POD and any(cp.port == port for cp in dst.ports):
            return port
        return None

    def _refresh_classes(self) -> None:
        rules = [rule for policies in self._by_ns.values() for cp in policies
                 for rules in (cp.ingress, cp.egress) for rule in rules or ()]
        nets = tuple(dict.fromkeys(net for rule in rules for peer in rule.peers or () if peer.net is not None
                                   for net in (peer.net, *peer.excepts)))
        specs = [spec for rule in rules for spec in rule.ports or ()]
        ranges = tuple(sorted({(s.lo, s.hi) for s in specs if s.lo is not None}))
        named = any(s.name is not None for s in specs)
        selectors = tuple(dict.fromkeys(
            [cp.select for policies in self._by_ns.values() for cp in policies]
            + [peer.pod_sel for rule in rules for peer in rule.peers or () if peer.net is None]))
        if (nets, ranges, named, selectors) != (self._networks, self._port_ranges, self._named_ports,
                                                self._selectors):
            # The classes changed: no cached key means what it did.
            self._networks, self._port_ranges, self._named_ports = nets, ranges, named
            self._selectors = selectors
            bits = bytearray(65536)
            for lo, hi in ranges:
                bits[lo:hi + 1] = b"\x01" * (hi + 1 - lo)
            self._port_named = bytes(bits)
            self.clear_cache()

    def class_of(self, ep: Endpoint) -> int:
        """The class id of an end (see the module docstring): ends of one class get one verdict."""
        return self._class(ep)

    def key_classes(self) -> tuple[tuple, bytes]:
        """What the cache keys tell apart: the policies' CIDRs and the ports they name by number (a byte
        per port); a port named by name is one a destination pod declares."""
        return self._networks, self._port_named

    def decide_flow(self, src: Endpoint, dst: Endpoint, port: int, protocol: str, *,
                    explain: bool = True, side: str = BOTH) -> Decision:
        """Like `decide`, but an end that stands for several pods is judged on each of them,
        and denied if any would deny: a Service's backends (on the port kube-proxy sends the
        flow to) and the claimants of an ambiguous address (never a guess). `side` EGRESS or
        INGRESS: that direction alone decides (the other is judged on the other end's node)."""
        srcs = src.candidates if src.attribution == AMBIGUOUS and src.candidates else (src,)
        if dst.kind == SERVICE and dst.candidates:
            key = None
            if not explain and len(srcs) == 1 and not any(c.uid == src.uid for c in dst.candidates):
                # The verdict, held with the Service's endpoint (the store keeps one per address until a
                # change), so its id stays its own: the classes of the source and backends decide it.
                key = (self._class(src), id(dst), port, protocol, side)
                held = self._via_service.get(key)
                if held is not None:
                    return held[1]
            targets = [(c, backend_port(dst, c, port, protocol)) for c in dst.candidates]
            targets = [(c, p) for c, p in targets if p is not None] or [(dst, port)]
            if key is not None:
                if len(self._via_service) >= self._max_cache:
                    self._via_service.clear()
                decision = self._first_denying(srcs, targets, protocol, side)
                self._via_service[key] = (dst, decision)
                return decision
        elif dst.attribution == AMBIGUOUS and dst.candidates:
            targets = [(c, port) for c in dst.candidates]
        elif len(srcs) == 1:
            return on_side(self.decide(src, dst, port, protocol, explain=explain), side)
        else:
            targets = [(dst, port)]
        if not explain:
            return self._first_denying(srcs, targets, protocol, side)
        results = [(c, on_side(self.decide(s, c, p, protocol), side)) for s in srcs for c, p in targets]
        return combine_backends(dst, results)

    def _first_denying(self, srcs: Sequence[Endpoint], targets: list, protocol: str, side: str) -> Decision:
        """The verdict alone: the first denying (source, target) pair decides it."""
        for s in srcs:
            for c, p in targets:
                decision = on_side(self.decide(s, c, p, protocol, explain=False), side)
                if decision.verdict == DENY:
                    return decision
        return decision

    def _decide_cold(self, key: tuple, src: Endpoint, dst: Endpoint, port: int,
                     protocol: str) -> Decision:
        self.cold_decisions += 1
        dst_ports = dst.ports if dst.kind == POD else ()
        egress = self._side(EGRESS, subject=src, peer=dst, port=port, protocol=protocol,
                            dst_ports=dst_ports)
        ingress = self._side(INGRESS, subject=dst, peer=src, port=port, protocol=protocol,
                             dst_ports=dst_ports)
        verdict = ALLOW if egress.allowed and ingress.allowed or _loopback(src, dst) else DENY
        decision = Decision(verdict, egress, ingress, deciding_policies(verdict, egress, ingress))
        decision = _explained(decision, src, dst, port, protocol)
        if len(self._cache) >= self._max_cache:
            self.clear_cache()
        self._cache[key] = (decision, (src.ip, dst.ip, port))
        for ep in (src, dst):
            if ep.kind == POD:
                self._keys_by_ns[ep.namespace].add(key)
        return decision

    def _side(self, direction: str, *, subject: Endpoint, peer: Endpoint, port: int,
              protocol: str, dst_ports: tuple) -> SideDecision:
        side = EGRESS_SIDE if direction == EGRESS else INGRESS_SIDE
        if subject.kind != POD:
            return SideDecision(side, isolated=False, subject_is_pod=False)
        selected: list[str] = []
        allowed_by = None
        matcher = PeerMatcher(self.namespace_labels, peer)
        for cp in self._by_ns.get(subject.namespace, ()):
            rules = cp.ingress if direction == INGRESS else cp.egress
            if rules is None or not cp.select(subject.labels):
                continue
            selected.append(cp.key)
            if allowed_by is None:
                allowed_by = admit(cp, rules, matcher, port=port, protocol=protocol,
                                    dst_ports=dst_ports)
        return SideDecision(side, isolated=bool(selected), selected_by=tuple(selected),
                            allowed_by=allowed_by)

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        labels = self._ns_labels.get(name)
        if labels is None:
            ns = self._view.namespace(name)
            labels = _with_name_label(name, ns.labels if ns is not None else {})
            self._ns_labels[name] = labels
        return labels

    # -- changes --------------------------------------------------------------

    def on_change(self, kind: str, old, new) -> None:
        """Apply one watch event (old/new model objects, None on add/delete)."""
        obj = new if new is not None else old
        if obj is None:
            return
        if kind == "Pod":  # a changed pod is another class: its old class stays right for others
            if old is None or new is None or _pod_facts(old) != _pod_facts(new):
                self._pod_classes.pop(obj.uid, None)
        elif kind == "Namespace":
            labels = new.labels if new is not None else {}
            self._ns_labels[obj.name] = _with_name_label(obj.name, labels)
            if old is None or new is None or dict(old.labels) != dict(new.labels):
                self._invalidate(self._keys_by_ns.pop(obj.name, ()))
        elif kind == "NetworkPolicy":
            if old is not None and new is not None and old.spec == new.spec \
                    and (old.namespace, old.name) == (new.namespace, new.name):
                return
            if old is not None:
                self._cluster[old.namespace].pop(old.name, None)
                self._rebuild(old.namespace)
            if new is not None:
                self._cluster[new.namespace][new.name] = compile_policy(new)
                self._rebuild(new.namespace)
            for ns in {p.namespace for p in (old, new) if p is not None}:
                self._invalidate(self._keys_by_ns.pop(ns, ()))
            self._refresh_classes()

    def clear_cache(self) -> None:
        self._cache.clear()
        self._via_service.clear()
        self._keys_by_ns.clear()
        self._pod_classes.clear()
        self._address_classes.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def policies(self, namespace: str) -> tuple[str, ...]:
        """Names ("ns/name") of the effective policies of a namespace, sorted."""
        return tuple(cp.key for cp in self._by_ns.get(namespace, ()))

    def _invalidate(self, keys: Iterable[tuple]) -> None:
        self._via_service.clear()
        pop = self._cache.pop
        for key in keys:
            pop(key, None)

    def _rebuild(self, ns: str) -> None:
        merged = {**self._cluster.get(ns, {}), **self._extra.get(ns, {})}
        # Sorted so that explanations never depend on the order policies arrived in.
        self._by_ns[ns] = tuple(merged[name] for name in sorted(merged))


def _loopback(src: Endpoint, dst: Endpoint) -> bool:
    """As the upstream e2e model expects (AllowLoopback): a pod reaching its own IP never leaves
    its network namespace, so no policy applies."""
    return src.kind == POD and dst.kind == POD and src.uid is not None and src.uid == dst.uid


def _explained(decision: Decision, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Decision:
    return explained(decision, src, dst, port, protocol, loopback=_loopback(src, dst))


def _with_name_label(name: str, labels: Mapping[str, str]) -> Mapping[str, str]:
    return {**labels, NAMESPACE_NAME_LABEL: name}


def _pod_facts(pod: Pod) -> tuple:
    return (dict(pod.labels), tuple(pod.ports), pod.ips, pod.namespace,
            pod.phase in TERMINAL_PHASES, pod.host_network)
