"""`make bench`: every benchmark of the project, one after the other, numbers on stdout.

1. replay: a generated capture (>= 1,000,000 packets, 50,000 flows) replayed end to end
   (verdicts, events, metrics) in a child process: packets/s and peak RSS;
2. the NetworkPolicy engine (bench_netpol.py), 3. the inventory's memory per pod
   (bench_inventory.py), 4. TLS/app classification (bench_classify.py), 5. live capture
   through veth pairs (bench_live.py, root only).
Generated inputs are cached in bench/out/ (deterministic: same seed, same bytes).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from agent.decode.hotpath import HOTPATH  # noqa: E402  (after the path: bench/ runs as a script)

OUT = HERE / "out"


def replay() -> None:
    pcap, cluster = OUT / "bench.pcap", OUT / "cluster.json"
    if not pcap.exists():
        subprocess.run([sys.executable, str(HERE / "gen_replay.py"), str(OUT)], check=True)
    size = pcap.stat().st_size
    times = []
    for run in range(4):  # the first run warms the page cache and is not counted
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(pcap), "--cluster", str(cluster),
                               "--events", os.devnull, "--metrics", str(OUT / "bench.prom")],
                              capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - started)
    times = sorted(times[1:])
    summary = done.stderr.strip().splitlines()[-1]
    packets = int(summary.split(" packets")[0].split()[-1].replace(",", ""))
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"replay: {packets:,} packets ({size / 2**20:,.0f} MiB) in {times[1]:.2f} s wall, median of 3 "
          f"(process start and cluster load included) = {packets / times[1]:,.0f} packets/s "
          f"(runs: {', '.join(f'{packets / t:,.0f}' for t in times)}); peak RSS {rss_mb:,.0f} MiB; "
          f"{'compiled' if HOTPATH is not None else 'pure-Python'} per-packet path")
    print(f"replay: {summary}")


def script(name: str, *, root: bool = False) -> None:
    path = HERE / name
    if not path.exists():
        print(f"{name}: not present")
        return
    if root and os.geteuid() != 0:
        print(f"{name}: skipped, needs root (network namespaces)")
        return
    subprocess.run([sys.executable, str(path)], check=False)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    replay()
    for name in ("bench_netpol.py", "bench_inventory.py", "bench_classify.py"):
        script(name)
    script("bench_live.py", root=True)


if __name__ == "__main__":
    main()
