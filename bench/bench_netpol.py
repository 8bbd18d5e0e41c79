"""Benchmark of the NetworkPolicy engine (run by `make bench`, not a timed test).

A deterministic cluster of 10,000 pods in 100 namespaces with 1,000 policies
(default denies, label and namespace selectors, ipBlocks, named ports,
endPort ranges), then 1,000,000 verdicts drawn with realistic repetition
(Zipf-like over 20,000 distinct src/dst/port tuples, as service traffic is).
Reports the compile time of the engine, cold verdicts/s (every distinct tuple
decided once on a fresh engine), cached verdicts/s (the 1,000,000 lookups on a
warm engine) and a mixed run (the stream on a fresh engine).

    python bench/bench_netpol.py [--pods N] [--policies N] [--flows N]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.judges.netpol import NetpolEngine  # noqa: E402
from agent.model import ContainerPort, Endpoint, Namespace, NetworkPolicy  # noqa: E402

APPS = ("web", "api", "db", "cache", "queue", "worker", "auth", "search", "mail", "metrics")
PORTS = {"web": 8080, "api": 9000, "db": 5432, "cache": 6379, "queue": 5672, "worker": 7000,
         "auth": 8443, "search": 9200, "mail": 25, "metrics": 9090}


class BenchView:
    """Just enough of model.ClusterView for the engine."""
    synced = True

    def __init__(self, namespaces, policies):
        self._ns = {n.name: n for n in namespaces}
        self._policies = policies

    def namespace(self, name):
        return self._ns.get(name)

    def namespaces(self):
        return list(self._ns.values())

    def policies(self, namespace):
        return self._policies.get(namespace, [])


def build_cluster(n_pods: int, n_policies: int, rnd: random.Random):
    n_ns = max(1, n_pods // 100)
    namespaces = [Namespace(f"ns{i}", {"team": f"t{i % 10}", "env": ("prod", "dev")[i % 2]})
                  for i in range(n_ns)]
    pods = []
    for i in range(n_pods):
        ns = namespaces[i % n_ns].name
        app = APPS[(i // n_ns) % len(APPS)]
        ports = (ContainerPort(PORTS[app], "TCP", "http" if app in ("web", "api") else app[:15]),
                 ContainerPort(9090, "TCP", "metrics"))
        pods.append(Endpoint(ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", kind="pod",
                             namespace=ns, pod=f"{app}-{i}", uid=f"uid-{i}",
                             labels={"app": app, "tier": str(i % 3)}, ports=ports))
    policies: dict[str, list[NetworkPolicy]] = {}
    for j in range(n_policies):
        ns = namespaces[j % n_ns].name
        policies.setdefault(ns, []).append(NetworkPolicy(ns, f"pol-{j}", policy_spec(j, rnd)))
    return namespaces, pods, policies


def policy_spec(j: int, rnd: random.Random) -> dict:
    app = APPS[j % len(APPS)]
    kind = j % 10
    if kind == 0:
        return {"podSelector": {}, "policyTypes": ["Ingress"]}
    if kind == 1:
        return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {}}]},
            {"ports": [{"port": 53, "protocol": "UDP"}]}]}
    if kind == 2:
        return {"podSelector": {"matchLabels": {"app": app}}, "egress": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.200.0/24"]}}],
             "ports": [{"port": 30000, "endPort": 32767}]}]}
    src = APPS[rnd.randrange(len(APPS))]
    peer = {"podSelector": {"matchLabels": {"app": src}}}
    if kind % 2:
        peer["namespaceSelector"] = {"matchExpressions": [
            {"key": "team", "operator": "In", "values": [f"t{rnd.randrange(10)}", f"t{rnd.randrange(10)}"]}]}
    port = {"port": "http"} if app in ("web", "api") else {"port": PORTS[app]}
    return {"podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [peer, {"podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["2"]}]}}], "ports": [port]}]}


def flow_stream(pods, n_flows: int, rnd: random.Random, *, distinct: int = 20_000):
    externals = [Endpoint(ip=f"203.0.113.{i}") for i in range(1, 50)]
    pool = []
    for _ in range(distinct):
        src = rnd.choice(pods)
        dst = rnd.choice(externals) if rnd.random() < 0.05 else rnd.choice(pods)
        port = dst.ports[0].port if dst.ports else 443
        pool.append((src, dst, port, "TCP"))
    # Zipf-like: a few conversations make most of the traffic.
    weights = [1.0 / (k + 1) for k in range(len(pool))]
    return pool, rnd.choices(pool, weights=weights, k=n_flows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=1_000)
    ap.add_argument("--flows", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    rnd = random.Random(20240601)
    namespaces, pods, policies = build_cluster(args.pods, args.policies, rnd)
    view = BenchView(namespaces, policies)
    pool, stream = flow_stream(pods, args.flows, rnd)

    t0 = time.perf_counter()
    engine = NetpolEngine(view)
    compile_s = time.perf_counter() - t0

    decide = engine.decide
    t0 = time.perf_counter()
    for src, dst, port, proto in pool:
        decide(src, dst, port, proto)
    cold_s = time.perf_counter() - t0
    denied = sum(decide(*f).verdict == "deny" for f in pool)

    t0 = time.perf_counter()
    for src, dst, port, proto in stream:
        decide(src, dst, port, proto)
    cached_s = time.perf_counter() - t0

    fresh = NetpolEngine(view)
    t0 = time.perf_counter()
    for src, dst, port, proto in stream:
        fresh.decide(src, dst, port, proto)
    mixed_s = time.perf_counter() - t0

    print(f"cluster: {len(pods)} pods, {len(namespaces)} namespaces, "
          f"{sum(map(len, policies.values()))} policies")
    print(f"compile: {compile_s:.3f} s")
    print(f"cold:    {len(pool) / cold_s:,.0f} verdicts/s ({len(pool)} distinct, {denied} denied)")
    print(f"cached:  {len(stream) / cached_s:,.0f} verdicts/s ({len(stream)} evaluations)")
    print(f"mixed:   {len(stream) / mixed_s:,.0f} verdicts/s ({fresh.cold_decisions} cold, "
          f"fresh engine over the stream)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
