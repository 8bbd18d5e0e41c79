"""Observed flows -> one ingress and one egress NetworkPolicy per workload (`suggest`).

A workload is selected by its pod template's labels (the labels its pods share, minus
the per-pod ones a controller adds); workloads with the same labels share a policy,
since no selector can tell them apart. Each policy admits exactly the peers seen on
the ports seen: pods by namespace + workload labels, other addresses as ipBlocks
merged no wider than `max_prefix`. Egress always keeps DNS to the cluster DNS pods,
and their own ingress is never narrowed. Flows the current policies deny, and TCP or
SCTP attempts never answered, are not admitted; a direction that cannot admit every
flow it saw without widening (a peer with no labels) gets no policy, and says why.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from agent.inventory.store import Store
from agent.judges.netpol import NetpolEngine, compile_policy, describe, policy_subject
from agent.model import (
    AMBIGUOUS, DENY, NAMESPACE_NAME_LABEL, POD, SCTP, SERVICE, TCP, UDP, Endpoint, Pod, backend_port)
from agent.suggest.observe import Observed

INGRESS, EGRESS = "Ingress", "Egress"
# Labels a controller sets per pod or per revision: a selector keeping them would miss the next pod.
PER_POD_LABELS = frozenset((
    "pod-template-hash", "controller-revision-hash", "pod-template-generation", "controller-uid", "job-name",
    "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index", "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name", "batch.kubernetes.io/job-completion-index"))
DNS_LABEL = ("k8s-app", "kube-dns")  # how kubeadm, kind, GKE, EKS and AKS label the cluster DNS pods
DNS_PORTS = ((UDP, 53), (TCP, 53))
SUGGESTED_LABEL = "flowwarden.io/suggested"
CONNECTED = (TCP, SCTP)  # protocols with a handshake: an attempt never answered is not admitted


@dataclass
class Usage:
    """What a rule's port admits of the observed traffic (for the policy's comments)."""
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")

    def add(self, o: Observed) -> None:
        self.count += 1
        self.first, self.last = min(self.first, o.first), max(self.last, o.last)


@dataclass
class Rule:
    peer: dict
    seen: set[str] = field(default_factory=set)  # the ends it was made for, described
    ports: dict[tuple[str, int], list] = field(default_factory=dict)  # (proto, number) -> [name, Usage]
    always: str | None = None  # why it is there even if unseen (DNS)

    def port_list(self) -> list[dict]:
        return [_port(number, protocol, name) for (protocol, number), (name, _) in sorted(self.ports.items())]

    def add(self, protocol: str, number: int, name: str | None, o: Observed | None) -> Usage:
        entry = self.ports.setdefault((protocol, number), [name, Usage()])
        if o is not None:
            entry[1].add(o)
        return entry[1]


@dataclass
class Suggestion:
    namespace: str
    name: str
    direction: str
    workloads: tuple[str, ...]  # "Deployment/frontend", ...
    selector: dict[str, str]
    rules: list[Rule]

    def policy(self) -> dict:
        key = "ingress" if self.direction == INGRESS else "egress"
        peer_key = "from" if self.direction == INGRESS else "to"
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {SUGGESTED_LABEL: "true"}},
                "spec": {"podSelector": {"matchLabels": dict(sorted(self.selector.items()))},
                         "policyTypes": [self.direction],
                         key: [{peer_key: [r.peer], "ports": r.port_list()} for r in self.rules]}}


@dataclass
class Suggestions:
    policies: list[Suggestion]
    skipped: dict[tuple[str, str], int]  # (what, why) -> flows not admitted
    notes: list[str]  # directions left without a policy, and why


def _port(number: int, protocol: str, name: str | None) -> dict:
    return {"port": name or number, "protocol": protocol}


def template_labels(pod: Pod) -> dict[str, str]:
    return {k: v for k, v in pod.labels.items() if k not in PER_POD_LABELS}


class Workloads:
    """Pods of the cluster file by workload, and each workload's selector (shared template labels)."""

    def __init__(self, store: Store):
        self.pods = list(store.objects["Pod"].values())
        self.by_uid = {p.uid: p for p in self.pods}
        labels: dict[tuple[str, str], dict[str, str]] = {}
        for p in self.pods:
            key = self.key_of_pod(p)
            mine = template_labels(p)
            labels[key] = mine if key not in labels else {k: v for k, v in labels[key].items() if mine.get(k) == v}
        self.selector = labels

    @staticmethod
    def key_of_pod(p: Pod) -> tuple[str, str]:
        return p.namespace, p.workload or f"Pod/{p.name}"

    def key(self, ep: Endpoint) -> tuple[str, str]:
        pod = self.by_uid.get(ep.uid)
        return self.key_of_pod(pod) if pod is not None else (ep.namespace, ep.workload or f"Pod/{ep.pod}")

    def dns(self) -> tuple[dict, set[tuple[str, str]], str]:
        """The cluster DNS pods as a peer, their workloads, and how they were found."""
        k, v = DNS_LABEL
        found = sorted({self.key_of_pod(p) for p in self.pods if p.labels.get(k) == v})
        namespaces = sorted({ns for ns, _ in found}) or ["kube-system"]
        how = "the pods labelled k8s-app=kube-dns" if found else \
            "no pod is labelled k8s-app=kube-dns in the cluster file: the usual kube-system k8s-app=kube-dns"
        peer = {"namespaceSelector": {"matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]}
            if len(namespaces) > 1 else {"matchLabels": {NAMESPACE_NAME_LABEL: namespaces[0]}},
            "podSelector": {"matchLabels": {k: v}}}
        return peer, set(found), how


def suggest(observed: Sequence[Observed], store: Store, *, max_prefix: tuple[int, int] = (24, 64),
            ingress_only: bool = False, namespaces: Iterable[str] = ()) -> Suggestions:
    workloads = Workloads(store)
    before = NetpolEngine(store)
    dns_peer, dns_workloads, dns_how = workloads.dns()
    only = frozenset(namespaces)
    # (namespace, selector) -> direction -> peer key -> Rule; ipBlock addresses apart until merged.
    rules: dict[tuple, dict[str, dict[str, Rule]]] = defaultdict(lambda: {INGRESS: {}, EGRESS: {}})
    addresses: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))  # (subject, dir) -> ...
    names: dict[tuple, set[str]] = defaultdict(set)
    blocked: dict[tuple[tuple, str], str] = {}
    skipped: dict[tuple[str, str], int] = defaultdict(int)

    def subject(ep: Endpoint) -> tuple:
        ns, wl = workloads.key(ep)
        sel = workloads.selector.get((ns, wl), dict(ep.labels))
        names[(ns, frozenset(sel.items()))].add(wl)
        return ns, frozenset(sel.items())

    for o in observed:
        if not has_pod(o):
            continue  # no pod at either end: nothing a NetworkPolicy selects
        why = refusal(o, before)
        if why is not None:
            skipped[(flow_text(o), why)] += 1
            continue
        for s, d, port in pairs(o):
            if s.kind == POD and d.kind == POD and s.uid == d.uid:
                continue  # a pod reaching itself is never subject to policy
            name = next((cp.name for cp in d.ports if cp.port == port and cp.protocol == o.protocol and cp.name),
                        None) if d.kind == POD else None
            for subj, peer, direction in ((s, d, EGRESS), (d, s, INGRESS)):
                if subj.kind != POD or not _subject_pod(workloads, subj):
                    continue
                if direction == INGRESS and workloads.key(subj) in dns_workloads:
                    continue  # cluster DNS: every pod must still resolve
                key = subject(subj)
                rules[key]  # a workload seen gets both directions, also when one is blocked
                if not key[1]:
                    for d in (INGRESS, EGRESS):
                        blocked[(key, d)] = (f"{describe(subj)} has no labels: a policy for it would select "
                                             f"every pod of {subj.namespace}")
                    continue
                if peer.kind == POD:
                    peer_ns, peer_wl = workloads.key(peer)
                    sel = workloads.selector.get((peer_ns, peer_wl), dict(peer.labels))
                    if not sel:
                        blocked[(key, direction)] = (f"{describe(peer)} ({peer_wl}) has no labels: a selector "
                                                     f"for it would admit every pod of {peer_ns}")
                        continue
                    peer_obj = dns_peer if (peer_ns, peer_wl) in dns_workloads else {
                        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: peer_ns}},
                        "podSelector": {"matchLabels": dict(sorted(sel.items()))}}
                    rule = rules[key][direction].setdefault(_peer_key(peer_obj), Rule(peer_obj))
                    rule.seen.add(f"{peer_ns}/{peer_wl}")
                    rule.add(o.protocol, port, None if peer_obj is dns_peer else name, o)
                else:
                    addresses[(key, direction)][(o.protocol, port, name)].append((peer, o))
    policies = _policies(rules, addresses, names=names, blocked=blocked, store=store, max_prefix=max_prefix,
                         dns=(dns_peer, dns_how), ingress_only=ingress_only, only=only)
    notes = [f"{ns}: {', '.join(sorted(names[(ns, sel)]))}: no {direction.lower()} policy: {why}"
             for ((ns, sel), direction), why in sorted(blocked.items(), key=lambda kv: (kv[0][0][0], kv[1], kv[0][1]))
             if not only or ns in only]
    return Suggestions(policies, dict(skipped), notes)


