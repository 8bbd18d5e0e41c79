"""The parts of `suggest`: ipBlock merging, flow records, what is never admitted, the CLI's one-line errors,
and the proof on every bundled scenario."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agent.config import Config
from agent.inventory.snapshot import load_cluster
from agent.suggest.command import SuggestOptions, parse_max_prefix, run_suggest
from agent.suggest.observe import observe_records
from agent.suggest.shape import merge_addresses, suggest

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
SHOP = str(PCAPS / "suggest-shop" / "cluster.json")


def test_addresses_merge_into_the_fewest_prefixes_no_wider_than_the_cap():
    seen = ["203.0.113.5", "203.0.113.9", "198.51.100.7", "2001:db8::5", "2001:db8::ff00", "2001:db8:0:1::1"]
    assert [str(n) for n in merge_addresses(seen)] == [
        "198.51.100.7/32", "203.0.113.0/28", "2001:db8::/112", "2001:db8:0:1::1/128"]
    assert [str(n) for n in merge_addresses(seen[:2], max_prefix=(29, 64))] == ["203.0.113.5/32", "203.0.113.9/32"]
    assert [str(n) for n in merge_addresses(["10.0.0.1", "10.0.200.1"], max_prefix=(16, 64))] == ["10.0.0.0/16"]


@pytest.mark.parametrize("value, expected", [("24", (24, 64)), ("/28,/96", (28, 96)), ("0,0", (0, 0))])
def test_max_prefix_is_read_as_ipv4_then_ipv6(value, expected):
    assert parse_max_prefix(value) == expected


def record(src: str, dst: str, port: int, *, sport: int = 40000, established: bool = True, final: bool = True,
           last: str = "2026-01-01T00:00:01Z") -> bytes:
    return orjson.dumps({"time": "2026-01-01T00:00:00Z", "protocol": "TCP", "src": {"ip": src, "port": sport},
                         "dst": {"ip": dst, "port": port}, "established": established,
                         "first_seen": "2026-01-01T00:00:00Z", "last_seen": last, "final": final}) + b"\n"


def test_a_long_flows_records_from_several_files_are_one_flow():
    store = load_cluster(SHOP)
    first = record("10.244.1.12", "10.244.1.20", 6379, final=False)
    last = record("10.244.1.12", "10.244.1.20", 6379, last="2026-01-01T00:10:00Z")
    observed = observe_records([("node-1", io.BytesIO(first)), ("node-2", io.BytesIO(last + b"\n"))], view=store)
    assert len(observed) == 1 and observed[0].last - observed[0].first == 600


def test_a_peer_without_labels_leaves_that_direction_without_a_policy(tmp_path):
    """A bare pod with no labels can only be selected with its whole namespace: that would widen, so the
    workload it talks to gets no ingress policy, and the reason is said."""
    cluster = orjson.loads(Path(SHOP).read_bytes())
    bare = next(o for o in cluster["items"] if o["kind"] == "Pod" and o["metadata"]["name"] == "prometheus-0")
    del bare["metadata"]["labels"]
    path = tmp_path / "cluster.json"
    path.write_bytes(orjson.dumps(cluster))
    store = load_cluster(path)
    observed = observe_records([("f", io.BytesIO(record("10.244.1.30", "10.244.1.12", 9090)))], view=store)
    made = suggest(observed, store)
    assert [(s.name, s.direction) for s in made.policies] == [("checkout-egress", "Egress")]
    assert made.notes == [
        "monitoring: Pod/prometheus-0: no egress policy: monitoring/prometheus-0 has no labels: a policy for it "
        "would select every pod of monitoring",
        "monitoring: Pod/prometheus-0: no ingress policy: monitoring/prometheus-0 has no labels: a policy for it "
        "would select every pod of monitoring",
        "shop: Deployment/checkout: no ingress policy: monitoring/prometheus-0 (Pod/prometheus-0) has no labels: a "
        "selector for it would admit every pod of monitoring"]


def test_a_record_of_a_pod_the_cluster_file_no_longer_has_is_not_admitted():
    store = load_cluster(SHOP)
    line = orjson.loads(record("10.244.9.9", "10.244.1.12", 8080))
    line["src"].update(kind="pod", namespace="shop", pod="gone-1")
    out, err = io.BytesIO(), io.StringIO()
    status = run_suggest(SuggestOptions(flows=[("f", io.BytesIO(orjson.dumps(line)))]), store=store,
                         config=Config(), out=out, err=err)
    assert status == 0
    assert "shop/gone-1 is not in the cluster file: its labels are unknown; allow -> allow (1 flow)" in err.getvalue()


@pytest.mark.parametrize("scenario", sorted(p.parent.name for p in PCAPS.glob("*/capture.pcap")))
def test_on_every_bundled_scenario_no_admitted_flow_becomes_denied(scenario):
    out, err = io.BytesIO(), io.StringIO()
    store = load_cluster(PCAPS / scenario / "cluster.json")
    status = run_suggest(SuggestOptions(captures=[str(PCAPS / scenario / "capture.pcap")]), store=store,
                         config=Config(), out=out, err=err)
    assert status == 0, err.getvalue()
    assert "allowed before and denied after: 0 (the suggestions break no admitted flow)" in err.getvalue()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "suggest", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--cluster", SHOP], "flowwarden: error: suggest: give captures (PCAP ...) or flow records (--flows FILE ...)\n"),
    (["--cluster", "/nonexistent.json", "--flows", "-"], "flowwarden: error: /nonexistent.json: cannot read"),
    (["--cluster", SHOP, "--flows", "-", "--max-prefix", "33"],
     "flowwarden: error: --max-prefix 33: IPv4 prefixes are 0-32 and IPv6 prefixes 0-128\n"),
    (["--cluster", SHOP, "--flows", "/nonexistent.jsonl"], "flowwarden: error: /nonexistent.jsonl: No such file"),
    (["--cluster", SHOP, "/nonexistent.pcap"], "flowwarden: error: /nonexistent.pcap"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    done = cli(*args)
    assert done.returncode == 2 and done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_a_bad_record_names_its_file_and_line(tmp_path):
    bad = tmp_path / "flows.jsonl"
    bad.write_bytes(record("10.244.1.12", "10.244.1.20", 6379) + b"{not json\n")
    done = cli("--cluster", SHOP, "--flows", str(bad))
    assert done.returncode == 2 and done.stderr.startswith(f"flowwarden: error: {bad}: flows line 2: not JSON")
    assert done.stderr.count("\n") == 1
