"""End to end: a real Prometheus (Debian's) scrapes a real `flowwarden run` every second and evaluates
the shipped alert rules, their `for:` shortened in this copy only.

A throw-away node namespace with pods (tests/test_run.py's Node) runs the agent with the shipped
ConfigMap's config; namespace `shop` requires TLS (namespace annotation) and `data` denies all ingress
(a NetworkPolicy that nothing enforces here). The client connects to a server in `data` (denied, yet
established: an enforcement gap) and speaks plain HTTP to `shop`: FlowwardenEnforcementGap and
FlowwardenPlaintextToTLSRequired must fire naming those namespaces, no health alert while all is well,
and FlowwardenAgentDown once the agent stops. Every panel query of the dashboard runs against this
Prometheus without error, and those about findings return the findings."""
from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.deploy.helpers import ALERTS, HEALTH_ALERTS, MONITORING, ROOT, kustomize, one, prometheus_rules, tool
from tests.test_run import Node, _get, _wait, cluster_objects, node  # noqa: F401  (fixture)

AGENT_PORT, PROMETHEUS_PORT = 9847, 9090
SCRAPE_LABELS = {"node": "node-1", "namespace": "flowwarden", "pod": "flowwarden-test"}  # as the ServiceMonitor labels


def _cluster(path: Path) -> None:
    items = cluster_objects()
    for item in items:
        if item["kind"] == "Namespace" and item["metadata"]["name"] == "shop":
            item["metadata"]["annotations"] = {"flowwarden.io/require-tls": "true"}
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _rules(path: Path) -> None:
    """The PrometheusRule's groups, evaluated every second, every `for:` cut to 2 s."""
    spec = prometheus_rules()
    for group in spec["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path.write_text(yaml.safe_dump(spec))


def _config(tmp_path: Path) -> Path:
    _rules(tmp_path / "rules.yaml")
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp_path / "rules.yaml")],
              "scrape_configs": [{"job_name": "flowwarden", "static_configs": [
                  {"targets": [f"127.0.0.1:{AGENT_PORT}"], "labels": SCRAPE_LABELS}]}]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, node: Node, tmp_path: Path):
        self.node = node
        self.process = node.start(node.ns, tool("prometheus"), f"--config.file={_config(tmp_path)}",
                                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                                  stderr=(tmp_path / "prometheus.log").open("wb"))
        _wait(lambda: _get(node, PROMETHEUS_PORT, "/-/ready")[0] == 200, 30, "Prometheus ready")

    def api(self, path: str, **params: str) -> dict:
        args = [arg for key, value in params.items() for arg in ("--data-urlencode", f"{key}={value}")]
        done = self.node.run(self.node.ns, "curl", "-s", "-G", f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/{path}",
                             *args, check=False, timeout=10)
        return json.loads(done.stdout or b"{}")

    def query(self, expr: str) -> list[dict]:
        answer = self.api("query", query=expr)
        assert answer.get("status") == "success", (expr, answer)
        return answer["data"]["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["data"]["alerts"]

    def firing(self, name: str) -> list[dict]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _grafana(expr: str) -> str:
    """A panel query as Grafana sends it, its variables given values."""
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "1h"),
                            ("$node", ".*")):
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_the_shipped_alerts_fire_in_a_real_prometheus_scraping_a_real_agent(node, tmp_path):
    started = time.monotonic()
    for pod in ("client", "web", "db"):
        node.add_pod(pod)
    for pod, port in (("web", 8080), ("db", 5432)):
        node.start(node.pod_ns(pod), sys.executable, "-m", "http.server", str(port), "--bind", "::",
                   "--directory", str(tmp_path))
        _wait(lambda: f":{port} " in node.run(node.pod_ns(pod), "ss", "-ltnH").stdout.decode(), 10, "server")
    _cluster(tmp_path / "cluster.json")
    configmap = one(kustomize(ROOT / "daemonset"), "ConfigMap", "flowwarden")
    (tmp_path / "flowwarden.yaml").write_text(configmap["data"]["flowwarden.yaml"])
    agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(tmp_path / "cluster.json"),
                       "--config", str(tmp_path / "flowwarden.yaml"), "--interfaces", "vh*,br0",
                       "--listen", f"127.0.0.1:{AGENT_PORT}", "--events", str(tmp_path / "events.jsonl"),
                       stderr=(tmp_path / "agent.log").open("wb"), cwd=str(ROOT))
    _wait(lambda: _get(node, AGENT_PORT, "/readyz")[0] == 200, 20, "agent ready")
    prometheus = Prometheus(node, tmp_path)
    _wait(lambda: prometheus.query('up{job="flowwarden"} == 1'), 15, "the agent scraped")

    client = node.pod_ns("client")
    for url in ("http://10.77.0.5:5432/", "http://10.77.0.3:8080/"):  # data (denied, established); shop (plaintext)
        assert node.run(client, "curl", "-sf", "-o", "/dev/null", "-m", "5", url, check=False).returncode == 0, url

    gap = _wait(lambda: prometheus.firing("FlowwardenEnforcementGap"), 30, "FlowwardenEnforcementGap")
    plaintext = _wait(lambda: prometheus.firing("FlowwardenPlaintextToTLSRequired"), 30, "the plaintext alert")
    assert [(a["labels"]["src_namespace"], a["labels"]["dst_namespace"], a["labels"]["severity"]) for a in gap] \
        == [("frontend", "data", "critical")]
    assert '"frontend"' in gap[0]["annotations"]["description"] and '"data"' in gap[0]["annotations"]["description"]
    assert [(a["labels"]["src_namespace"], a["labels"]["dst_namespace"]) for a in plaintext] == [("frontend", "shop")]
    description = plaintext[0]["annotations"]["description"]
    assert '"frontend"' in description and '"shop"' in description
    time.sleep(3)  # longer than every shortened `for:`: a health alert would be firing by now
    active = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert active == {"FlowwardenEnforcementGap", "FlowwardenPlaintextToTLSRequired"}, active
    assert set(HEALTH_ALERTS) <= set(ALERTS)

    # The dashboard: every panel's query and the node variable run; the finding panels show the findings.
    dashboard = json.loads((MONITORING / "dashboards" / "flowwarden.json").read_text())
    results = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            results[target["expr"]] = prometheus.query(_grafana(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"]).groups()
            answer = prometheus.api(f"label/{label}/values", **{"match[]": metric})
            assert answer["status"] == "success" and answer["data"] == [SCRAPE_LABELS["node"]], answer
    pairs = lambda expr: {(r["metric"].get("kind"), r["metric"]["src_namespace"], r["metric"]["dst_namespace"])
                          for r in results[expr]}
    (violations,) = [e for e in results if e.startswith("sum by (kind, severity, src_namespace, dst_namespace)")]
    assert pairs(violations) == {("policy-violation", "frontend", "data"), ("plaintext", "frontend", "shop")}
    (gaps,) = [e for e in results if e.startswith("sum by (node, src_namespace, dst_namespace)")]
    assert pairs(gaps) == {(None, "frontend", "data")}
    memory = [e for e in results if "process_resident_memory_bytes" in e]
    assert memory and all(float(r["value"][1]) > 0 for e in memory for r in results[e])

    # The agent stops: FlowwardenAgentDown fires for its node.
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    down = _wait(lambda: prometheus.firing("FlowwardenAgentDown"), 20, "FlowwardenAgentDown")
    assert [a["labels"]["node"] for a in down] == ["node-1"]
    assert '"node-1"' in down[0]["annotations"]["description"]
    assert time.monotonic() - started < 60, "keep this end-to-end test under a minute"
