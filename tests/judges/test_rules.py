"""The built-in rules (agent/judges/rules/) on a real inventory: what fires, what must not, and the config.

The cluster: a control-plane node cp-1 (with a pod and the API server's endpoint on it), a worker
node-1 with pods and a hostNetwork exporter, NodePort Services exposed and not. Flows are given by
their metadata, judged at the stage each rule speaks (as the pipeline does), from the source's side.
"""
from __future__ import annotations

import orjson
import pytest

from agent.config import Config, ConfigError
from agent.inventory.snapshot import load_cluster
from agent.judges import build_judges
from agent.model import ANSWER, CLASSIFIED, EGRESS, INGRESS, RULE, START, TCP, UDP, Flow

CP, NODE1, EXTERNAL = "172.18.0.4", "172.18.0.2", "203.0.113.9"
WEB, DB, CP_POD, API_VIP = "10.244.1.10", "10.244.1.20", "10.244.0.5", "10.96.0.1"


def _meta(name, namespace=None, **labels):
    meta = {"name": name, "uid": f"uid-{namespace}-{name}", "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _pod(ns, name, ip, node, *, host_network=False, ports=(), **labels):
    return {"kind": "Pod", "metadata": _meta(name, ns, **labels),
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"containerPort": p} for p in ports]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]}}


def _service(ns, name, ips, ports, annotations=None):
    meta = _meta(name, ns)
    meta["annotations"] = annotations or {}
    return {"kind": "Service", "metadata": meta, "spec": {"clusterIPs": ips, "ports": ports}}