def has_pod(o: Observed) -> bool:
    return POD in (o.src.kind, o.dst.kind) or bool(o.src.candidates or o.dst.candidates)


def flow_text(o: Observed) -> str:
    return f"{describe(o.src)} -> {describe(o.dst)} {o.port}/{o.protocol}"


def refusal(o: Observed, before: NetpolEngine) -> str | None:
    """Why an observed flow is not admitted by the suggestions, or None when it is."""
    if o.unknown_pod:
        return f"{o.unknown_pod} is not in the cluster file: its labels are unknown"
    if o.protocol in CONNECTED and not o.established:
        return "never established (refused or unanswered): an attempt is not admitted"
    if before.decide_flow(o.src, o.dst, o.port, o.protocol, explain=False).verdict == DENY:
        return "denied by the current policies: a violation, not traffic to admit"
    return None


def _subject_pod(workloads: Workloads, ep: Endpoint) -> bool:
    pod = workloads.by_uid.get(ep.uid)
    return pod is None or policy_subject(pod)


def pairs(o: Observed) -> list[tuple[Endpoint, Endpoint, int]]:
    """The (source, destination, port) pairs the engine judges for a flow: a Service's backends on
    the port kube-proxy sends to, an ambiguous address's claimants."""
    srcs = o.src.candidates if o.src.attribution == AMBIGUOUS and o.src.candidates else (o.src,)
    if o.dst.kind == SERVICE and o.dst.candidates:
        dsts = [(c, backend_port(o.dst, c, o.port, o.protocol)) for c in o.dst.candidates]
        dsts = [(c, p) for c, p in dsts if p is not None] or [(o.dst, o.port)]
    elif o.dst.attribution == AMBIGUOUS and o.dst.candidates:
        dsts = [(c, o.port) for c in o.dst.candidates]
    else:
        dsts = [(o.dst, o.port)]
    return [(s, d, p) for s in srcs for d, p in dsts]


