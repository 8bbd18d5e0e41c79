"""MetricsSink: verdict and violation counters, bounded namespace labels, forgetting a namespace."""
from prometheus_client import CollectorRegistry

from agent.model import ANSWER, CRITICAL, DENY, POD, POLICY_VIOLATION, Endpoint, Finding, Flow, Judged
from agent.sinks.metrics import MetricsSink


def _flow(established=True):
    return Flow("TCP", "10.0.0.1", 40000, "10.0.0.2", 80, 0.0, 1.0, established=established, verdict=DENY)


def _deny(sink, flow, src, dst):
    """What the pipeline hands the sink at a denied flow's answer (the netpol judge's finding)."""
    finding = Finding(POLICY_VIOLATION, CRITICAL, detail={"enforcement_gap": flow.established})
    sink.emit(Judged(ANSWER, flow, src, dst, (finding,)))


def _pod(ns):
    return Endpoint("10.0.0.1", kind=POD, namespace=ns, pod="p")


def test_a_denied_established_flow_counts_a_violation_and_an_enforcement_gap():
    registry = CollectorRegistry()
    sink = MetricsSink(registry)
    _deny(sink, _flow(), _pod("a"), _pod("b"))
    _deny(sink, _flow(established=False), _pod("a"), _pod("b"))
    labels = {"kind": POLICY_VIOLATION, "rule": "", "severity": CRITICAL, "src_namespace": "a", "dst_namespace": "b",
              "side": "both"}
    assert registry.get_sample_value("flowwarden_violations_total", labels) == 2
    assert registry.get_sample_value("flowwarden_enforcement_gaps_total",
                                     {"src_namespace": "a", "dst_namespace": "b", "side": "both"}) == 1
    assert registry.get_sample_value("flowwarden_flows_total", {"verdict": "deny"}) == 2


def test_namespaces_past_the_limit_share_one_label_value():
    registry = CollectorRegistry()
    sink = MetricsSink(registry, max_namespaces=2)
    for ns in ("a", "b", "c", "d"):
        _deny(sink, _flow(), _pod(ns), _pod(ns))
    gaps = {s.labels["src_namespace"]: s.value for m in registry.collect() if m.name == "flowwarden_enforcement_gaps"
            for s in m.samples if s.name.endswith("_total")}
    assert gaps == {"a": 1, "b": 1, "_other": 2}


def test_a_forgotten_namespace_loses_its_series_and_frees_its_label_slot():
    registry = CollectorRegistry()
    sink = MetricsSink(registry, max_namespaces=1)
    _deny(sink, _flow(), _pod("a"), _pod("a"))
    sink.forget_namespace("a")
    assert registry.get_sample_value("flowwarden_enforcement_gaps_total",
                                     {"src_namespace": "a", "dst_namespace": "a", "side": "both"}) is None
    _deny(sink, _flow(), _pod("b"), _pod("b"))
    assert registry.get_sample_value("flowwarden_enforcement_gaps_total",
                                     {"src_namespace": "b", "dst_namespace": "b", "side": "both"}) == 1


def test_forgetting_a_namespace_named_like_a_severity_keeps_other_series():
    registry = CollectorRegistry()
    sink = MetricsSink(registry)
    _deny(sink, _flow(), _pod("a"), _pod("b"))
    sink.forget_namespace(CRITICAL)  # a namespace called "critical"
    labels = {"kind": POLICY_VIOLATION, "rule": "", "severity": CRITICAL, "src_namespace": "a", "dst_namespace": "b",
              "side": "both"}
    assert registry.get_sample_value("flowwarden_violations_total", labels) == 1
