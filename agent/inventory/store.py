"""The inventory: the cluster objects judges need, and who owned each IP when.

Fed by the snapshot loader (`--cluster FILE`) or the live watch; read by judges
through the `ClusterView` protocol. An address is owned over time intervals: a
pod owns its IPs from its creation until it is deleted or reaches a terminal
phase, so a flow is attributed by its own timestamp, and a new pod reusing an IP
gets only the flows after it appeared. Ended claims are kept for `grace` seconds
for late packets, then dropped.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any, Callable, Iterable

from agent.model import (
    AMBIGUOUS, NODE, POD, REQUIRE_TLS_ANNOTATION, SERVICE, TERMINAL_PHASES, Endpoint, EndpointSlice, Namespace,
    NetworkPolicy, Node, Pod, Service,
)
from agent.inventory.objects import KINDS

INF = math.inf
log = logging.getLogger("flowwarden.inventory")
Listener = Callable[[str, Any, Any], None]


class Claim:
    """`owner` holds `ip` over [start, end)."""
    __slots__ = ("start", "end", "owner", "endpoint")

    def __init__(self, start: float, owner: Any, endpoint: Endpoint):
        self.start, self.end, self.owner, self.endpoint = start, INF, owner, endpoint


def _key(kind: str, obj: Any) -> Any:
    if kind == "Pod":
        return obj.uid or (obj.namespace, obj.name)
    if kind in ("Namespace", "Node"):
        return obj.name
    return (obj.namespace, obj.name)


class Store:
    """In-memory cluster state; implements `agent.model.ClusterView`.

    `history=False` (a snapshot file) makes every claim timeless: a snapshot says who
    owns what, not since when.
    """

    def __init__(self, *, grace: float = 120.0, history: bool = True,
                 clock: Callable[[], float] = time.time):
        self.grace, self.history, self.clock = grace, history, clock
        self.objects: dict[str, dict[Any, Any]] = {kind: {} for kind in KINDS}
        self._synced: set[str] = set()
        self._claims: dict[str, list[Claim]] = defaultdict(list)
        self._ended: list[tuple[float, str, Claim]] = []
        self._policies: dict[str, dict[str, NetworkPolicy]] = defaultdict(dict)
        self._services_by_pod: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(dict)
        self._backends: dict[tuple[str, str], dict[str, tuple[str, ...]]] = defaultdict(dict)
        self._backend_lists: dict[tuple[str, str], list[str]] = {}  # service_backends, until its slices change
        # A Service address -> (since, its endpoint with backends): the same for every `at` >= since, until a change.
        self._service_endpoints: dict[str, tuple[float, Endpoint]] = {}
        # (node address, port, protocol) -> the hostNetwork pod declaring that port: its node's address is its own
        self._host_ports: dict[tuple[str, int, str], Endpoint] = {}
        self._listeners: list[Listener] = []
        self.listener_errors = 0

    # --- feeding ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """`listener(kind, old, new)` is called after every change (None for add/delete)."""
        self._listeners.append(listener)

    def apply(self, kind: str, event: str, obj: Any, *, at: float | None = None) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        at = self.clock() if at is None else at
        self._service_endpoints.clear()
        key = _key(kind, obj)
        old = self.objects[kind].get(key)
        if event == "DELETED":
            if old is None:
                return
            del self.objects[kind][key]
            new = None
        else:
            self.objects[kind][key] = new = obj
        getattr(self, "_index_" + kind)(old, new, at)
        for listener in self._listeners:
            try:
                listener(kind, old, new)
            except Exception:  # one listener's bug must not stop the inventory or the others
                self.listener_errors += 1
                if self.listener_errors == 1:
                    log.exception("inventory listener failed on %s; later failures are only counted", kind)

    def replace(self, kind: str, objs: Iterable[Any], *, at: float | None = None) -> None:
        """A full list (first sync or relist after 410): apply the difference, then mark synced."""
        fresh = {_key(kind, o): o for o in objs}
        for key, old in list(self.objects[kind].items()):
            if key not in fresh:
                self.apply(kind, "DELETED", old, at=at)
        for obj in fresh.values():
            if self.objects[kind].get(_key(kind, obj)) != obj:
                self.apply(kind, "MODIFIED", obj, at=at)
        self._synced.add(kind)

    def expire(self, now: float | None = None) -> int:
        """Drop claims that ended more than `grace` seconds ago; returns how many."""
        now = self.clock() if now is None else now
        self._service_endpoints.clear()
        keep, dropped = [], 0
        for ended_at, ip, claim in self._ended:
            if ended_at + self.grace <= now:
                claims = self._claims[ip]
                if claim in claims:
                    claims.remove(claim)
                if not claims:
                    del self._claims[ip]
                dropped += 1
            else:
                keep.append((ended_at, ip, claim))
        self._ended = keep
        return dropped

    # --- ClusterView -------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._synced.issuperset(KINDS)

    def synced_kinds(self) -> frozenset[str]:
        return frozenset(self._synced)

    def endpoint(self, ip: str, at: float) -> Endpoint:
        cached = self._service_endpoints.get(ip)
        if cached is not None and at >= cached[0]:
            return cached[1]
        claims = self._claims.get(ip)
        if not claims:
            return Endpoint(ip)
        live = [c.endpoint for c in claims if c.start <= at < c.end]
        if len(live) == 1:
            found = live[0]
            if found.kind == SERVICE:  # backends as they are at the flow's time
                backends = self.service_backends(found.namespace, found.service)
                found = replace(found, candidates=tuple(self.endpoint(a, at) for a in backends))
                since = max([self._since(ip), *map(self._since, backends)])
                if at >= since:
                    self._service_endpoints[ip] = (since, found)
            return found
        if not live:
            return Endpoint(ip)
        pods = [e for e in live if e.kind == POD]
        if len(pods) > 1:  # two live pods claim one IP: never guess
            return Endpoint(ip, kind=POD, attribution=AMBIGUOUS, candidates=tuple(pods))
        return pods[0] if pods else live[0]

    def host_port(self, ip: str, port: int, protocol: str) -> Endpoint | None:
        """The hostNetwork pod that declares `port` on the node address `ip` (kind NODE: policies never
        select it), None when none does: then the address is the node's."""
        return self._host_ports.get((ip, port, protocol))

    def address_windows(self) -> dict[str, float]:
        """Each claimed address -> the time from which `endpoint(ip, at)` is the same for every later `at`
        (until the next change): its last claim's start or end, and, for a Service, its backends' too."""
        since = {ip: self._since(ip) for ip in self._claims}
        for ip, claims in self._claims.items():
            for c in claims:
                if c.end == INF and c.endpoint.kind == SERVICE:
                    for backend in self.service_backends(c.endpoint.namespace, c.endpoint.service):
                        since[ip] = max(since[ip], since.get(backend, -INF))
        return since

    def _since(self, ip: str) -> float:
        """From when the claims of `ip` stay as they are: its last claim's start or end."""
        return max((c.start if c.end == INF else c.end for c in self._claims.get(ip, ())), default=-INF)

    def declared_ports(self) -> set[int]:
        """Every port a Service exposes or a pod's container declares (named ports resolve to these), and
        every number in a flowwarden.io/require-tls annotation (TLS may be required on those alone)."""
        annotated = [o.annotations.get(REQUIRE_TLS_ANNOTATION) for kind in ("Pod", "Service", "Namespace")
                     for o in self.objects[kind].values()]
        return ({p.port for svc in self.objects["Service"].values() for p in svc.ports}
                | {p.port for pod in self.objects["Pod"].values() for p in pod.ports}
                | {int(n) for value in annotated if value for n in re.findall(r"\d+", value) if int(n) < 65536})

    def namespace(self, name: str) -> Namespace | None:
        return self.objects["Namespace"].get(name)

    def namespaces(self) -> Iterable[Namespace]:
        return self.objects["Namespace"].values()

    def nodes(self) -> Iterable[Node]:
        return self.objects["Node"].values()

    def services(self) -> Iterable[Service]:
        return self.objects["Service"].values()

    def policies(self, namespace: str) -> list[NetworkPolicy]:
        return list(self._policies.get(namespace, {}).values())

    def services_for_pod(self, uid: str) -> list[Service]:
        services = self.objects["Service"]
        return [services[k] for k in sorted(self._services_by_pod.get(uid, {})) if k in services]

    def service_backends(self, namespace: str, name: str) -> list[str]:
        """The addresses of a Service's backends, sorted (made again only when its slices change)."""
        backends = self._backend_lists.get((namespace, name))
        if backends is None:
            slices = self._backends.get((namespace, name), {})
            backends = self._backend_lists[(namespace, name)] = sorted(
                {a for addresses in slices.values() for a in addresses})
        return backends

    def get(self, kind: str, obj: Any) -> Any:
        """The stored object with the same identity as `obj` (same uid, or namespace and name)."""
        return self.objects[kind].get(_key(kind, obj))

    def counts(self) -> dict[str, int]:
        return {kind: len(objs) for kind, objs in self.objects.items()}

    # --- indexes, one per kind ---------------------------------------------------
    def _claim(self, ip: str, owner: Any, endpoint: Endpoint, start: float) -> None:
        self._claims[ip].append(Claim(start if self.history else -INF, owner, endpoint))

    def _release(self, owner: Any, ips: Iterable[str], at: float) -> None:
        for ip in ips:
            for claim in self._claims.get(ip, ()):
                if claim.owner is owner and claim.end == INF:
                    self._end(claim, ip, at)

    def _end(self, claim: Claim, ip: str, at: float) -> None:
        # A claim ended before it began never owned anything: it goes at the next expire.
        claim.end = max(at, claim.start) if self.history else -INF
        self._ended.append((claim.end, ip, claim))

    def _index_Pod(self, old: Pod | None, new: Pod | None, at: float) -> None:
        for pod, keep in ((old, False), (new, True)):
            if pod is not None and pod.host_network and (keep is False or pod.phase not in TERMINAL_PHASES):
                for ip in pod.ips:
                    for cp in pod.ports:
                        if keep:
                            self._host_ports[(ip, cp.port, cp.protocol)] = Endpoint(
                                ip, kind=NODE, namespace=pod.namespace, pod=pod.name, uid=pod.uid, node=pod.node,
                                workload=pod.workload, ports=pod.ports)
                        else:
                            self._host_ports.pop((ip, cp.port, cp.protocol), None)
        live = new is not None and new.phase not in TERMINAL_PHASES
        endpoints = {ip: self._pod_endpoint(new, ip) for ip in new.ips} if live else {}
        if old is not None:
            for ip in old.ips:
                for claim in self._claims.get(ip, ()):
                    if claim.owner is old and claim.end == INF:
                        if ip in endpoints:  # same pod, same IP: the claim goes on
                            claim.owner, claim.endpoint = new, endpoints.pop(ip)
                        else:
                            self._end(claim, ip, at)
        start = min(at, new.created) if live and new.created is not None else at
        for ip, endpoint in endpoints.items():
            # Not before the previous owner let go: a pod is often created while the one
            # whose IP it will get is still terminating.
            released = max((c.end for c in self._claims.get(ip, ()) if c.end != INF), default=-INF)
            self._claim(ip, new, endpoint, max(start, min(released, at)))

    @staticmethod
    def _pod_endpoint(pod: Pod, ip: str) -> Endpoint:
        if pod.host_network:  # hostNetwork pods are the node, for policies and events
            return Endpoint(ip, kind=NODE, node=pod.node)
        return Endpoint(ip, kind=POD, namespace=pod.namespace, pod=pod.name, uid=pod.uid,
                        node=pod.node, workload=pod.workload, labels=pod.labels,
                        ports=pod.ports, annotations=pod.annotations)

    def _index_Node(self, old: Node | None, new: Node | None, at: float) -> None:
        if old is not None:
            self._release(old, old.internal_ips, at)
        if new is not None:
            for ip in new.internal_ips:
                self._claim(ip, new, Endpoint(ip, kind=NODE, node=new.name), -INF)

    def _index_Service(self, old: Service | None, new: Service | None, at: float) -> None:
        if old is not None:
            self._release(old, old.cluster_ips, at)
        if new is not None:
            for ip in new.cluster_ips:
                endpoint = Endpoint(ip, kind=SERVICE, namespace=new.namespace, service=new.name,
                                    annotations=new.annotations, service_ports=new.ports)
                self._claim(ip, new, endpoint, -INF)

    def _index_EndpointSlice(self, old: EndpointSlice | None, new: EndpointSlice | None, at: float) -> None:
        # A Service has several slices (per address family, or sharded): a pod belongs to a
        # Service while any of its slices lists it, so both indexes count per slice.
        for slice_, add in ((old, False), (new, True)):
            if slice_ is None or slice_.service is None:
                continue
            service = (slice_.namespace, slice_.service)
            for uid in slice_.pod_uids:
                slices = self._services_by_pod[uid].setdefault(service, set())
                (slices.add if add else slices.discard)(slice_.name)
                if not slices:
                    del self._services_by_pod[uid][service]
                    if not self._services_by_pod[uid]:
                        del self._services_by_pod[uid]
            self._backend_lists.pop(service, None)
            backends = self._backends[service]
            if add:
                backends[slice_.name] = slice_.addresses
            else:
                backends.pop(slice_.name, None)
                if not backends:
                    del self._backends[service]

    def _index_Namespace(self, old: Namespace | None, new: Namespace | None, at: float) -> None:
        pass  # read directly by the judges

    def _index_NetworkPolicy(self, old: NetworkPolicy | None, new: NetworkPolicy | None, at: float) -> None:
        if old is not None:
            self._policies[old.namespace].pop(old.name, None)
        if new is not None:
            self._policies[new.namespace][new.name] = new
