"""Memory and time of the inventory for a large cluster (issue 5: <= 1 KiB per cached pod).

Builds N pods (default 100,000) as the API server would send them (JSON bytes parsed
with orjson, so no string is shared between pods unless the inventory shares it),
converts them with `agent.inventory.objects.convert` and feeds them to a real
`Store`, as the watch does on its first list. Reports retained bytes per pod
(tracemalloc) and the time per pod, and the biggest allocation sites.

    python bench/bench_inventory.py [--pods N] [--top K]
"""
from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc

import orjson

from agent.inventory.objects import convert
from agent.inventory.store import Store

TARGET_BYTES = 1024
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def api_pods(count: int, *, seed: int = 1, dual_stack_every: int = 10):
    """Pods as JSON bytes: Deployments of 20 replicas over 1,000 nodes, typical metadata."""
    rng = random.Random(seed)
    for i in range(count):
        app = f"service-{i // 20:05d}"
        template_hash = f"{(i // 20) * 7919 % 10**10:010x}"[:10]
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        ips = [{"ip": ip}] + ([{"ip": f"fd00::{i:x}"}] if i % dual_stack_every == 0 else [])
        name = f"{app}-{template_hash}-{_suffix(rng, 5)}"
        d = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {
                "name": name, "namespace": f"team-{i // 2000:03d}",
                "uid": f"{rng.getrandbits(128):032x}"[:8] + "-4b1c-4f3e-9c1a-" + f"{i:012x}",
                "resourceVersion": str(100000 + i), "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"app": app, "pod-template-hash": template_hash,
                           "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "shop"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T09:59:00Z",
                                "prometheus.io/scrape": "true"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": f"{app}-{template_hash}", "uid": "x", "controller": True}],
            },
            "spec": {
                "nodeName": f"node-{i % 1000:04d}.eu-west-1.compute.internal",
                "containers": [
                    {"name": "app", "image": "registry/app:1", "ports": [
                        {"containerPort": 8080, "name": "http", "protocol": "TCP"},
                        {"containerPort": 9090, "name": "metrics", "protocol": "TCP"}]},
                    {"name": "sidecar", "image": "registry/proxy:1"},
                ],
            },
            "status": {"phase": "Running", "podIP": ip, "podIPs": ips, "hostIP": "192.168.0.1"},
        }
        yield orjson.dumps(d)


def build(encoded: list[bytes]) -> Store:
    store = Store(grace=120.0)
    for raw in encoded:
        kind, pod = convert(orjson.loads(raw))
        store.apply(kind, "ADDED", pod, at=1714557600.0)
    return store


def measure(count: int, *, top: int = 8) -> dict:
    encoded = list(api_pods(count))  # outside the measurement: the wire bytes
    started = time.perf_counter()
    build(encoded)  # timed without tracemalloc, which slows allocation down
    elapsed = time.perf_counter() - started
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    baseline = tracemalloc.get_traced_memory()[0]
    store = build(encoded)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - baseline
    sites = tracemalloc.take_snapshot().compare_to(before, "lineno")[:top]
    tracemalloc.stop()
    assert store.counts()["Pod"] == count
    return {"pods": count, "bytes": retained, "bytes_per_pod": retained / count,
            "seconds": elapsed, "us_per_pod": elapsed / count * 1e6, "sites": sites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=8, help="allocation sites to show")
    args = parser.parse_args()
    result = measure(args.pods, top=args.top)
    print(f"pods: {result['pods']}")
    print(f"retained: {result['bytes'] / 2**20:.1f} MiB = {result['bytes_per_pod']:.0f} B/pod "
          f"(target <= {TARGET_BYTES} B/pod: {'ok' if result['bytes_per_pod'] <= TARGET_BYTES else 'OVER'})")
    print(f"time: {result['seconds']:.2f} s = {result['us_per_pod']:.1f} us/pod (JSON parse + convert + index)")
    print("biggest allocation sites:")
    for stat in result["sites"]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / result['pods']:7.0f} B/pod  {frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}")


if __name__ == "__main__":
    main()
