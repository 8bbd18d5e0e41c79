"""Under a port scan and a SYN flood, replayed: a few event lines, bounded state, caps counted.

The captures are crafted here with struct (a scan of 5,000 ports answered by RSTs, a flood of
20,000 SYNs from random external addresses) against the cluster of pcaps/http-allowed-and-denied,
where only the frontend may reach the api pod; the caps are set small so that they bite.
"""
from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import orjson
import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "pcaps" / "http-allowed-and-denied" / "cluster.json"
API, BATCH = "10.244.1.20", "10.244.1.30"  # the api pod (isolated for ingress) and a pod it denies
MACS = bytes.fromhex("02420af40114 02420af4011e")
SYN, RST_ACK = 0x02, 0x14


def _frame(src: str, sport: int, dst: str, dport: int, flags: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return MACS + b"\x08\x00" + ip + tcp


def _pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame)
    return path


def _replay(tmp_path: Path, pcap: Path, config: str) -> tuple[list[dict], dict[str, float]]:
    (tmp_path / "config.yaml").write_text(config)
    events, metrics = tmp_path / "events.jsonl", tmp_path / "metrics.prom"
    assert main(["replay", str(pcap), "--cluster", str(CLUSTER), "--config", str(tmp_path / "config.yaml"),
                 "--events", str(events), "--metrics", str(metrics)]) == 0
    samples = {}
    for line in metrics.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return [orjson.loads(line) for line in events.read_bytes().splitlines()], samples


@pytest.fixture
def t0() -> float:
    return 1_767_225_600.0


def test_a_port_scan_is_one_event_and_one_follow_up_naming_the_ports(tmp_path, t0):
    frames = []
    for i, port in enumerate(range(1, 5001)):
        ts = t0 + i * 1e-4
        frames += [(ts, _frame(BATCH, 40000, API, port, SYN)), (ts + 5e-5, _frame(API, port, BATCH, 40000, RST_ACK))]
    # The scan's refused probes of the Docker and etcd ports reached nothing: no built-in rule speaks.
    lines, metrics = _replay(tmp_path, _pcap(tmp_path / "scan.pcap", frames), "flows:\n  max_flows: 1000\n")
    assert [(e["follow_up"], e["count"], e["established"], e["severity"]) for e in lines] == [
        (False, 1, False, "warning"), (True, 4999, False, "warning")]
    assert lines[1]["ports"] == {"count": 4999, "min": 2, "max": 5000}
    assert lines[1]["sources"] == {"count": 1, "complete": True}
    assert metrics['flowwarden_flows_total{verdict="deny"}'] == 5000
    assert metrics['flowwarden_violations_total{dst_namespace="api",kind="policy-violation",rule="",'
                   'severity="warning",side="both",src_namespace="other"}'] == 5000
    assert 'flowwarden_enforcement_gaps_total{dst_namespace="api",side="both",src_namespace="other"}' not in metrics


def test_a_syn_flood_from_random_sources_is_a_few_lines_counting_sources_and_the_caps_bite(tmp_path, t0):
    rng = random.Random(7)
    frames = [(t0 + i * 1e-5, _frame(socket.inet_ntoa(struct.pack("!I", rng.randrange(0x0B000000, 0x7F000000))),
                                     rng.randrange(1024, 65536), API, 8080, SYN)) for i in range(20_000)]
    config = "flows:\n  max_flows: 1000\nevents:\n  max_groups: 100\n"
    lines, metrics = _replay(tmp_path, _pcap(tmp_path / "flood.pcap", frames), config)
    assert len(lines) == 2, lines
    first, follow_up = lines
    assert (first["src"]["kind"], first["follow_up"], follow_up["follow_up"]) == ("external", False, True)
    assert first["count"] + follow_up["count"] == 20_000
    assert follow_up["sources"] == {"count": 4096, "complete": False}
    assert follow_up["ports"] == {"count": 1, "min": 8080, "max": 8080}
    assert metrics['flowwarden_flows_total{verdict="deny"}'] == 20_000
    assert metrics['flowwarden_cap_hits_total{cap="flows"}'] >= 19_000  # every flow past the first 1,000
    assert metrics["flowwarden_flow_evictions_total"] == metrics['flowwarden_cap_hits_total{cap="flows"}']
    assert metrics["flowwarden_load_shedding"] == 1


def test_past_max_groups_the_oldest_groups_are_closed_early_and_counted_not_lost(tmp_path, t0):
    # Established denied connections from 300 distinct external addresses: a group each.
    frames = []
    for i in range(300):
        src, ts = f"198.51.{i // 250}.{i % 250 + 1}", t0 + i * 1e-3
        frames += [(ts, _frame(src, 50000, API, 8080, SYN)), (ts + 1e-4, _frame(API, 8080, src, 50000, 0x12))]
    lines, metrics = _replay(tmp_path, _pcap(tmp_path / "many.pcap", frames), "events:\n  max_groups: 100\n")
    assert len(lines) == 300 and not any(e["follow_up"] for e in lines)
    assert all(e["enforcement_gap"] and e["severity"] == "critical" for e in lines)
    assert metrics['flowwarden_cap_hits_total{cap="event_groups"}'] == 200
