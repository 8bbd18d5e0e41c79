"""daemonset/ as a cluster would get it: `kubectl kustomize` builds the base, the monitoring component
and the two together; every object validates offline against the Kubernetes OpenAPI schemas
(kubernetes-validate --strict) and the Prometheus Operator objects against their CRDs' schemas; the
rendered DaemonSet, RBAC, Service and monitoring objects say what docs/deploy.md promises."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import _parser
from agent.inventory.kubeconfig import RESOURCES
from tests.deploy.helpers import (ALERTS, DAEMONSET, MONITORING, ROOT, VERSION, kustomize, one, run, tool,
                                  with_monitoring)

OPERATOR_GROUP = "monitoring.coreos.com/"
K8S_VERSIONS = ("1.29", "1.37")  # oldest and newest Kubernetes the schemas are checked against


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(DAEMONSET)


@pytest.fixture(scope="module")
def monitoring() -> list[dict]:
    return kustomize(MONITORING)


def _pod(objects: list[dict]) -> dict:
    return one(objects, "DaemonSet", "flowwarden")["spec"]["template"]["spec"]


def _agent(objects: list[dict]) -> dict:
    containers = _pod(objects)["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kustomize_builds_the_base_the_component_and_both(base, monitoring, tmp_path):
    assert [o["kind"] for o in base] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "ConfigMap", "Service", "DaemonSet"]  # the Namespace first
    assert not [o for o in base if o["apiVersion"].startswith(OPERATOR_GROUP)], "the base must need no CRD"
    assert sorted(o["kind"] for o in monitoring) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    both = kustomize(with_monitoring(tmp_path))
    key = lambda o: (o["kind"], o["metadata"]["name"])
    assert sorted(map(key, both)) == sorted(map(key, base + monitoring))
    for o in both:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "flowwarden", key(o)


def _validate(objects: list[dict], path: Path, *, version: str) -> None:
    path.write_text(yaml.safe_dump_all(objects))
    done = run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_kubernetes_object_validates_strictly_against_the_openapi_schemas(base, monitoring, tmp_path):
    core = base + [o for o in monitoring if not o["apiVersion"].startswith(OPERATOR_GROUP)]
    for version in K8S_VERSIONS:
        _validate(core, tmp_path / f"objects-{version}.yaml", version=version)
    # The validator rejects what it should (a misspelt field), so its silence above means something.
    broken = json.loads(json.dumps(one(base, "DaemonSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFileSystem"):
        _validate([broken], tmp_path / "broken.yaml", version=K8S_VERSIONS[-1])


def _operator_errors(objects: list[dict]) -> list[str | None]:
    done = run(sys.executable, str(Path(__file__).with_name("operator_schemas.py")), input=yaml.safe_dump_all(objects))
    return json.loads(done.stdout)


def test_the_operator_objects_validate_against_their_crd_schemas(monitoring):
    operator = [o for o in monitoring if o["apiVersion"].startswith(OPERATOR_GROUP)]
    assert {o["kind"] for o in operator} == {"ServiceMonitor", "PrometheusRule"}
    assert _operator_errors(operator) == [None] * len(operator)
    # ... and the schemas catch what they should: a misspelt field, a bad duration.
    monitor, rule = one(monitoring, "ServiceMonitor"), one(monitoring, "PrometheusRule")
    misspelt = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": "metrics", "intervall": "30s"}]}}
    bad_for = {**rule, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 min"}]}]}}
    bad_meta = {**rule, "metadata": {**rule["metadata"], "labelz": {}}}
    first, second, third = _operator_errors([misspelt, bad_for, bad_meta])
    assert "intervall" in first and "for" in second and "pattern" in second and "labelz" in third


def test_the_namespace_admits_the_agent_and_says_why():
    ns = yaml.safe_load((DAEMONSET / "namespace.yaml").read_text())
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert "hostNetwork" in (DAEMONSET / "namespace.yaml").read_text()  # the comment saying why


def test_rbac_is_get_list_watch_on_exactly_what_the_inventory_watches(base):
    role = one(base, "ClusterRole", "flowwarden")
    granted = set()
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["get", "list", "watch"], rule
        assert "*" not in rule["apiGroups"] + rule["resources"] and not rule.get("resourceNames"), rule
        granted |= {(group, resource) for group in rule["apiGroups"] for resource in rule["resources"]}
    watched = {(r.api_version.rpartition("/")[0], r.name) for r in RESOURCES}
    assert granted == watched
    assert not {r for _g, r in granted} & {"secrets", "configmaps"}
    binding = one(base, "ClusterRoleBinding", "flowwarden")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flowwarden"}
    account = one(base, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    assert _pod(base)["serviceAccountName"] == account["name"]
    assert not [o for o in base if o["kind"] in ("Role", "RoleBinding")]


def test_the_daemonset_runs_with_least_privilege(base):
    pod, agent = _pod(base), _agent(base)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not pod.get("hostPID") and not pod.get("hostIPC") and not pod.get("shareProcessNamespace")
    assert all(set(v) == {"name", "configMap"} for v in pod["volumes"]), "no hostPath or other volume"
    security = agent["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    seccomp = security.get("seccompProfile") or pod["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "RuntimeDefault"}
    assert "ports" not in agent or all("hostPort" not in p for p in agent["ports"])


def test_the_daemonset_reaches_every_node_and_rolls_gently(base):
    ds, pod = one(base, "DaemonSet"), _pod(base)
    assert pod["priorityClassName"] == "system-node-critical"
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"]
    assert strategy["rollingUpdate"]["maxSurge"] == 0  # two agents would both bind the node's port
    taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
              {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"},
              {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
              {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
              {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
              {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    for taint in taints:
        assert any(_tolerates(t, taint) for t in pod["tolerations"]), taint
    assert not any(t.get("tolerationSeconds") for t in pod["tolerations"])  # never evicted for a taint


def _tolerates(toleration: dict, taint: dict) -> bool:
    """The Kubernetes rule (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("key") and toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value", "") == taint.get("value", "")


def test_the_agent_container_probes_limits_and_image(base):
    agent = _agent(base)
    args = _parser().parse_args(agent["args"])
    assert args.command.__name__ == "cmd_run"
    port = int(args.listen.rpartition(":")[2])
    named = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert named == {"metrics": port}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = agent[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("metrics", port)
    resources = agent["resources"]
    assert _cpu(resources["requests"]["cpu"]) <= _cpu(resources["limits"]["cpu"])
    assert _mem(resources["requests"]["memory"]) <= _mem(resources["limits"]["memory"])
    assert "Measured" in (DAEMONSET / "daemonset.yaml").read_text()  # the figures they come from
    image, _, tag = agent["image"].rpartition(":")
    assert image == "ghcr.io/flowwarden/flowwarden" and tag == VERSION
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def _cpu(v: str) -> float:
    return float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)


def _mem(v: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(v[:-2]) * units[v[-2:]] if v[-2:] in units else int(v)


def test_the_configmap_is_mounted_read_only_where_the_agent_and_its_reload_look(base):
    pod, agent = _pod(base), _agent(base)
    config = Path(_parser().parse_args(agent["args"]).config)
    (mount,) = agent["volumeMounts"]
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts are never updated
    assert Path(mount["mountPath"]) == config.parent
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = one(base, "ConfigMap", volume["configMap"]["name"])
    assert config.name in configmap["data"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["CONFIG_DIR"] == mount["mountPath"]
    assert agent["command"][:2] == ["/bin/sh", "-c"] and "kill -HUP" in agent["command"][2]


def test_the_service_and_servicemonitor_make_the_job_flowwarden(base, monitoring):
    service, pod_labels = one(base, "Service"), one(base, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["metadata"]["name"] == "flowwarden" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    monitor = one(monitoring, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert "jobLabel" not in monitor  # so the job is the Service's name: job="flowwarden"
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    assert {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
            "targetLabel": "node"} in endpoint["relabelings"]


def test_every_alert_has_severity_summary_description_and_a_runbook_section(monitoring):
    rules = [r for g in one(monitoring, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == list(ALERTS)
    doc = (ROOT / "docs" / "alerts.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", doc, flags=re.M)}
    for rule in rules:
        # FlowwardenBuiltinRuleViolated keeps each rule's own severity
        assert rule["labels"]["severity"] in ("critical", "warning", "{{ $labels.severity }}"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and "{{ $labels." in annotations["description"], rule["alert"]
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/alerts.md") and anchor == rule["alert"].lower() and anchor in anchors
        section = doc.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for must in ("kubectl logs", "flowwarden", "Silence"):
            assert must in section, (rule["alert"], must)


def test_the_dashboard_is_a_grafana_configmap_with_every_panel_asked_for(monitoring):
    configmap = one(monitoring, "ConfigMap", "flowwarden-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name, text), = configmap["data"].items()
    assert name == "flowwarden.json"
    dashboard = json.loads(text)
    assert dashboard == json.loads((MONITORING / "dashboards" / "flowwarden.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("flowwarden_violations_total", "flowwarden_enforcement_gaps_total",
                   "flowwarden_tls_connections_total", 'kind="plaintext"', "flowwarden_capture_kernel_drops_total",
                   "flowwarden_capture_queue_batches", "flowwarden_capture_interfaces", "flowwarden_kube_synced",
                   "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert metric in exprs, metric
    assert "by (kind, src_namespace, dst_namespace)" in exprs and "by (node)" in exprs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_readme_deploy_section_builds_and_its_commands_select_the_agents(base, tmp_path):
    section = (ROOT / "README.md").read_text().split("\n## Deploy\n", 1)[1]
    (overlay,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    kustomization = yaml.safe_load(overlay)
    relocate = lambda p: os.path.relpath(ROOT / p.removeprefix("../flowwarden/"), tmp_path)
    kustomization["resources"] = [relocate(p) for p in kustomization["resources"]]
    kustomization["components"] = [relocate(p) for p in kustomization["components"]]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    kinds = {o["kind"] for o in kustomize(tmp_path)}
    assert {"DaemonSet", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert "kubectl apply -k daemonset/" in section
    (logs,) = re.findall(r"kubectl logs -n (\S+) -l (\S+)=(\S+)", section)
    ds = one(base, "DaemonSet")
    assert logs == (ds["metadata"]["namespace"], *next(iter(ds["spec"]["template"]["metadata"]["labels"].items())))