def _node(name, ip, **labels):
    return {"kind": "Node", "metadata": _meta(name, **labels),
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    items = [{"kind": "Namespace", "metadata": _meta(ns)} for ns in ("default", "shop", "monitoring", "kube-system")]
    items += [
        _node("cp-1", CP, **{"node-role.kubernetes.io/control-plane": ""}), _node("node-1", NODE1),
        _pod("shop", "web", WEB, "node-1", app="web"), _pod("shop", "db", DB, "node-1", app="db"),
        _pod("kube-system", "cp-agent", CP_POD, "cp-1", app="cp-agent"),
        _pod("monitoring", "exporter", NODE1, "node-1", host_network=True, ports=(9100,), app="exporter"),
        _service("default", "kubernetes", [API_VIP], [{"port": 443, "targetPort": 6443}]),
        {"kind": "EndpointSlice", "metadata": {"name": "kubernetes", "namespace": "default",
                                               "labels": {"kubernetes.io/service-name": "kubernetes"}},
         "endpoints": [{"addresses": [CP]}]},
        _service("shop", "front", ["10.96.1.1"], [{"port": 80, "targetPort": 8080, "nodePort": 30080}]),
        _service("shop", "public", ["10.96.1.2"], [{"port": 80, "targetPort": 8080, "nodePort": 30081}],
                 {"flowwarden.io/expose": "true"}),
    ]
    path = tmp_path_factory.mktemp("rules") / "cluster.json"
    path.write_bytes(orjson.dumps({"kind": "List", "items": items}))
    return load_cluster(path)


def _rules(view, rules: dict | None = None, judges=("rules",)):
    return build_judges(Config(rules=rules or {}, judges=list(judges)), view)


def _found(judges, view, src, dst, port, *, protocol=TCP, app=None, established=True, side="both", **flow):
    """The rule findings of a flow, (rule, check) each, judged at every stage as the pipeline does."""
    f = Flow(protocol, src, 40000, dst, port, 0.0, 0.0, established=established, packets_dst=int(established),
             app=app, side=side, **flow)
    ends = view.endpoint(src, 0.0), view.host_port(dst, port, protocol) or view.endpoint(dst, 0.0)
    return sorted((x.detail["rule"], x.detail.get("check")) for stage in (START, ANSWER, CLASSIFIED)
                  for j in judges if j.stage == stage for x in j.judge(f, *ends) if x.kind == RULE)


@pytest.mark.parametrize("src, dst, port, kw, want", [
    # cloud-metadata: any pod, any port; not the node or a hostNetwork pod
    (WEB, "169.254.169.254", 80, {}, [("cloud-metadata", None)]),
    (WEB, "fd00:ec2::254", 53, {"protocol": UDP}, [("cloud-metadata", None)]),
    (NODE1, "169.254.169.254", 80, {}, []),
    (WEB, "169.254.169.254", 80, {"established": False}, []),  # unanswered or refused: it reached nothing
    # etcd-access: not from the control plane; plaintext from anyone
    (WEB, CP, 2379, {"app": "tls"}, [("etcd-access", "access")]),
    (NODE1, CP, 2380, {"app": "tls"}, [("etcd-access", "access")]),
    (CP_POD, CP, 2379, {"app": "tls"}, []),
    (CP, CP, 2379, {"app": "tls"}, []),
    (CP, CP, 2380, {"app": "http"}, [("etcd-access", "plaintext")]),
    (WEB, CP, 2379, {"established": False}, []),
    (WEB, CP, 2379, {"app": "unknown"}, [("etcd-access", "access")]),  # no byte seen: not plaintext
    # kubelet-access: a pod to a node's 10250; anyone to 10255
    (WEB, NODE1, 10250, {}, [("kubelet-access", None)]),
    (CP, NODE1, 10250, {}, []),
    (CP, NODE1, 10255, {}, [("kubelet-access", None)]),
    (WEB, DB, 10250, {}, []),  # a pod's own 10250 is no kubelet
    # docker-daemon: 2375 from anyone, 2376 from a pod
    (CP, NODE1, 2375, {}, [("docker-daemon", None)]),
    (WEB, NODE1, 2376, {}, [("docker-daemon", None)]),
    (CP, NODE1, 2376, {}, []),
    (CP, NODE1, 2375, {"established": False}, []),  # a scan's refused probe
    # apiserver-plaintext: the kubernetes Service's ClusterIP and endpoints, 443/6443
    (WEB, CP, 6443, {"app": "http"}, [("apiserver-plaintext", None)]),
    (WEB, API_VIP, 443, {"app": "unknown-plaintext"}, [("apiserver-plaintext", None)]),
    (WEB, CP, 6443, {"app": "tls"}, []),
    (WEB, DB, 6443, {"app": "http"}, []),
    # plaintext-credentials-protocol: presence of a login in a plaintext protocol
    (WEB, DB, 8080, {"app": "http", "credentials": "http-basic"}, [("plaintext-credentials-protocol", None)]),
    (WEB, DB, 8080, {"app": "http"}, []),
    # nodeport-external: from outside the cluster to a NodePort not annotated exposed
    (EXTERNAL, NODE1, 30080, {}, [("nodeport-external", None)]),
    (EXTERNAL, NODE1, 30081, {}, []),
    (EXTERNAL, NODE1, 30080, {"protocol": UDP}, []),  # the NodePort is TCP
    (WEB, NODE1, 30080, {}, []),
    # host-network-listener: a pod reaches (established) a listener on a node address
    (WEB, NODE1, 9100, {}, [("host-network-listener", None)]),
    (WEB, NODE1, 22, {}, [("host-network-listener", None)]),
    (WEB, NODE1, 22, {"established": False}, []),  # refused: no listener
    (WEB, CP, 6443, {"app": "tls"}, []),  # the API server is not a stray listener
])
def test_each_rule_fires_on_its_traffic_and_only_there(view, src, dst, port, kw, want):
    assert _found(_rules(view), view, src, dst, port, **kw) == want


def test_rules_speak_for_the_source_side_only(view):
    judges = _rules(view)
    assert _found(judges, view, WEB, CP, 2379, app="tls", side=INGRESS) == []
    assert _found(judges, view, WEB, CP, 2379, app="tls", side=EGRESS) == [("etcd-access", "access")]


def test_a_finding_names_its_rule_and_why_and_never_a_value(view):
    [judge] = [j for j in _rules(view) if j.name == "rule:plaintext-credentials-protocol"]
    f = Flow(TCP, WEB, 40000, DB, 8080, 0.0, 0.0, app="http", credentials="http-basic")
    [finding] = judge.judge(f, view.endpoint(WEB, 0.0), view.endpoint(DB, 0.0))
    assert (finding.kind, finding.severity, finding.requirement) == (RULE, "critical", "rule plaintext-credentials-protocol")
    assert finding.detail == {"rule": "plaintext-credentials-protocol", "credentials": "http-basic"}
    assert "Code layer" in finding.reasons[1]


def test_every_rule_is_on_by_default_but_dns_exfil_shape(view):
    names = {j.name for j in build_judges(Config(), view)}
    assert {n for n in names if n.startswith("rule:")} == {
        "rule:cloud-metadata", "rule:etcd-access", "rule:kubelet-access", "rule:docker-daemon",
        "rule:apiserver-plaintext", "rule:plaintext-credentials-protocol", "rule:nodeport-external",
        "rule:host-network-listener"}


def test_a_rule_can_be_disabled(view):
    judges = _rules(view, {"cloud-metadata": {"enabled": False}})
    assert _found(judges, view, WEB, "169.254.169.254", 80) == []
    assert _found(judges, view, WEB, NODE1, 10250) == [("kubelet-access", None)]


@pytest.mark.parametrize("allow, src, dst, port, silenced", [
    ([{"podSelector": {"matchLabels": {"app": "web"}}}], WEB, NODE1, 10250, True),  # any namespace
    ([{"podSelector": {"matchLabels": {"app": "web"}},
       "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}], WEB, NODE1, 10250, False),
    ([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}], WEB, NODE1, 10250, True),
    ([{"ipBlock": {"cidr": "203.0.113.0/24"}}], EXTERNAL, NODE1, 30080, True),
    ([{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.9/32"]}}], EXTERNAL, NODE1, 30080, False),
])
def test_an_allow_entry_scopes_a_rule_to_its_sources(view, allow, src, dst, port, silenced):
    rules = {"kubelet-access": {"allow": allow}, "nodeport-external": {"allow": allow}}
    assert (_found(_rules(view, rules), view, src, dst, port) == []) == silenced


def test_rule_options_widen_or_narrow_what_fires(view):
    judges = _rules(view, {"host-network-listener": {"ports": [9100, {"port": 22, "protocol": "UDP"}]},
                           "cloud-metadata": {"addresses": ["100.100.100.200"]}})
    assert _found(judges, view, WEB, NODE1, 9100) == []
    assert _found(judges, view, WEB, NODE1, 22) == [("host-network-listener", None)]  # allowed on UDP only
    assert _found(judges, view, WEB, "100.100.100.200", 80) == [("cloud-metadata", None)]
    assert _found(judges, view, WEB, "169.254.169.254", 80) == []


def test_dns_exfil_shape_reads_the_query_name_when_enabled(view):
    judges = _rules(view, {"dns-exfil-shape": {"enabled": True}})
    long_name = "mzxw6ytboi2dqnzrgq3tmmrzgiytmobsha2teojugi3dkmjqgezdgnbv.exfil.example.com"
    assert _found(judges, view, WEB, DB, 53, protocol=UDP, dns_query=long_name) == [("dns-exfil-shape", None)]
    for name in ("kubernetes.default.svc.cluster.local", "api.example.com.shop.svc.cluster.local",
                 "ip-10-0-0-1.eu-west-1.compute.internal"):
        assert _found(judges, view, WEB, DB, 53, protocol=UDP, dns_query=name) == [], name
    [judge] = [j for j in judges if j.name == "rule:dns-exfil-shape"]
    f = Flow(UDP, WEB, 40000, DB, 53, 0.0, 0.0, dns_query=long_name)
    [finding] = judge.judge(f, view.endpoint(WEB, 0.0), view.endpoint(DB, 0.0))
    assert finding.detail["dns"]["domain"] == "example.com" and long_name not in orjson.dumps(finding.detail).decode()


@pytest.mark.parametrize("rules, message", [
    ({"no-such-rule": {}}, "rules.no-such-rule: unknown rule (known: cloud-metadata, etcd-access"),
    ({"cloud-metadata": {"enable": True}}, "rules.cloud-metadata.enable: unknown field (known: enabled, allow, addresses)"),
    ({"cloud-metadata": {"enabled": "yes"}}, "rules.cloud-metadata.enabled: expected true or false"),
    ({"cloud-metadata": False}, "rules.cloud-metadata: expected a mapping, e.g. {enabled: false}"),
    ({"kubelet-access": {"allow": [{"pods": {}}]}}, "rules.kubelet-access.allow[0].pods: unknown field"),
    ({"kubelet-access": {"allow": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
     "rules.kubelet-access.allow[0].ipBlock: cannot be combined with podSelector/namespaceSelector"),
    ({"kubelet-access": {"allow": [{"podSelector": {"matchLabels": {"a": "b c"}}}]}},
     "rules.kubelet-access.allow[0].podSelector"),
    ({"host-network-listener": {"ports": [70000]}}, "rules.host-network-listener.ports[0]: port must be an integer"),
    ({"cloud-metadata": {"addresses": ["metadata"]}}, "rules.cloud-metadata.addresses[0]: expected an IP address"),
    ({"dns-exfil-shape": {"min_entropy": -1}}, "rules.dns-exfil-shape.min_entropy: expected a non-negative number"),
])
def test_a_bad_rules_entry_is_a_start_up_error_naming_the_field(view, rules, message):
    with pytest.raises(ConfigError) as e:
        build_judges(Config(rules=rules, source="flowwarden.yaml"), view)
    assert str(e.value).startswith(f"flowwarden.yaml: {message}")
