"""The compact flow table (agent/_compact.h + agent/outcomes.py) against the Python reference.

Differential: the same captures replayed by the CLI twice, compiled (flows in the compact table,
outcomes repeated in aggregate) and with FLOWWARDEN_PURE_PYTHON=1 (every flow a Python object,
judged one by one), must write the same events, metrics and summary: the bench's attack captures
(a flood, a scan, a million-flow UDP shape, a node mix; generated small) with default and with
biting caps, and every bundled scenario. Then what the compact table is for: flows held without
a Python object, promotion when Python is needed, and outcomes forgotten when the cluster changes.
"""
from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.config import Config, FlowConfig
from agent.decode.hotpath import HOTPATH
from agent.inventory.snapshot import load_cluster
from agent.judges import build_judges
from agent.model import START, WARNING, Finding, NetworkPolicy
from agent.pipeline import Pipeline
from agent.sinks.events import EventSink
from agent.sinks.metrics import MetricsSink
from agent.sinks.summary import SummarySink
from tests.flows.test_table import PA, RA, SA, S, tcp, udp

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "pcaps" / "http-allowed-and-denied"
BATCH_POD, API_POD, FRONTEND_POD = "10.244.1.30", "10.244.1.20", "10.244.1.10"  # api admits only frontend
compiled = pytest.mark.skipif(HOTPATH is None, reason="the compact table is part of the compiled per-packet path, "
                                                      "which FLOWWARDEN_PURE_PYTHON=1 (or no C compiler) turns off")
TIMING = re.compile(rb"^flowwarden_(judge_duration|build_info|process|python|compact_flows).*\n", re.M)  # path-dependent


def _replay(pcap: Path, cluster: Path, out: Path, *, pure: bool, config: str | None = None) -> tuple[bytes, ...]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWWARDEN_PURE_PYTHON"}
    if pure:
        env["FLOWWARDEN_PURE_PYTHON"] = "1"
    out.mkdir()
    args = [sys.executable, "-m", "agent.cli", "replay", str(pcap), "--cluster", str(cluster),
            "--events", str(out / "events"), "--metrics", str(out / "metrics")]
    if config:
        (out / "config.yaml").write_text(config)
        args += ["--config", str(out / "config.yaml")]
    done = subprocess.run(args, capture_output=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    summary = re.sub(rb", [0-9,]+ packets/s", b"", done.stderr)
    return (out / "events").read_bytes(), TIMING.sub(b"", (out / "metrics").read_bytes()), summary


def _same_both_ways(tmp_path: Path, pcap: Path, cluster: Path, config: str | None = None) -> bytes:
    compact = _replay(pcap, cluster, tmp_path / "compiled", pure=False, config=config)
    reference = _replay(pcap, cluster, tmp_path / "pure", pure=True, config=config)
    for got, want, what in zip(compact, reference, ("events", "metrics", "summary")):
        assert got == want, f"{pcap.name}: the {what} differ from the Python reference"
    return compact[0]


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("attacks")
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_attacks.py"), str(out), "--scale", "0.01"],
                   check=True, capture_output=True)
    return out


CAPS = "flows:\n  answer_timeout: 0.5\nevents:\n  window: 0.2\n  max_groups: 50\n"
FLOW_CAP = "flows:\n  max_flows: 300\n  answer_timeout: 0.5\nevents:\n  window: 0.2\n  max_groups: 50\n"


@compiled
@pytest.mark.parametrize("capture", ["flood", "scan", "allowed", "mix20"])
@pytest.mark.parametrize("config", [None, CAPS], ids=["defaults", "caps"])
def test_the_attack_captures_give_what_the_python_reference_gives(tmp_path, attacks, capture, config):
    events = _same_both_ways(tmp_path, attacks / f"{capture}.pcap", attacks / "cluster.json", config)
    if capture in ("flood", "scan"):
        assert events  # the attacks are reported, in aggregate, the same way