def _peer_key(peer: dict) -> tuple:
    if "ipBlock" in peer:
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        return (1, net.version, int(net.network_address), net.prefixlen)
    ns = peer["namespaceSelector"]
    return (0, repr(sorted(ns.get("matchLabels", {}).items())), repr(ns.get("matchExpressions")),
            repr(sorted(peer["podSelector"]["matchLabels"].items())))


def merge_addresses(addresses: Iterable[str], *, max_prefix: tuple[int, int] = (24, 64)) -> list:
    """The fewest prefixes, none wider than max_prefix (IPv4, IPv6), holding every address: one per
    max_prefix network that holds any, each the narrowest that holds its addresses."""
    groups: dict = defaultdict(list)
    for a in addresses:
        ip = ipaddress.ip_address(a)
        cap = max_prefix[0] if ip.version == 4 else max_prefix[1]
        groups[ipaddress.ip_network((ip, cap), strict=False)].append(ip)
    merged = []
    for ips in groups.values():
        lo, hi = min(ips), max(ips)
        length = lo.max_prefixlen - (int(lo) ^ int(hi)).bit_length()
        merged.append(ipaddress.ip_network((lo, length), strict=False))
    return sorted(merged, key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def _policies(rules, addresses, *, names, blocked, store, max_prefix, dns, ingress_only, only) -> list[Suggestion]:
    for (key, direction), by_port in addresses.items():
        for (protocol, port, name), seen in by_port.items():
            for net in merge_addresses({ep.ip for ep, _ in seen}, max_prefix=max_prefix):
                peer = {"ipBlock": {"cidr": str(net)}}
                rule = rules[key][direction].setdefault(_peer_key(peer), Rule(peer))
                for ep, o in seen:
                    if ipaddress.ip_address(ep.ip) in net:
                        rule.seen.add(describe(ep))
                        rule.add(protocol, port, name, o)
    out: list[Suggestion] = []
    for (ns, sel) in sorted(rules, key=lambda k: (k[0], sorted(k[1]))):
        if only and ns not in only:
            continue
        existing = {p.name for p in store.policies(ns)}
        covered = _covered(store, ns, dict(sel))
        for direction in (INGRESS, EGRESS):
            if (direction == EGRESS and ingress_only) or ((ns, sel), direction) in blocked \
                    or direction in covered:
                continue
            if direction == INGRESS and not rules[(ns, sel)][INGRESS] and _is_dns(dict(sel)):
                continue
            by_peer = rules[(ns, sel)][direction]
            if direction == EGRESS:
                peer, how = dns
                rule = by_peer.setdefault(_peer_key(peer), Rule(peer))
                rule.always = f"cluster DNS, kept even if unseen ({how})"
                for protocol, port in DNS_PORTS:
                    rule.add(protocol, port, None, None)
            wl = sorted(names[(ns, sel)])
            out.append(Suggestion(ns, _name(wl, direction, existing, taken={s.name for s in out if s.namespace == ns}),
                                  direction, tuple(wl), dict(sel), [by_peer[k] for k in sorted(by_peer)]))
    return out


def _is_dns(selector: dict) -> bool:
    return selector.get(DNS_LABEL[0]) == DNS_LABEL[1]


def _covered(store: Store, ns: str, selector: dict) -> set[str]:
    """Directions in which current policies already select every pod of this selector (not narrowed again)."""
    pods = [p for p in store.objects["Pod"].values()
            if p.namespace == ns and all(p.labels.get(k) == v for k, v in selector.items())]
    compiled = [compile_policy(p) for p in store.policies(ns)]
    out = set()
    for direction, attr in ((INGRESS, "ingress"), (EGRESS, "egress")):
        if pods and all(any(getattr(cp, attr) is not None and cp.select(p.labels) for cp in compiled) for p in pods):
            out.add(direction)
    return out


def _name(workloads: list[str], direction: str, existing: set[str], *, taken: set[str]) -> str:
    base = workloads[0].split("/", 1)[1]
    name = f"{base}-{direction.lower()}"
    if name in taken:
        name = f"{base}-{workloads[0].split('/', 1)[0].lower()}-{direction.lower()}"
    return name + "-suggested" if name in existing else name
