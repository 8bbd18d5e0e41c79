"""`make bench`: every benchmark of the project, one after the other, numbers on stdout.

1. replay: a generated capture (>= 1,000,000 packets, 50,000 flows) replayed end to end
   (verdicts, events, metrics) in a child process: packets/s and peak RSS;
2. attacks: the "verdict at first sight" captures of gen_attacks.py (SYN flood, port scan,
   a million allowed UDP flows, a 20-packets-per-flow node mix) replayed once each in a
   fresh child: packets/s, that child's own peak RSS and event lines, next to the targets;
   a replay still running after --max-seconds is killed and reported as such;
3. the NetworkPolicy engine (bench_netpol.py), 4. the inventory's memory per pod
   (bench_inventory.py), 5. TLS/app classification (bench_classify.py), 6. live capture
   through veth pairs (bench_live.py, root only): idle, 5,000 short connections/s, as many as
   the clients make, bulk; then Suricata 7 (AF_PACKET) under the same 5,000/s when installed.
Generated inputs are cached in bench/out/ (deterministic: same seed, same bytes).

    python bench/run.py                      # everything
    python bench/run.py attacks [--max-seconds 300]   # only section 2
    python bench/run.py live                 # only section 6
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
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
    summary = next(line for line in done.stderr.splitlines() if " packets (" in line)
    packets = int(summary.split(" packets")[0].split()[-1].replace(",", ""))
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"replay: {packets:,} packets ({size / 2**20:,.0f} MiB) in {times[1]:.2f} s wall, median of 3 "
          f"(process start and cluster load included) = {packets / times[1]:,.0f} packets/s "
          f"(runs: {', '.join(f'{packets / t:,.0f}' for t in times)}); peak RSS {rss_mb:,.0f} MiB; "
          f"{'compiled' if HOTPATH is not None else 'pure-Python'} per-packet path")
    print(f"replay: {summary}")


ATTACKS = OUT / "attacks"
# Issue "Verdict at first sight": capture -> RSS ceiling (MiB), packets/s floor, event-line ceiling.
ATTACK_TARGETS = {
    "flood": {"rss_mib": 300, "pps": 300_000, "events": 20},
    "scan": {"rss_mib": 150, "pps": 300_000, "events": 5},
    "allowed": {"rss_mib": 300},
    "mix20": {"rss_mib": 200, "pps": 600_000},
}
MAX_SECONDS = 300.0


def attacks(max_seconds: float = MAX_SECONDS) -> None:
    """Each capture of gen_attacks.py replayed once, in a fresh child measured alone."""
    manifest = ATTACKS / "attacks.json"  # written last by gen_attacks.py: the set is complete
    if not manifest.exists():
        subprocess.run([sys.executable, str(HERE / "gen_attacks.py"), str(ATTACKS)], check=True)
    expected = json.loads(manifest.read_text())
    cluster = ATTACKS / "cluster.json"
    print(f"attacks: {'capture':<8} {'packets':>10} {'wall s':>8} {'packets/s':>10} {'(target)':>11} "
          f"{'RSS MiB':>8} {'(target)':>8} {'events':>10} {'(target)':>8}", flush=True)
    summaries = []
    for name, target in ATTACK_TARGETS.items():
        pcap = ATTACKS / f"{name}.pcap"
        events, stderr = ATTACKS / f"{name}.events.jsonl", ATTACKS / f"{name}.stderr"
        events.unlink(missing_ok=True)
        _read_through(pcap)  # in the page cache, as for the replay bench's uncounted first run
        run = _guarded([sys.executable, "-m", "agent.cli", "replay", str(pcap), "--cluster", str(cluster),
                        "--events", str(events), "--metrics", str(ATTACKS / f"{name}.prom")],
                       stderr=stderr, max_seconds=max_seconds)
        lines = stderr.read_text(errors="replace").strip().splitlines()
        summary = next((line for line in reversed(lines) if " packets (" in line), None)
        rss = run["rss_kib"] / 1024
        if run["killed"] or summary is None or run["exit"] != 0:
            why = (f"killed after {max_seconds:.0f} s" if run["killed"] else
                   f"exit {run['exit']}: {lines[-1] if lines else 'no output'}")
            print(f"attacks: {name:<8} {expected[pcap.name]['packets']:>10,} {run['wall']:>8.1f} {why}; "
                  f"RSS reached {rss:,.0f} MiB {_target(rss, target.get('rss_mib'), '<')}", flush=True)
            continue
        packets = int(summary.split(" packets")[0].split()[-1].replace(",", ""))
        pps = packets / run["wall"]
        n_events = _count_lines(events)
        print(f"attacks: {name:<8} {packets:>10,} {run['wall']:>8.2f} {pps:>10,.0f} "
              f"{_target(pps, target.get('pps'), '>='):>11} {rss:>8,.0f} {_target(rss, target.get('rss_mib'), '<'):>8} "
              f"{n_events:>10,} {_target(n_events, target.get('events'), '<='):>8}", flush=True)
        summaries.append(f"attacks: {name}: {summary}")
    print("\n".join(summaries))
    print("attacks: wall = the whole child (process start and cluster load included); RSS = that child's own "
          "peak (wait4); events = lines written to --events; * = target missed")


def _target(value: float, bound: float | None, op: str) -> str:
    """The target as "(op bound)", starred when missed; empty without a target."""
    if bound is None:
        return ""
    met = value < bound if op == "<" else value >= bound if op == ">=" else value <= bound
    return f"({op}{bound:,}){'' if met else '*'}"


def _guarded(cmd: list[str], *, stderr: Path, max_seconds: float) -> dict:
    """Run `cmd`; SIGKILL it after max_seconds. Its wall time, exit, own peak RSS (KiB), killed?"""
    killed = threading.Event()
    started = time.perf_counter()
    with stderr.open("wb") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=HERE.parent)

    def stop() -> None:
        killed.set()
        child.kill()  # polls first: never signals a reaped child

    timer = threading.Timer(max_seconds, stop)
    timer.start()
    try:
        # wait4 reports this child's own rusage; RUSAGE_CHILDREN is the max over every child so far.
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "exit": child.returncode, "rss_kib": usage.ru_maxrss, "killed": killed.is_set()}


def _read_through(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 23):
            pass


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 23):
            n += chunk.count(b"\n")
    return n


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section", nargs="?", choices=["attacks", "live"], help="run only this section (default: all)")
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                    help="kill an attack replay still running after this long (default: %(default)s)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.section == "attacks":
        attacks(args.max_seconds)
        return
    if args.section == "live":
        script("bench_live.py", root=True)
        return
    replay()
    attacks(args.max_seconds)
    for name in ("bench_netpol.py", "bench_inventory.py", "bench_classify.py"):
        script(name)
    script("bench_live.py", root=True)


if __name__ == "__main__":
    main()
