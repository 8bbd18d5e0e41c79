"""Replay every bundled capture against its cluster state; compare events, flows and metrics exactly.

Expected files live in tests/scenarios/<name>/. After a deliberate change, regenerate
them with `FLOWWARDEN_REGENERATE=1 make test` and review the diff before committing.
"""
from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
HERE = Path(__file__).parent
REGENERATE = os.environ.get("FLOWWARDEN_REGENERATE") == "1"
RECORDED = sorted(p.parent.name for p in PCAPS.glob("*/capture.pcap"))
CRAFTED_BROKEN = {"corrupt-magic.pcap", "truncated-file.pcap"}
CRAFTED = sorted(p.name for p in (PCAPS / "crafted").glob("*.pcap*") if p.name not in CRAFTED_BROKEN)


def _run(tmp_path: Path, args: list[str]) -> dict[str, bytes]:
    out = {name: tmp_path / name for name in ("events.jsonl", "flows.jsonl", "metrics.prom")}
    code = main(["replay", *args, "--events", str(out["events.jsonl"]), "--flows", str(out["flows.jsonl"]),
                 "--metrics", str(out["metrics.prom"])])
    assert code == 0
    return {name: path.read_bytes() for name, path in out.items()}


def _compare(produced: dict[str, bytes], expected_dir: Path) -> None:
    for name, data in produced.items():
        expected = expected_dir / f"expected-{name}"
        if REGENERATE:
            expected_dir.mkdir(parents=True, exist_ok=True)
            expected.write_bytes(data)
            continue
        assert expected.exists(), f"{expected} missing: run with FLOWWARDEN_REGENERATE=1 and review"
        if name.endswith(".jsonl"):  # compare objects, so a diff shows the field that differs
            assert [orjson.loads(line) for line in data.splitlines()] == \
                   [orjson.loads(line) for line in expected.read_bytes().splitlines()]
        else:
            assert data.decode() == expected.read_text()


@pytest.mark.parametrize("scenario", RECORDED)
def test_recorded_scenario_gives_the_expected_events_flows_and_metrics(scenario: str, tmp_path: Path):
    produced = _run(tmp_path, [str(PCAPS / scenario / "capture.pcap"), "--cluster",
                               str(PCAPS / scenario / "cluster.json")])
    _compare(produced, HERE / scenario)


def test_crafted_edge_cases_replayed_together_give_the_expected_results(tmp_path: Path):
    crafted = PCAPS / "crafted"
    produced = _run(tmp_path, [*(str(crafted / name) for name in CRAFTED), "--cluster",
                               str(crafted / "cluster.json")])
    _compare(produced, HERE / "crafted")


def test_candidate_policies_report_the_flows_whose_verdict_they_change(tmp_path: Path):
    scenario = PCAPS / "http-allowed-and-denied"
    produced = _run(tmp_path, [str(scenario / "capture.pcap"), "--cluster", str(scenario / "cluster.json"),
                               "--with-policies", str(HERE / "what-if" / "candidates.yaml")])
    changes = [e for e in map(orjson.loads, produced["events.jsonl"].splitlines()) if e["kind"] == "policy-change"]
    assert {(e["src"]["pod"], e["before"], e["after"]) for e in changes} == {
        ("batch-job-7b5d6c8f9-mn4zx", "deny", "allow")}
    _compare(produced, HERE / "what-if")
