"""docs/capture.md and docs/metrics.md say what the code does (issue #15's contradictions)."""
from __future__ import annotations

import re
from pathlib import Path

from agent.config import Config

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = (ROOT / "docs" / "capture.md").read_text()
METRICS = (ROOT / "docs" / "metrics.md").read_text()


def test_every_setting_capture_md_names_exists():
    for section, name in re.findall(r"`(flows|capture|events|metrics|inventory)\.([a-z_]+)`", CAPTURE):
        assert hasattr(getattr(Config(), section), name), f"docs/capture.md names {section}.{name}"


def test_capture_md_names_the_settings_not_constants():
    assert "CONNTRACK_WAIT" not in CAPTURE and "capture.conntrack_wait" in CAPTURE
    assert "capture.tcp_segments_per_flow" in CAPTURE and " 8 TCP data segments" not in CAPTURE
    assert "do not yet print `orig_dst`" not in CAPTURE


def test_flow_records_print_orig_dst_and_accounting():
    record = (ROOT / "tests" / "scenarios" / "http-allowed-and-denied" / "expected-flows.jsonl").read_text()
    assert '"orig_dst":' in record and '"accounting":' in record


def test_metrics_md_lists_kube_metrics_only_for_the_live_api():
    replay_section = METRICS.split("The live agent")[0]
    assert "flowwarden_kube_" not in replay_section
    assert "flowwarden_kube_synced" in METRICS.split("With the live Kubernetes API")[1]
    for scenario in (ROOT / "tests" / "scenarios").glob("*/expected-metrics.prom"):
        assert "flowwarden_kube_" not in scenario.read_text(), scenario  # replay never writes them
