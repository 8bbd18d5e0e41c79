"""TlsJudge: requirement precedence, findings, config rules and the TLS metadata it compares."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from agent.decode.app import classify
from agent.decode.app import tls_info
from agent.judges.tls import TlsJudge, load_tls_rules
from agent.model import (
    EXTERNAL, POD, SERVICE, Endpoint, Finding, Flow, Namespace, Service, TlsInfo,
)

REQ, MIN = "flowwarden.io/require-tls", "flowwarden.io/tls-min-version"


@dataclass
class View:
    """A read-only ClusterView for the judge: namespaces and services by pod uid."""
    ns: dict[str, Namespace] = field(default_factory=dict)
    svcs: dict[str, list[Service]] = field(default_factory=dict)
    synced: bool = True

    def namespace(self, name):
        return self.ns.get(name)

    def namespaces(self):
        return list(self.ns.values())

    def services_for_pod(self, uid):
        return self.svcs.get(uid, [])

    def policies(self, namespace):
        return []

    def endpoint(self, ip, at=0.0):
        return Endpoint(ip=ip)


def pod(name="pg-0", ns="db", *, annotations=None, labels=None, ip="10.0.0.5"):
    return Endpoint(ip=ip, kind=POD, namespace=ns, pod=name, uid=f"uid-{name}",
                    labels=labels or {"app": "pg"}, annotations=annotations or {})


def flow(app="postgresql", *, port=5432, tls=None, mid_stream=False, dst_ip="10.0.0.5"):
    return Flow(protocol="TCP", src_ip="10.0.0.9", src_port=40000, dst_ip=dst_ip, dst_port=port,
                first_seen=0.0, last_seen=1.0, app=app, tls=tls, mid_stream=mid_stream)


SRC = Endpoint(ip="10.0.0.9", kind=POD, namespace="web", pod="w", uid="uid-w")


def judge(view, dst, f, rules=()):
    return TlsJudge(view, rules).judge(f, SRC, dst)


def test_plaintext_to_a_pod_port_requiring_tls_is_critical():
    dst = pod(annotations={REQ: "5432,8443"})
    assert judge(View(), dst, flow()) == [Finding(
        kind="plaintext", severity="critical",
        requirement="pod db/pg-0 annotation flowwarden.io/require-tls=5432,8443",
        reasons=("TLS required on 5432/TCP by pod db/pg-0 annotation flowwarden.io/require-tls=5432,8443, "
                 "but the connection starts in plaintext (postgresql)",),
        detail={"app": "postgresql"})]
    assert judge(View(), dst, flow(port=9187)) == []


def test_pod_false_opts_out_of_a_requiring_namespace_and_rules():
    view = View(ns={"db": Namespace("db", {}, {REQ: "true"})})
    rules = load_tls_rules({"tls": {"rules": [{}]}}, source="cfg")
    assert judge(view, pod(annotations={REQ: "false"}), flow(), rules) == []
    assert judge(view, pod(), flow())[0].requirement == "namespace db annotation flowwarden.io/require-tls=true"


def test_service_annotation_beats_namespace_and_a_requiring_service_wins():
    view = View(ns={"db": Namespace("db", {}, {REQ: "false"})},
                svcs={"uid-pg-0": [Service("db", "a-metrics", "s1", (), {REQ: "9187"}),
                                   Service("db", "pg", "s2", ("10.96.0.5",), {REQ: "true"})]})
    [finding] = judge(view, pod(), flow())
    assert finding.requirement == "service db/pg annotation flowwarden.io/require-tls=true"


def test_mid_stream_and_unknown_connections_are_never_plaintext():
    dst = pod(annotations={REQ: "true"})
    assert judge(View(), dst, flow(mid_stream=True)) == []
    assert judge(View(), dst, flow(app="unknown")) == []
    assert judge(View(), dst, flow(app=None)) == []


def test_tls_below_the_minimum_is_a_warning_naming_its_source():
    dst = pod(annotations={REQ: "true", MIN: "1.3"})
    f = flow(app="tls", tls=TlsInfo("1.2", ("1.3", "1.2")))
    assert judge(View(), dst, f) == [Finding(
        kind="tls-version", severity="warning",
        requirement="pod db/pg-0 annotation flowwarden.io/tls-min-version=1.3",
        reasons=("TLS 1.2 negotiated, below the minimum 1.3 set by "
                 "pod db/pg-0 annotation flowwarden.io/tls-min-version=1.3",),
        detail={"version": "1.2", "min_version": "1.3"})]


def test_without_a_server_answer_the_highest_offered_version_counts():
    dst = pod(annotations={MIN: "1.2"})
    old = flow(app="tls", tls=TlsInfo(None, ("1.0", "1.1")))
    new = flow(app="tls", tls=TlsInfo(None, ("1.1", "1.3")))
    assert judge(View(), dst, old)[0].detail == {"version": "1.1", "min_version": "1.2"}
    assert judge(View(), dst, new) == []


def test_tls_meeting_the_requirement_has_no_finding():
    dst = pod(annotations={REQ: "true", MIN: "1.2"})
    assert judge(View(), dst, flow(app="tls", tls=TlsInfo("1.3", ("1.3",)))) == []


CONFIG = {"tls": {"rules": [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
     "podSelector": {"matchLabels": {"app": "pg"}}, "ports": [5432], "minVersion": "1.3"},
    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}, "ports": [{"port": 80, "protocol": "TCP"}]},
]}}


def test_config_rules_apply_where_no_annotation_speaks():
    rules = load_tls_rules(CONFIG, source="flowwarden.yaml")
    view = View(ns={"db": Namespace("db", {})})
    assert judge(view, pod(), flow(), rules)[0].requirement == "rule tls.rules[0]"
    weak = flow(app="tls", tls=TlsInfo("1.2", ("1.2",)))
    assert judge(view, pod(), weak, rules)[0].kind == "tls-version"
    assert judge(view, pod(annotations={REQ: "8443"}), flow(), rules) == []


def test_ip_block_rule_covers_external_destinations_except_the_cluster():
    rules = load_tls_rules(CONFIG, source="flowwarden.yaml")
    outside = Endpoint(ip="93.184.216.34", kind=EXTERNAL)
    inside = Endpoint(ip="10.1.2.3", kind=EXTERNAL)
    assert judge(View(), outside, flow(app="http", port=80, dst_ip=outside.ip), rules)[0].requirement \
        == "rule tls.rules[1]"
    assert judge(View(), inside, flow(app="http", port=80, dst_ip=inside.ip), rules) == []


def test_service_address_is_judged_by_its_backends():
    backend = pod(annotations={REQ: "true"})
    dst = Endpoint(ip="10.96.0.5", kind=SERVICE, namespace="db", service="pg", candidates=(backend,))
    assert judge(View(), dst, flow(dst_ip="10.96.0.5"))[0].kind == "plaintext"


@pytest.mark.parametrize(("cfg", "field"), [
    ({"tls": {"rules": {}}}, "tls.rules"),
    ({"tls": {"rules": [{"ports": [0]}]}}, "tls.rules[0].ports[0]"),
    ({"tls": {"rules": [{}, {"minVersion": "1.1"}]}}, "tls.rules[1].minVersion"),
    ({"tls": {"rules": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}},
     "tls.rules[0].podSelector"),
    ({"tls": {"rules": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}}, "tls.rules[0].ipBlock"),
    ({"tls": {"rules": [{"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}]}}, "tls.rules[0].ipBlock"),
    ({"tls": {"rules": [{"port": [80]}]}}, "tls.rules[0].port"),
])
def test_a_bad_rule_is_rejected_naming_source_and_field(cfg, field):
    with pytest.raises(ValueError, match=r"^flowwarden\.yaml: " + field.replace("[", r"\[").replace("]", r"\]")):
        load_tls_rules(cfg, source="flowwarden.yaml")


def test_tls_info_carries_metadata_only_and_computes_the_fingerprints_on_first_use():
    hello = bytes.fromhex("16030100 2d 01000029 0303") + bytes(32) + bytes.fromhex("00 0002c02f 0100")
    server = bytes.fromhex("16030300 2a 02000026 0303") + bytes(32) + bytes.fromhex("00 c02f 00")
    info = tls_info(classify(hello, server, dst_port=443))
    assert (info.version, info.offered_versions, info.sni, info.alpn, info.cipher) == ("1.2", ("1.2",), None, (), "0xc02f")
    f = Flow("TCP", "10.0.0.1", 40000, "10.0.0.2", 443, 1.0, 1.0, tls=info)
    record = f.tls_fields()
    assert record == {"version": "1.2", "offered_versions": ["1.2"], "sni": None, "alpn": [], "cipher": "0xc02f",
                      "ja4": "t12i010000_f06271c2b022_000000000000", "ja3": record["ja3"]}
    assert len(record["ja3"]) == 32 and f.tls_fields() is record, "computed once"
    assert tls_info(classify(b"GET / HTTP/1.1\r\n", b"", dst_port=80)) is None


def test_a_changed_namespace_annotation_reaches_the_next_flow_after_on_change():
    view = View(ns={"db": Namespace("db", {}, {})})
    judge_ = TlsJudge(view)
    assert judge_.judge(flow(), SRC, pod()) == []
    old = view.ns["db"]
    view.ns["db"] = Namespace("db", {}, {REQ: "true"})
    assert judge_.judge(flow(), SRC, pod()) == [], "cached until the inventory reports the change"
    judge_.on_change("Namespace", old, view.ns["db"])
    [finding] = judge_.judge(flow(), SRC, pod())
    assert finding.requirement == "namespace db annotation flowwarden.io/require-tls=true"
