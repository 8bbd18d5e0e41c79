"""Staged policies in the live agent: `policies.staged` (or `run --with-policies`), re-read on SIGHUP; a
verdict the candidates would change is a `policy-change` event and flowwarden_staged_verdict_changes_total.

In the namespaces of tests/test_run.py, the client opens one connection to web and one to secure (both in
shop, both allowed now); the staged candidate isolates secure's ingress: exactly one policy-change."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agent.config import ConfigError, load_config
from agent.model import ALLOW, ANSWER, DENY, POLICY_CHANGE, WARNING, Endpoint, Finding, Flow, Judged
from agent.sinks.metrics import MetricsSink
from tests.test_run import (  # noqa: F401 (node is a fixture)
    ROOT, V4, _free_port, _get, _samples, _wait, cluster_objects, node,
)

# Replaces the live shop/allow-frontend (as `kubectl apply` would) by one for web only, and isolates secure.
CANDIDATE = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: frontend}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: secure-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: secure}}
  policyTypes: [Ingress]
"""
STAGED = ("flowwarden_staged_verdict_changes_total", (("direction", "allow->deny"), ("dst_namespace", "shop")))


def test_a_staged_candidate_reports_the_one_connection_it_would_deny_after_sighup(node, tmp_path):
    for pod in ("client", "web", "secure"):
        node.add_pod(pod)
    for pod in ("web", "secure"):
        node.start(node.pod_ns(pod), sys.executable, "-m", "http.server", "8080", "--directory", str(tmp_path))
        _wait(lambda: ":8080 " in node.run(node.pod_ns(pod), "ss", "-ltnH").stdout.decode(), 10, f"{pod} server")
    staged = tmp_path / "staged"
    staged.mkdir()  # nothing staged yet
    cluster, config = tmp_path / "cluster.json", tmp_path / "flowwarden.yaml"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    config.write_text(f"flows:\n  closed_linger: 0.5\npolicies:\n  staged: {staged}\n")
    events, log, port = tmp_path / "events.jsonl", tmp_path / "agent.log", _free_port()
    with log.open("wb") as err:
        agent = node.start(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster),
                           "--config", str(config), "--interfaces", "vh*", "--listen", f"127.0.0.1:{port}",
                           "--events", str(events), stderr=err, cwd=str(ROOT))
    _wait(lambda: _get(node, port, "/readyz")[0] == 200, 20, "/readyz")
    client = node.pod_ns("client")
    curl = lambda host: node.run(client, "curl", "-sf", "-o", "/dev/null", "-m", "5", f"http://{V4.format(host)}:8080/",
                                 check=False).returncode
    metrics = lambda: _samples(_get(node, port, "/metrics")[1])
    assert curl(4) == 0  # to secure, with nothing staged: no policy-change
    _wait(lambda: metrics().get(("flowwarden_flows_total", (("verdict", "allow"),))) == 1, 10, "the first verdict")

    (staged / "secure.yaml").write_text(CANDIDATE)
    agent.send_signal(signal.SIGHUP)
    logs = lambda: [json.loads(line)["msg"] for line in log.read_text().splitlines() if line.startswith("{")]
    _wait(lambda: any(m.startswith("reloaded") for m in logs()), 10, "the reload")
    assert "staged 2 candidate policies from " + str(staged) in logs()
    assert curl(3) == 0 and curl(4) == 0  # web stays allowed; secure would be denied by the candidate
    _wait(lambda: metrics().get(STAGED) == 1, 10, "the staged verdict change")
    assert metrics().get(("flowwarden_flows_total", (("verdict", "allow"),))) == 3  # staged: nothing enforced

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    changes = [e for e in map(orjson.loads, events.read_bytes().splitlines()) if e["kind"] == POLICY_CHANGE]
    assert len(changes) == 1
    (change,) = changes
    assert (change["src"]["pod"], change["dst"]["pod"], change["dst"]["port"]) == ("client", "secure", 8080)
    assert (change["before"], change["after"], change["severity"]) == (ALLOW, DENY, WARNING)
    assert change["policies"] == ["shop/secure-ingress"]


def test_a_bad_staged_policy_fails_at_start_in_one_line(node, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {matchLabels: {a: '!'}}}\n")
    cluster = tmp_path / "cluster.json"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    done = node.run(node.ns, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster), "--interfaces", "lo",
                    "--listen", f"127.0.0.1:{_free_port()}", "--with-policies", str(bad), check=False, timeout=30)
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and str(bad) in err[0], done.stderr


def test_policies_staged_must_be_a_path_string(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("policies:\n  staged: [a]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: policies.staged: expected a string"):
        load_config(config)
    config.write_text("policies:\n  staged: /etc/flowwarden/staged\n")
    assert load_config(config).policies.staged == "/etc/flowwarden/staged"


def _change(before: str, after: str, dst_ns: str | None) -> Judged:
    flow = Flow("TCP", "10.0.0.1", 40000, "10.0.0.2", 80, 0.0, 0.0, verdict=before)
    finding = Finding(POLICY_CHANGE, WARNING, detail={"before": before, "after": after})
    return Judged(ANSWER, flow, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", namespace=dst_ns), [finding])


def test_the_staged_counter_counts_each_direction_by_destination_namespace_in_the_live_agent_only():
    live = MetricsSink(CollectorRegistry(), staged=True)
    assert live.registry.get_sample_value("flowwarden_staged_verdict_changes_total",
                                          {"direction": "allow->deny", "dst_namespace": "shop"}) is None
    for judged in (_change(ALLOW, DENY, "shop"), _change(ALLOW, DENY, "shop"), _change(DENY, ALLOW, None)):
        live.emit(judged)
    value = lambda d, ns: live.registry.get_sample_value("flowwarden_staged_verdict_changes_total",
                                                         {"direction": d, "dst_namespace": ns})
    assert (value("allow->deny", "shop"), value("deny->allow", "")) == (2, 1)
    live.forget_namespace("shop")
    assert value("allow->deny", "shop") is None
    replay = MetricsSink(CollectorRegistry())  # replay --with-policies: the summary counts them
    replay.emit(_change(ALLOW, DENY, "shop"))
    assert "staged" not in "".join(m.name for m in replay.registry.collect())