@compiled
@pytest.mark.parametrize("capture", ["flood", "scan", "allowed"])
def test_under_flow_cap_pressure_the_oldest_flows_of_both_tables_end_first(tmp_path, attacks, capture):
    # Exact while no flow moved to Python after its start (a moved flow joins the Python table's order
    # late): true of these shapes, not of the node mix, where the flows shed may differ (never their count).
    _same_both_ways(tmp_path, attacks / f"{capture}.pcap", attacks / "cluster.json", FLOW_CAP)


@compiled
@pytest.mark.parametrize("scenario", sorted(p.parent.name for p in ROOT.glob("pcaps/*/capture.pcap")))
def test_every_scenario_gives_what_the_python_reference_gives(tmp_path, scenario):
    _same_both_ways(tmp_path, ROOT / "pcaps" / scenario / "capture.pcap", ROOT / "pcaps" / scenario / "cluster.json")


@compiled
@pytest.mark.parametrize("capture", ["rules-4c", "rules-crafted", "dns", "mix20"])
def test_with_dns_names_read_the_dns_flows_live_in_python_and_the_rest_stays_compact(tmp_path, attacks, capture):
    # dns-exfil-shape reads each UDP/53 query's name: those flows start in Python, the others as before.
    pcap, cluster = ((attacks / "mix20.pcap", attacks / "cluster.json") if capture == "mix20" else
                     (ROOT / "pcaps" / capture / "capture.pcap", ROOT / "pcaps" / capture / "cluster.json"))
    _same_both_ways(tmp_path, pcap, cluster, "rules:\n  dns-exfil-shape: {enabled: true}\n")
    if capture == "mix20":  # its TCP and non-DNS UDP flows still live in the compact table
        compact = re.search(r"^flowwarden_compact_flows_total (\S+)$", (tmp_path / "compiled" / "metrics").read_text(),
                            flags=re.M)
        assert compact and float(compact.group(1)) > 0


def _pipeline(**flows) -> tuple[Pipeline, io.BytesIO, SummarySink]:
    events, summary = io.BytesIO(), SummarySink()
    pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(flows=FlowConfig(**flows)),
                        sinks=[EventSink(events, window=10.0), MetricsSink(), summary])
    return pipeline, events, summary


def _scan(t: float, ports: range, src: str = BATCH_POD) -> list:
    frames = []
    for i, port in enumerate(ports):
        frames += [(t + i * 1e-3, 1, tcp(src, 40000, API_POD, port, S, seq=1)),
                   (t + i * 1e-3 + 1e-4, 1, tcp(API_POD, port, src, 40000, RA))]
    return frames


@compiled
def test_repeats_of_a_judged_outcome_live_in_the_compact_table_without_a_python_object():
    pipeline, events, summary = _pipeline()
    pipeline.feed(_scan(100.0, range(1000, 1001)))  # the first probe is judged in Python ...
    assert len(pipeline.table.flows) == 2 and len(pipeline.table.compact) == 0
    pipeline.feed(_scan(101.0, range(1001, 1500)))  # ... the others repeat its outcome
    assert len(pipeline.table.flows) == 2 and len(pipeline.table.compact) == 499 and len(pipeline.table) == 500
    pipeline.finish()
    first, follow_up = (line for line in events.getvalue().splitlines())
    assert b'"follow_up":false' in first and b'"count":1,' in first
    assert b'"follow_up":true' in follow_up and b'"count":499' in follow_up
    assert b'"ports":{"count":499,"min":1001,"max":1499}' in follow_up
    assert pipeline.totals.flows == 500 and pipeline.totals.verdicts == {"deny": 500}
    assert summary.by_namespace == {"api": 500, "other": 500}


