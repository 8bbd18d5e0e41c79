"""The shipped alert rules with Prometheus' own checker: `promtool check rules` on the PrometheusRule's
groups, and `promtool test rules` on tests/deploy/alerts.test.yaml, where every alert fires on the
series it is for and stays quiet otherwise (Debian's prometheus package brings promtool)."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.deploy.helpers import ALERTS, prometheus_rules, run, tool

UNIT_TESTS = Path(__file__).with_name("alerts.test.yaml")


def _rule_files(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rules()))
    return Path(shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name))


def test_promtool_checks_the_rules(tmp_path):
    _rule_files(tmp_path)
    done = run(tool("promtool"), "check", "rules", str(tmp_path / "rules.yaml"))
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_pass_and_cover_every_alert_both_ways(tmp_path):
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [c for t in tests for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert fires == quiet == set(ALERTS)
    done = run(tool("promtool"), "test", "rules", str(_rule_files(tmp_path)), check=False)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_a_rule_misses_the_first_finding(tmp_path):
    """The naive rule (`increase(...) > 0`) misses a namespace pair's first violation: the unit tests
    must catch it, or they prove nothing about the new-series branch."""
    spec = prometheus_rules()
    for group in spec["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "FlowwardenEnforcementGap":
                rule["expr"] = ('sum by (src_namespace, dst_namespace) '
                                '(increase(flowwarden_enforcement_gaps_total{job="flowwarden"}[10m])) > 0')
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    done = run(tool("promtool"), "test", "rules", str(tmp_path / UNIT_TESTS.name), check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "alertname: FlowwardenEnforcementGap, time: 6m" in out, out
