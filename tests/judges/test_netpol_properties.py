"""Property tests of the invariants the netpol engine relies on (hypothesis).

Random policies over the e2e model (x/y/z × a/b/c): verdicts do not depend
on input order; adding a policy never turns an allow into a deny on a side
that was already isolated; deleting every policy allows everything; an
ipBlock whose except equals its cidr matches nothing; and a warm cache fed
with changes agrees with a freshly built engine.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import itertools
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.judges.netpol import NetpolEngine
from agent.model import ALLOW, DENY, Endpoint, Namespace, NetworkPolicy


def _memory_view_module():
    """This directory's conftest, loaded by path (works under any pytest import mode)."""
    spec = importlib.util.spec_from_file_location("netpol_memory_view", Path(__file__).with_name("conftest.py"))
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_view_module = sys.modules.get("netpol_memory_view") or _memory_view_module()
MemoryView, e2e_view = _view_module.MemoryView, _view_module.e2e_view

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REFS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
PROBES = [(80, "TCP"), (81, "UDP"), (80, "SCTP")]

selectors = st.sampled_from([
    {}, {"matchLabels": {"pod": "a"}}, {"matchLabels": {"pod": "b"}},
    {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "c"]}]},
    {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b"]}]},
    {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
    {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
])
ns_selectors = st.sampled_from([
    {}, {"matchLabels": {"ns": "y"}}, {"matchLabels": {"kubernetes.io/metadata.name": "z"}},
    {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
    {"matchLabels": {"team": "blue"}},
])
ip_blocks = st.sampled_from([
    {"cidr": "192.168.0.0/16"}, {"cidr": "192.168.1.0/24", "except": ["192.168.1.10/32"]},
    {"cidr": "192.168.2.11/32"}, {"cidr": "0.0.0.0/0", "except": ["192.168.3.0/24"]},
])
peers = st.one_of(
    st.builds(lambda s: {"podSelector": s}, selectors),
    st.builds(lambda n: {"namespaceSelector": n}, ns_selectors),
    st.builds(lambda s, n: {"podSelector": s, "namespaceSelector": n}, selectors, ns_selectors),
    st.builds(lambda b: {"ipBlock": b}, ip_blocks),
)
ports = st.sampled_from([
    {"port": 80}, {"port": 81, "protocol": "UDP"}, {"port": "serve-80-sctp", "protocol": "SCTP"},
    {"port": "serve-81-udp"}, {"port": 79, "endPort": 80}, {"protocol": "SCTP"}, {},
])
rules = st.fixed_dictionaries({}, optional={"peers": st.lists(peers, max_size=3),
                                            "ports": st.lists(ports, max_size=2)})
specs = st.builds(
    lambda sel, types, ing, eg: {
        "podSelector": sel,
        **({"policyTypes": types} if types else {}),
        "ingress": [_rule(r, "from") for r in ing],
        "egress": [_rule(r, "to") for r in eg]},
    selectors, st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
    st.lists(rules, max_size=2), st.lists(rules, max_size=2))
policies = st.lists(st.tuples(st.sampled_from("xyz"), specs), max_size=5).map(
    lambda items: [NetworkPolicy(ns, f"p{i}", spec) for i, (ns, spec) in enumerate(items)])


def _rule(r: dict, peer_field: str) -> dict:
    out = {}
    if "peers" in r:
        out[peer_field] = r["peers"]
    if "ports" in r:
        out["ports"] = r["ports"]
    return out


def view_with(pols, *, order=None) -> MemoryView:
    view = e2e_view()
    view.ns["y"] = Namespace("y", {"ns": "y", "team": "blue"})
    for p in pols:
        view.add_policy(p)
    if order is not None:
        view.pods = dict(reversed(list(view.pods.items())))
        view.ns = dict(reversed(list(view.ns.items())))
    return view


def verdicts(engine: NetpolEngine, view: MemoryView) -> dict:
    eps = {r: view.ep(r) for r in REFS}
    eps["ext"] = Endpoint(ip="192.168.3.7")
    return {(s, d, port, proto): engine.decide(eps[s], eps[d], port, proto)
            for s, d in itertools.product(eps, repeat=2) for port, proto in PROBES}


@PROPS
@given(policies, st.randoms())
def test_a_verdict_never_depends_on_the_order_of_policies_or_pods(pols, rnd):
    shuffled = list(pols)
    rnd.shuffle(shuffled)
    a, b = view_with(pols), view_with(shuffled, order="reversed")
    va, vb = verdicts(NetpolEngine(a), a), verdicts(NetpolEngine(b), b)
    assert {k: d.verdict for k, d in va.items()} == {k: d.verdict for k, d in vb.items()}
    assert va == vb  # explanations too: policies are kept sorted by name


@PROPS
@given(policies, st.tuples(st.sampled_from("xyz"), specs))
def test_adding_a_policy_never_denies_what_an_isolated_side_allowed(pols, extra):
    view = view_with(pols)
    before = verdicts(NetpolEngine(view), view)
    after = verdicts(NetpolEngine(view, extra_policies=[NetworkPolicy(extra[0], "added", extra[1])]), view)
    for key, b in before.items():
        a = after[key]
        for side in ("egress", "ingress"):
            sb, sa = getattr(b, side), getattr(a, side)
            if sb.isolated and sb.allowed:
                assert sa.allowed, (key, side, a.reasons)
        if b.egress.isolated and b.ingress.isolated and b.verdict == ALLOW:
            assert a.verdict == ALLOW


@PROPS
@given(policies)
def test_deleting_every_policy_allows_everything(pols):
    view = view_with(pols)
    engine = NetpolEngine(view)
    verdicts(engine, view)  # warm the cache first: deletion must invalidate it
    for p in pols:
        del view.netpols[(p.namespace, p.name)]
        engine.on_change("NetworkPolicy", p, None)
    assert {d.verdict for d in verdicts(engine, view).values()} == {ALLOW}


networks = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)))


