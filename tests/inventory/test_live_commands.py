"""`snapshot`, and `replay`/`evaluate --kubeconfig`, against the fake API server through the real client.

The cluster of pcaps/http-allowed-and-denied is served by the fake API; replaying its capture
through the live inventory must give exactly the events the cluster file gives.
"""
from __future__ import annotations

from pathlib import Path

import orjson

from agent.cli import main
from agent.inventory.snapshot import load_cluster
from tests.kubeapi import kubeapi, kubeconfig  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "pcaps" / "http-allowed-and-denied"


def _serve(api) -> dict:
    cluster = orjson.loads((SCENARIO / "cluster.json").read_bytes())
    for item in cluster["items"]:
        api.put(item)
    return cluster


def _events(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_snapshot_writes_a_cluster_file_that_replay_reads_back(kubeapi, kubeconfig, tmp_path):
    cluster = _serve(kubeapi)
    out = tmp_path / "snapshot.json"
    assert main(["snapshot", "--kubeconfig", kubeconfig, "-o", str(out)]) == 0
    store = load_cluster(out)
    assert store.counts() == {kind: sum(1 for i in cluster["items"] if i["kind"] == kind)
                              for kind in store.counts()}
    assert store.endpoint("10.244.1.30", 0).pod == "batch-job-7b5d6c8f9-mn4zx"


def test_replay_with_the_live_inventory_gives_the_same_events_as_the_cluster_file(kubeapi, kubeconfig, tmp_path):
    _serve(kubeapi)
    live, offline = tmp_path / "live.jsonl", tmp_path / "offline.jsonl"
    capture = str(SCENARIO / "capture.pcap")
    assert main(["replay", capture, "--kubeconfig", kubeconfig, "--events", str(live)]) == 0
    assert main(["replay", capture, "--cluster", str(SCENARIO / "cluster.json"), "--events", str(offline)]) == 0
    assert _events(live) == _events(offline)
    assert [e["kind"] for e in _events(live)] == ["policy-violation", "policy-violation"]


def test_evaluate_with_the_live_inventory_judges_a_flow(kubeapi, kubeconfig, tmp_path, capsysbinary):
    _serve(kubeapi)
    flows = tmp_path / "flows.jsonl"
    flows.write_bytes(b'{"src_ip": "10.244.1.30", "dst_ip": "10.244.1.20", "dst_port": 8080}\n')
    assert main(["evaluate", "--kubeconfig", kubeconfig, "--flows", str(flows)]) == 0
    [line] = capsysbinary.readouterr().out.splitlines()
    assert orjson.loads(line)["verdict"] == "deny"


def test_snapshot_of_an_unreachable_api_is_one_line_exit_2(tmp_path, capsys):
    from tests.kubeapi.server import write_kubeconfig
    config = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    assert main(["snapshot", "--kubeconfig", config, "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
