"""NetpolEngine/NetpolJudge behaviour: cache and invalidation, non-pod ends,
Services with backends, findings, what-if extras and explanations."""
from __future__ import annotations

import dataclasses

from agent.judges.netpol import NetpolEngine
from agent.judges.netpol_judges import NetpolJudge, policy_change
from agent.model import (
    ALLOW, CRITICAL, DENY, INFO, NODE, POLICY_CHANGE, POLICY_VIOLATION, SERVICE, WARNING, Endpoint,
    Flow, Namespace)

DENY_ALL_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
ONLY_FROM_B = {"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}
FROM_NS_Y = {"podSelector": {"matchLabels": {"pod": "a"}},
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}


def flow(src_ip, dst_ip, port=80, *, established=False, protocol="TCP"):
    return Flow(protocol=protocol, src_ip=src_ip, src_port=40000, dst_ip=dst_ip, dst_port=port,
                first_seen=0.0, last_seen=1.0, established=established)


def test_a_repeated_decision_comes_from_the_cache(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    engine = NetpolEngine(e2e)
    first = engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP")
    again = engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP")
    assert again is first and engine.cold_decisions == 1


def test_a_pod_label_change_gives_a_fresh_decision_for_the_same_uid(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    old = e2e.pod("x/c")
    new = dataclasses.replace(old, labels={"pod": "b"})
    e2e.add_pod(new)
    engine.on_change("Pod", old, new)
    assert e2e.ep("x/c").uid == old.uid
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW


def test_a_relabelled_pod_is_judged_by_its_new_labels_and_other_decisions_are_kept(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    engine = NetpolEngine(e2e)
    kept = engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP")
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    old = e2e.pod("x/c")
    engine.on_change("Pod", old, e2e.add_pod(dataclasses.replace(old, labels={"pod": "b"})))
    assert engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW
    assert engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP") is kept


def test_replicas_with_the_same_labels_share_one_cold_decision_and_keep_their_own_reasons(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    for i in range(5):
        e2e.new_pod(f"y/replica-{i}", f"192.168.2.{100 + i}", labels={"pod": "c"})
    engine = NetpolEngine(e2e)
    decisions = [engine.decide(e2e.ep(f"y/replica-{i}"), e2e.ep("x/a"), 80, "TCP") for i in range(5)]
    assert engine.cold_decisions == 1 and {d.verdict for d in decisions} == {DENY}
    assert [d.reasons[1].split(" admits ")[1] for d in decisions] == [f"y/replica-{i} on 80/TCP" for i in range(5)]


def test_an_unchanged_pod_update_keeps_the_cache(e2e):
    engine = NetpolEngine(e2e)
    engine.decide(e2e.ep("x/c"), e2e.ep("x/a"), 80, "TCP")
    pod = e2e.pod("x/c")
    engine.on_change("Pod", pod, dataclasses.replace(pod, annotations={"a": "b"}))
    assert engine.cache_size == 1


def test_a_namespace_label_change_is_seen_by_namespace_selectors(e2e):
    e2e.policy("x/p", FROM_NS_Y)
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("y/b"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    old, new = e2e.ns["y"], Namespace(name="y", labels={"ns": "y", "team": "blue"})
    e2e.ns["y"] = new
    engine.on_change("Namespace", old, new)
    assert engine.decide(e2e.ep("y/b"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW
    assert engine.decide(e2e.ep("z/b"), e2e.ep("x/a"), 80, "TCP").verdict == DENY


def test_a_policy_change_applies_where_it_selects_and_keeps_the_other_verdicts(e2e):
    engine = NetpolEngine(e2e)
    kept = engine.decide(e2e.ep("y/a"), e2e.ep("z/a"), 80, "TCP")
    engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP")
    new = e2e.policy("x/deny", DENY_ALL_INGRESS)
    engine.on_change("NetworkPolicy", None, new)
    assert engine.decide(e2e.ep("y/a"), e2e.ep("z/a"), 80, "TCP").verdict == kept.verdict == ALLOW
    assert engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), 80, "TCP").verdict == DENY


def test_pods_no_selector_tells_apart_share_a_class_until_a_policy_does(e2e):
    # A pod's class is which podSelectors match its labels, not the labels themselves: y/b and y/c
    # differ in labels, but no policy selects on them, so one cold decision serves both ...
    e2e.policy("x/p", FROM_NS_Y)
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("y/b"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    assert engine.decide(e2e.ep("y/c"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    assert engine.cold_decisions == 1
    # ... until a policy selects one of them: then they are judged apart.
    new = e2e.policy("x/from-c", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}]})
    engine.on_change("NetworkPolicy", None, new)
    assert engine.decide(e2e.ep("y/b"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    assert engine.decide(e2e.ep("y/c"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW


def test_a_full_cache_starts_over_instead_of_growing(e2e):
    engine = NetpolEngine(e2e, max_cache=2)
    for port in (1, 2, 3):
        engine.decide(e2e.ep("y/a"), e2e.ep("x/a"), port, "TCP")
    assert engine.cache_size == 1


def test_node_and_external_ends_are_matched_only_by_ip_block(e2e):
    e2e.policy("x/p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"podSelector": {}}, {"namespaceSelector": {}}]}]})
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("10.10.0.1"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    assert engine.decide(e2e.ep("8.8.8.8"), e2e.ep("x/a"), 80, "TCP").verdict == DENY
    e2e.policy("x/nodes", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.0/16"}}]}]})
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("10.10.0.1"), e2e.ep("x/a"), 80, "TCP").verdict == ALLOW


def test_host_network_and_finished_pods_are_not_subject_to_pod_policies(view):
    view.add_namespace("x")
    view.policy("x/deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    view.new_pod("x/host", "10.0.0.1", host_network=True, node="n1")
    view.new_pod("x/done", "10.0.0.2", phase="Succeeded")
    view.new_pod("x/live", "10.0.0.3")
    engine = NetpolEngine(view)
    host, done, live = view.ep("x/host"), view.endpoint("10.0.0.2"), view.ep("x/live")
    assert host.kind == NODE and done.kind != "pod"
    assert engine.decide(host, done, 80, "TCP").verdict == ALLOW
    assert engine.decide(host, live, 80, "TCP").verdict == DENY


def test_ip_block_matches_ipv6_addresses_and_their_except(view):
    view.add_namespace("x")
    view.new_pod("x/a", "fd00::10")
    view.policy("x/p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}]}]})
    engine = NetpolEngine(view)
    src = view.ep("x/a")
    verdicts = [engine.decide(src, view.ep(ip), 443, "TCP").verdict
                for ip in ("2001:db8::1", "2001:db8:1::1", "2001:db9::1", "192.0.2.1")]
    assert verdicts == [ALLOW, DENY, DENY, DENY]


def test_named_port_agreeing_on_several_containers_resolves(view):
    from agent.model import ContainerPort
    view.add_namespace("x")
    ports = (ContainerPort(8080, "TCP", "http"), ContainerPort(8080, "TCP", "http"))
    view.new_pod("x/srv", "10.0.0.1", ports=ports)
    view.new_pod("x/cli", "10.0.0.2")
    view.policy("x/p", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    engine = NetpolEngine(view)
    assert engine.decide(view.ep("x/cli"), view.ep("x/srv"), 8080, "TCP").verdict == ALLOW
    assert engine.decide(view.ep("x/srv"), view.ep("x/cli"), 8080, "TCP").verdict == DENY


def test_egress_named_port_to_a_non_pod_matches_nothing(e2e):
    e2e.policy("x/p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]})
    engine = NetpolEngine(e2e)
    assert engine.decide(e2e.ep("x/a"), e2e.ep("y/a"), 80, "TCP").verdict == ALLOW
    assert engine.decide(e2e.ep("x/a"), e2e.ep("8.8.8.8"), 80, "TCP").verdict == DENY


def test_deny_reason_names_policy_pod_peer_and_port(e2e):
    e2e.policy("x/allow-api", ONLY_FROM_B)
    d = NetpolEngine(e2e).decide(e2e.ep("y/c"), e2e.ep("x/a"), 5432, "TCP")
    assert d.verdict == DENY and d.policies == ("x/allow-api",)
    assert "ingress denied: x/allow-api selects x/a but no rule admits y/c on 5432/TCP" in d.reasons
    assert d.ingress.as_dict() == {"isolated": True, "allowed": False, "selected_by": ["x/allow-api"],
                                   "allowed_by": None}
    assert d.egress.isolated is False


def test_allow_names_the_admitting_policy_rule_peer_and_port(e2e):
    e2e.policy("x/deny", DENY_ALL_INGRESS)
    e2e.policy("x/web", {"podSelector": {}, "ingress": [
        {"ports": [{"port": 22}]}, {"from": [{"podSelector": {"matchLabels": {"pod": "c"}}},
                                            {"podSelector": {"matchLabels": {"pod": "b"}}}],
                                   "ports": [{"port": 81}, {"port": 80}]}]})
    d = NetpolEngine(e2e).decide(e2e.ep("x/b"), e2e.ep("x/a"), 80, "TCP")
    assert d.verdict == ALLOW and d.policies == ("x/web",)
    assert d.ingress.selected_by == ("x/deny", "x/web")
    assert d.ingress.allowed_by == {"policy": "x/web", "rule": 1, "peer": 1, "port": 1}


def test_a_service_flow_is_denied_if_any_backend_denies(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    svc = Endpoint(ip="10.96.0.10", kind=SERVICE, namespace="x", service="api",
                   candidates=(e2e.ep("x/a"), e2e.ep("x/c")))
    judge = NetpolJudge(e2e)
    assert judge.decide_flow(e2e.ep("x/b"), svc, 80, "TCP").verdict == ALLOW
    d = judge.decide_flow(e2e.ep("y/b"), svc, 80, "TCP")
    assert d.verdict == DENY and d.policies == ("x/p",)
    assert d.reasons[0] == "service x/api (10.96.0.10): 1 of 2 backends deny: x/a"


def test_the_judge_reports_established_denied_flows_as_critical(e2e):
    e2e.policy("x/p", ONLY_FROM_B)
    judge = NetpolJudge(e2e)
    src, dst = e2e.ep("y/c"), e2e.ep("x/a")
    [gap] = judge.judge(flow(src.ip, dst.ip, established=True), src, dst)
    [attempt] = judge.judge(flow(src.ip, dst.ip), src, dst)
    assert (gap.kind, gap.severity, gap.policies) == (POLICY_VIOLATION, CRITICAL, ("x/p",))
    assert attempt.severity == WARNING and attempt.reasons == gap.reasons
    assert judge.judge(flow(e2e.ep("x/b").ip, dst.ip), e2e.ep("x/b"), dst) == []


def test_the_judge_never_denies_before_the_inventory_synced(e2e):
    e2e.policy("x/p", DENY_ALL_INGRESS)
    e2e.synced = False
    src, dst = e2e.ep("y/c"), e2e.ep("x/a")
    assert NetpolJudge(e2e).judge(flow(src.ip, dst.ip), src, dst) == []


def test_extra_policies_are_added_on_top_and_replace_same_named_ones(e2e):
    from agent.model import NetworkPolicy
    e2e.policy("x/p", ONLY_FROM_B)
    allow_c = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}
    on_top = NetpolEngine(e2e, extra_policies=[NetworkPolicy("x", "q", allow_c)])
    replaced = NetpolEngine(e2e, extra_policies=[NetworkPolicy("x", "p", allow_c)])
    b, c = e2e.ep("x/b"), e2e.ep("x/c")
    a = e2e.ep("x/a")
    assert [on_top.decide(s, a, 80, "TCP").verdict for s in (b, c)] == [ALLOW, ALLOW]
    assert [replaced.decide(s, a, 80, "TCP").verdict for s in (b, c)] == [DENY, ALLOW]
    assert on_top.policies("x") == ("x/p", "x/q")


def test_what_if_reports_a_verdict_flip_with_before_and_after(e2e):
    from agent.model import NetworkPolicy
    before = NetpolEngine(e2e)
    after = NetpolEngine(e2e, extra_policies=[NetworkPolicy("x", "lock", DENY_ALL_INGRESS)])
    src, dst = e2e.ep("y/a"), e2e.ep("x/a")
    b, a = before.decide(src, dst, 80, "TCP"), after.decide(src, dst, 80, "TCP")
    change = policy_change(b, a)
    assert (change.kind, change.severity, change.policies) == (POLICY_CHANGE, WARNING, ("x/lock",))
    assert change.detail["before"] == ALLOW and change.detail["after"] == DENY
    assert policy_change(a, b).severity == INFO
    assert policy_change(b, b) is None