@compiled
def test_a_flow_needing_python_moves_there_with_its_counts_and_is_judged_once():
    pipeline, events, _summary = _pipeline()
    judged = []
    netpol = next(j for j in pipeline.judges if j.name == "netpol")
    inner = netpol.judge
    netpol.judge = lambda flow, src, dst: judged.append(flow.src_port) or inner(flow, src, dst)
    # A denied, answered connection teaches the outcome; a second one with the same key starts compact,
    # its answer is counted there, and its TLS payload takes it to Python: classified, not judged again.
    for i, sport in enumerate((40000, 40001)):
        t = 100.0 + i
        pipeline.feed([(t, 1, tcp(BATCH_POD, sport, API_POD, 8080, S, seq=1)),
                       (t + 0.001, 1, tcp(API_POD, 8080, BATCH_POD, sport, SA, seq=9))])
        if i:
            assert len(pipeline.table.compact) == 1
        pipeline.feed([(t + 0.002, 1, tcp(BATCH_POD, sport, API_POD, 8080, PA, seq=2, payload=b"\x16\x03\x01"))])
    assert len(pipeline.table.compact) == 0 and len(pipeline.table.flows) == 4
    moved = pipeline.table.flows[next(k for k, e in pipeline.table.flows.items() if e[0].src_port == 40001)][0]
    assert (moved.verdict, moved.findings, moved.packets_src, moved.packets_dst) == ("deny", ("policy-violation",), 2, 1)
    pipeline.finish()
    assert judged == [40000]
    assert pipeline.totals.flows == 2 and pipeline.totals.findings == {"policy-violation": 2}
    assert b'"count":1,' in events.getvalue().splitlines()[-1]  # the follow-up: one repeat


@compiled
def test_a_udp_answer_with_no_known_outcome_is_judged_in_python_and_teaches_it():
    pipeline, _events, _summary = _pipeline()
    for i in range(3):
        pipeline.feed([(100.0 + i, 1, udp(FRONTEND_POD, 50000 + i, API_POD, 8080, b"q")),
                       (100.001 + i, 1, udp(API_POD, 8080, FRONTEND_POD, 50000 + i, b"a"))])
    assert len(pipeline.table.flows) == 2 and len(pipeline.table.compact) == 2  # the first was promoted
    pipeline.finish()
    assert pipeline.totals.flows == 3 and pipeline.totals.verdicts == {"deny": 3}  # the api admits TCP only


@compiled
def test_a_cluster_change_forgets_every_outcome():
    pipeline, events, _summary = _pipeline()
    pipeline.feed(_scan(100.0, range(1000, 1100)))
    store = pipeline.view
    allow_all = NetworkPolicy("api", "allow-all", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]})
    store.apply("NetworkPolicy", "ADDED", allow_all)
    for judge in pipeline.judges:
        judge.on_change("NetworkPolicy", None, allow_all)
    pipeline.cluster_changed()
    pipeline.feed(_scan(200.0, range(2000, 2100)))
    pipeline.finish()
    assert pipeline.totals.verdicts == {"deny": 100, "allow": 100}


def _hello(client: bool) -> bytes:
    """A TLS 1.3 ClientHello (SNI, supported_versions) or the ServerHello choosing 1.3, each one record."""
    if client:
        sni = struct.pack("!HHHBH", 0, 14, 12, 0, 9) + b"api.local"
        ext = sni + struct.pack("!HHB", 43, 3, 2) + b"\x03\x04"
        body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(ext)) + ext
        kind = 1
    else:
        body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + struct.pack("!HHHH", 6, 43, 2, 0x0304)
        kind = 2
    message = bytes([kind]) + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


FIRST_BYTES = {  # what each connection's first bytes are: (client's segments, server's segments)
    "tls": ([_hello(True)], [_hello(False)]),
    "tls, split hello": ([_hello(True)[:20], _hello(True)[20:]], [_hello(False)]),
    "tls, alert answer": ([_hello(True)], [b"\x15\x03\x03\x00\x02\x02\x28"]),
    "tls, split answer": ([_hello(True)], [_hello(False)[:30], _hello(False)[30:]]),
    "http": ([b"GET / HTTP/1.1\r\nHost: api\r\n\r\n"], [b"HTTP/1.1 200 OK\r\n\r\n"]),
    "server first": ([b"EHLO client\r\n"], [b"220 api ESMTP\r\n"]),
}


