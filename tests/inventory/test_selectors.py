"""LabelSelector semantics and API-server validation of compile_selector."""
from __future__ import annotations

import pytest

from agent.inventory.selectors import SelectorError, compile_selector, match_all


def sel(**kw):
    return compile_selector(kw, where="spec.podSelector")


def expr(key, op, *values):
    e = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


def test_none_and_empty_selectors_match_everything():
    assert compile_selector(None, where="x") is match_all
    assert compile_selector({}, where="x")({}) is True
    assert compile_selector({"matchLabels": {}, "matchExpressions": []}, where="x")({"a": "b"})


@pytest.mark.parametrize("selector,labels,expected", [
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchLabels": {"app": "web"}}, {}, False),
    ({"matchLabels": {"app": ""}}, {}, False),
    ({"matchLabels": {"app": ""}}, {"app": ""}, True),
    ({"matchLabels": {"app": "web", "tier": "1"}}, {"app": "web"}, False),
    ({"matchExpressions": [expr("app", "In", "web", "db")]}, {"app": "db"}, True),
    ({"matchExpressions": [expr("app", "In", "web")]}, {}, False),
    ({"matchExpressions": [expr("app", "NotIn", "web")]}, {}, True),
    ({"matchExpressions": [expr("app", "NotIn", "web")]}, {"app": "web"}, False),
    ({"matchExpressions": [expr("app", "NotIn", "web")]}, {"app": "db"}, True),
    ({"matchExpressions": [expr("app", "Exists")]}, {"app": ""}, True),
    ({"matchExpressions": [expr("app", "Exists")]}, {}, False),
    ({"matchExpressions": [expr("app", "DoesNotExist")]}, {}, True),
    ({"matchExpressions": [expr("app", "DoesNotExist")]}, {"app": "x"}, False),
    ({"matchLabels": {"tier": "1"}, "matchExpressions": [expr("app", "Exists")]}, {"app": "x"}, False),
    ({"matchLabels": {"tier": "1"}, "matchExpressions": [expr("app", "Exists")]}, {"app": "x", "tier": "1"}, True),
])
def test_selector_matches_like_kubernetes_labels(selector, labels, expected):
    assert compile_selector(selector, where="s")(labels) is expected


@pytest.mark.parametrize("selector,message", [
    ({"matchExpressions": [expr("a", "Foo")]}, "spec.podSelector.matchExpressions[0].operator: unsupported operator 'Foo'"),
    ({"matchExpressions": [expr("a", "in", "x")]}, "unsupported operator 'in'"),
    ({"matchExpressions": [expr("a", "In")]}, "matchExpressions[0].values: must be specified"),
    ({"matchExpressions": [expr("a", "Exists"), expr("b", "NotIn")]}, "matchExpressions[1].values: must be specified"),
    ({"matchExpressions": [expr("a", "DoesNotExist", "x")]}, "matchExpressions[0].values: may not be specified"),
    ({"matchExpressions": [expr("", "Exists")]}, "matchExpressions[0].key"),
    ({"matchExpressions": [expr("a", "In", "bad value!")]}, "matchExpressions[0].values[0]: invalid label value"),
    ({"matchLabels": {"a/b/c": "x"}}, "spec.podSelector.matchLabels: invalid label key 'a/b/c'"),
    ({"matchLabels": {"x" * 64: "v"}}, "invalid label key"),
    ({"matchLabels": {"ok": "v" * 64}}, "invalid label value"),
    ({"matchLabels": {"ok": 3}}, "must be a string"),
    ({"matchLabel": {}}, "spec.podSelector: unknown field 'matchLabel'"),
    ("app=web", "spec.podSelector: must be an object"),
])
def test_selector_the_api_server_rejects_raises_naming_the_field(selector, message):
    with pytest.raises(SelectorError) as caught:
        compile_selector(selector, where="spec.podSelector")
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_prefixed_keys_are_valid():
    match = compile_selector({"matchLabels": {"app.kubernetes.io/name": "web",
                                              "kubernetes.io/metadata.name": "x"}}, where="s")
    assert match({"app.kubernetes.io/name": "web", "kubernetes.io/metadata.name": "x"})