@PROPS
@given(networks, st.integers(min_value=0), st.booleans())
def test_an_ip_block_whose_except_equals_its_cidr_matches_nothing(net, offset, host_bits):
    cidr = str(net)
    ip = str(net.network_address + offset % net.num_addresses)
    if host_bits and net.num_addresses > 1:
        cidr = f"{net.network_address + 1}/{net.prefixlen}"  # sloppy form, same block
    view = MemoryView()
    view.add_namespace("x")
    view.new_pod("x/a", "fd00::1" if net.version == 4 else "10.0.0.1")
    view.policy("x/egress", {"podSelector": {}, "policyTypes": ["Egress"],
                             "egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": [cidr]}}]}]})
    view.policy("x/ingress", {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": cidr, "except": [cidr]}}]}]})
    engine = NetpolEngine(view)
    pod = view.ep("x/a")
    assert engine.decide(pod, Endpoint(ip=ip), 80, "TCP").verdict == DENY
    assert engine.decide(Endpoint(ip=ip), pod, 80, "TCP").verdict == DENY


changes = st.lists(st.one_of(
    st.tuples(st.just("policy"), st.sampled_from("xyz"), st.sampled_from(["p0", "p1", "p2"]),
              st.one_of(st.none(), specs)),
    st.tuples(st.just("pod"), st.sampled_from(REFS), st.sampled_from(["a", "b", "c", "d"])),
    st.tuples(st.just("ns"), st.sampled_from("xyz"), st.sampled_from([{}, {"team": "blue"}])),
), min_size=1, max_size=6)


@PROPS
@given(policies, changes)
def test_a_warm_cache_fed_with_changes_agrees_with_a_fresh_engine(pols, ops):
    view = view_with(pols)
    engine = NetpolEngine(view)
    verdicts(engine, view)
    for op in ops:
        if op[0] == "policy":
            _, ns, name, spec = op
            old = view.netpols.pop((ns, name), None)
            new = view.add_policy(NetworkPolicy(ns, name, spec)) if spec is not None else None
            engine.on_change("NetworkPolicy", old, new)
        elif op[0] == "pod":
            old = view.pod(op[1])
            new = view.add_pod(dataclasses.replace(old, labels={"pod": op[2]}))
            engine.on_change("Pod", old, new)
        else:
            old = view.ns[op[1]]
            new = view.ns[op[1]] = Namespace(op[1], {"ns": op[1], **op[2]})
            engine.on_change("Namespace", old, new)
        warm, fresh = verdicts(engine, view), verdicts(NetpolEngine(view), view)
        assert warm == fresh