def _connection(t: float, sport: int, client: list[bytes], server: list[bytes], server_first: bool) -> list:
    frames = [(t, 1, tcp(FRONTEND_POD, sport, API_POD, 8080, S, seq=1000)),
              (t + 1e-4, 1, tcp(API_POD, 8080, FRONTEND_POD, sport, SA, seq=5000))]
    cseq, sseq, at = 1001, 5001, t + 2e-4
    order = [(False, s) for s in server] + [(True, c) for c in client] if server_first else \
        [(True, c) for c in client] + [(False, s) for s in server]
    for from_client, data in order:
        at += 1e-4
        if from_client:
            frames.append((at, 1, tcp(FRONTEND_POD, sport, API_POD, 8080, PA, seq=cseq, payload=data)))
            cseq += len(data)
        else:
            frames.append((at, 1, tcp(API_POD, 8080, FRONTEND_POD, sport, PA, seq=sseq, payload=data)))
            sseq += len(data)
    return frames


def _tls_metric(registry) -> dict:
    return {tuple(s.labels.items()): s.value for m in registry.collect() if m.name == "flowwarden_tls_connections"
            for s in m.samples if s.name.endswith("_total")}


@compiled
def test_first_bytes_are_decided_here_only_when_python_would_decide_them_alike():
    results = []
    for compact in (True, False):
        registry = CollectorRegistry()
        events = io.BytesIO()
        pipeline = Pipeline(view=load_cluster(SCENARIO / "cluster.json"), config=Config(),
                            sinks=[EventSink(events), MetricsSink(registry), SummarySink()])
        pipeline.compact(compact)
        frames, t = [], 100.0
        for i in range(20):  # every shape, repeated: the first of a key teaches, the others repeat
            for j, (name, (client, server)) in enumerate(FIRST_BYTES.items()):
                frames += _connection(t, 20000 + 10 * i + j, client, server, server_first=name == "server first")
                t += 0.01
        pipeline.feed(sorted(frames, key=lambda f: f[0]))
        python_flows = pipeline.table.flows_started
        pipeline.finish()
        results.append((events.getvalue(), _tls_metric(registry), pipeline.totals, python_flows))
    (events, tls, totals, in_python), (want_events, want_tls, want_totals, _) = results
    assert (events, tls, totals) == (want_events, want_tls, want_totals)
    assert tls == {(("version", "1.3"), ("dst_namespace", "api")): 60}  # tls, split hello, split answer
    # The first connection taught the outcome; of the others, whole hellos and HTTP requests stayed compact,
    # the split or odd first bytes (split hello, alert, split answer, server first) went to Python.
    assert in_python == 1 + 20 * 4


class IntoApi:
    """A judge of the 5-tuple alone (stage START): a warning for every flow into namespace api."""
    name, stage, compact_safe = "into-api", START, True

    def judge(self, flow, src, dst):
        return [Finding(kind="into-api", severity=WARNING, reasons=("into api",))] if dst.namespace == "api" else []

    def on_change(self, kind, old, new) -> None:
        pass


@compiled
def test_start_judges_speak_for_compact_flows_as_for_python_ones():
    results = []
    for compact in (True, False):
        events, registry, summary = io.BytesIO(), CollectorRegistry(), SummarySink()
        view = load_cluster(SCENARIO / "cluster.json")
        pipeline = Pipeline(view=view, config=Config(), sinks=[EventSink(events), MetricsSink(registry), summary],
                            judges=[*build_judges(Config(), view), IntoApi()])
        pipeline.compact(compact)
        frames = []
        for i in range(50):  # into api, allowed and denied; elsewhere; SYN and answer each
            for j, (src, dst, port) in enumerate(((FRONTEND_POD, API_POD, 8080), (BATCH_POD, API_POD, 8080),
                                                   (FRONTEND_POD, BATCH_POD, 9000))):
                t = 100.0 + i * 0.01 + j * 0.001
                frames += [(t, 1, tcp(src, 30000 + i, dst, port, S, seq=1)),
                           (t + 1e-4, 1, tcp(dst, port, src, 30000 + i, RA))]
        pipeline.feed(frames)
        in_python = pipeline.table.flows_started
        pipeline.finish()
        samples = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for m in registry.collect()
                         for s in m.samples if s.name.startswith("flowwarden_"))
        results.append((events.getvalue(), samples, pipeline.totals, summary.by_namespace, in_python))
    (*got, in_python), (*want, _) = results
    assert got == want
    assert got[2].findings == {"into-api": 100, "policy-violation": 50}
    assert in_python < 10  # each key's first flow taught its outcomes; the others stayed compact
