"""`evaluate` building blocks: loading what-if policy files and judging JSON Lines flows."""
from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import orjson
import pytest

from agent.evaluate import evaluate_lines, load_policy_files
from agent.sinks.events import endpoint_record
from agent.judges.netpol import PolicyError
from agent.model import Endpoint


def _memory_view_module():
    """tests/judges/conftest.py (the in-memory ClusterView), loaded by path."""
    name = "netpol_memory_view"
    if name not in sys.modules:
        path = Path(__file__).parent / "judges" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


MULTI_DOC = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-api, namespace: db}
spec:
  podSelector: {matchLabels: {app: pg}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: api}}}]
    ports: [{port: 5432}]
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-egress}
  spec: {podSelector: {}, policyTypes: [Egress]}
---
"""
POLICY_LIST_JSON = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "items": [
    {"kind": "NetworkPolicy", "metadata": {"name": "lock", "namespace": "web"},
     "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]}


@pytest.fixture
def cluster():
    mod = _memory_view_module()
    view = mod.MemoryView()
    for ns in ("db", "web", "api"):
        view.add_namespace(ns)
    view.new_pod("db/pg-0", "10.0.1.3", labels={"app": "pg"})
    view.new_pod("web/frontend-7d9", "10.0.0.5", labels={"app": "frontend"})
    view.new_pod("api/server-1", "10.0.2.9", labels={"app": "api"})
    return view


def test_policies_load_from_a_folder_of_yaml_and_json_documents(tmp_path):
    (tmp_path / "a.yaml").write_text(MULTI_DOC)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(orjson.dumps(POLICY_LIST_JSON))
    (tmp_path / "notes.txt").write_text("not a policy")
    got = load_policy_files([str(tmp_path)])
    assert [(p.namespace, p.name) for p in got] == [("db", "allow-api"), ("default", "deny-egress"), ("web", "lock")]
    assert got[0].spec["ingress"][0]["ports"] == [{"port": 5432}]


def test_an_invalid_policy_file_is_an_error_naming_file_object_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: NetworkPolicy\nmetadata: {name: allow-api, namespace: db}\n"
                   "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_files([str(bad)])
    assert str(caught.value) == (f'{bad}: networkpolicy db/allow-api: '
                                 'spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33"')


@pytest.mark.parametrize("text,message", [
    ("kind: Deployment\nmetadata: {name: web}\n", "Deployment web: only NetworkPolicy objects are accepted"),
    ("kind: NetworkPolicy\napiVersion: extensions/v1beta1\nmetadata: {name: p}\n", "is not networking.k8s.io/v1"),
    ("kind: NetworkPolicy\nmetadata: {}\n", "metadata.name is required"),
    ("kind: [unclosed\n", "cannot read policies"),
])
def test_an_unusable_policy_file_is_a_value_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_policy_files([str(path)])
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_a_missing_policy_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_policy_files([str(tmp_path / "nope.yaml")])


def run(view, lines, *, explain=False, candidates=()):
    out = io.BytesIO()
    evaluate_lines(view, lines, out, explain=explain, at=0.0, candidates=candidates)
    return out.getvalue()


def test_every_flow_line_gets_one_verdict_line_in_order(cluster, tmp_path):
    (tmp_path / "p.yaml").write_text(MULTI_DOC)
    cluster.add_policy(load_policy_files([str(tmp_path)])[0])
    lines = [b'{"src_ip": "10.0.0.5", "dst_ip": "10.0.1.3", "dst_port": 5432, "protocol": "TCP", "src_port": 40000}\n',
             "\n",
             '{"src_ip": "10.0.2.9", "dst_ip": "10.0.1.3", "dst_port": 5432}']
    first, second = [orjson.loads(x) for x in run(cluster, lines).splitlines()]
    assert first["verdict"] == "deny" and second["verdict"] == "allow"
    assert first["src"] == {"ip": "10.0.0.5", "port": 40000, "kind": "pod", "namespace": "web",
                            "pod": "frontend-7d9", "uid": "uid-web-frontend-7d9", "node": None,
                            "workload": None, "service": None, "attribution": "unique"}
    assert first["dst"]["port"] == 5432 and second["src"]["port"] is None
    assert first["ingress"] == {"isolated": True, "allowed": False, "selected_by": ["db/allow-api"], "allowed_by": None}
    assert first["egress"]["isolated"] is False
    assert first["reasons"][1] == "ingress denied: db/allow-api selects db/pg-0 but no rule admits web/frontend-7d9 on 5432/TCP"
    assert second["ingress"]["allowed_by"] == {"policy": "db/allow-api", "rule": 0, "peer": 0, "port": 0}
    assert first["policies"] == ["db/allow-api"]


def test_explain_prints_the_reasons_as_text(cluster, tmp_path):
    (tmp_path / "p.yaml").write_text(MULTI_DOC)
    cluster.add_policy(load_policy_files([str(tmp_path)])[0])
    text = run(cluster,
               ['{"src_ip": "10.0.0.5", "dst_ip": "10.0.1.3", "dst_port": 5432, "protocol": "TCP"}'],
               explain=True).decode()
    assert text.splitlines() == [
        "deny: web/frontend-7d9 -> db/pg-0 on 5432/TCP [db/allow-api]",
        "  egress open: no policy selects web/frontend-7d9 for egress",
        "  ingress denied: db/allow-api selects db/pg-0 but no rule admits web/frontend-7d9 on 5432/TCP"]


def test_with_policies_changes_the_verdict_of_a_what_if_run(cluster, tmp_path):
    (tmp_path / "lock.json").write_bytes(orjson.dumps(POLICY_LIST_JSON))
    line = ['{"src_ip": "10.0.2.9", "dst_ip": "10.0.0.5", "dst_port": 80, "protocol": "TCP"}']
    before = orjson.loads(run(cluster, line))
    after = orjson.loads(run(cluster, line, candidates=load_policy_files([str(tmp_path)])))
    assert (before["verdict"], after["verdict"]) == ("allow", "deny")
    assert after["policies"] == ["web/lock"]


@pytest.mark.parametrize("line,message", [
    ("not json", "flows line 2: not JSON"),
    ("[1]", "flows line 2: expected a JSON object"),
    ('{"dst_ip": "10.0.0.1", "dst_port": 80}', "flows line 2: src_ip must be a non-empty string"),
    ('{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": "80"}', "flows line 2: dst_port must be an integer"),
    ('{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 0}', "flows line 2: dst_port"),
    ('{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 80, "protocol": "ICMP"}', "flows line 2: protocol"),
])
def test_a_bad_flow_line_is_an_error_naming_its_line_number(cluster, line, message):
    ok = '{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 80}'
    with pytest.raises(ValueError) as caught:
        run(cluster, [ok, line])
    assert message in str(caught.value)


def test_an_endpoint_has_nulls_where_unknown():
    assert endpoint_record(Endpoint(ip="8.8.8.8"), 53) == {
        "ip": "8.8.8.8", "port": 53, "kind": "external", "namespace": None, "pod": None,
        "uid": None, "node": None, "workload": None, "service": None, "attribution": "unique"}
