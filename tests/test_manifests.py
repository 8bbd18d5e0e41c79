"""The DaemonSet manifests: valid YAML, and the agent's arguments are ones `flowwarden run` accepts."""
from pathlib import Path

import yaml

from agent.cli import _parser

DAEMONSET = Path(__file__).resolve().parents[1] / "daemonset"


def _objects() -> list[dict]:
    return [doc for path in sorted(DAEMONSET.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_manifests_hold_the_rbac_config_and_daemonset_the_agent_needs():
    kinds = {o["kind"] for o in _objects()}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} <= kinds
    role = next(o for o in _objects() if o["kind"] == "ClusterRole")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for resource in ("pods", "namespaces", "services", "endpointslices", "nodes", "networkpolicies"):
        assert {(resource, "list"), (resource, "watch")} <= granted, resource


def test_the_daemonset_runs_the_agent_with_arguments_it_accepts_and_probes_its_endpoints():
    ds = next(o for o in _objects() if o["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    args = _parser().parse_args(container["args"])
    assert args.command.__name__ == "cmd_run"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
