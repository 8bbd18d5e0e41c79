"""The live inventory through the real `kubernetes` client against tests/kubeapi.py:
sync and readiness, churn, relists, policy updates, metrics, snapshot, client config."""
import os
import time

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agent.inventory.snapshot import load_cluster
from agent.inventory.store import Store
from agent.inventory.kubeconfig import KubeConfigError, dump_cluster, load_api_client
from agent.model import AMBIGUOUS, EXTERNAL, NODE, POD, SERVICE
from agent.sinks.kube_collector import KubeCollector
from tests.kubeapi import (  # noqa: F401 (fixtures)
    FakeClock, endpointslice, eventually, kubeapi, kubeconfig, namespace, networkpolicy, node, pod,
    service, start_inventory, write_kubeconfig,
)

IP = "10.1.0.7"
ALL = ("namespaces", "nodes", "services", "endpointslices", "networkpolicies", "pods")


def pods_of(store: Store) -> dict[str, dict]:
    return {p.name: p for p in store.objects["Pod"].values()}


def test_not_ready_until_every_resource_has_its_first_full_list(kubeapi, start_inventory):
    kubeapi.put(namespace("default"))
    kubeapi.put(pod("web", IP))
    kubeapi.fail("pods", "list", delay=0.5)  # a slow answer
    inventory = start_inventory()
    eventually(lambda: "Namespace" in inventory.store.synced_kinds(), what="namespaces listed")
    assert not inventory.ready and not inventory.store.synced
    assert inventory.stats()["pods"].synced is False
    assert inventory.wait_synced(5)
    assert inventory.ready and inventory.store.synced and inventory.errors == {}
    assert inventory.store.endpoint(IP, time.time()).pod == "web"


def test_lists_are_paginated_and_the_watch_starts_at_the_lists_resource_version(kubeapi, start_inventory):
    for i in range(5):
        kubeapi.put(pod(f"p{i}", f"10.1.0.{i}"))
    listed_at = kubeapi.rv
    inventory = start_inventory(page_size=2)
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.requests_for("pods", "watch"), what="a pods watch")
    verbs = [(r.verb, r.params.get("limit")) for r in kubeapi.requests_for("pods")]
    assert verbs[:4] == [("list", "2"), ("continue", "2"), ("continue", "2"), ("watch", None)]
    watch = kubeapi.requests_for("pods", "watch")[0].params
    assert watch["resourceVersion"] == str(listed_at)
    assert watch["allowWatchBookmarks"] == "true"
    assert 5 <= int(watch["timeoutSeconds"]) <= 10
    assert inventory.stats()["pods"].objects == 5


def test_pod_churn_with_ip_reuse_attributes_each_flow_to_its_own_pod(kubeapi, start_inventory):
    clock = FakeClock(1000)
    inventory = start_inventory(clock=clock)
    store = inventory.store
    assert inventory.wait_synced(5)
    kubeapi.put(pod("old", IP, created=1000, owner=("StatefulSet", "db")))
    eventually(lambda: "old" in pods_of(store), what="old pod")
    clock.now = 1100
    kubeapi.put(pod("new", created=1100, phase="Pending"))  # scheduled while old terminates
    eventually(lambda: "new" in pods_of(store), what="new pod")
    clock.now = 1200
    kubeapi.delete("Pod", "old", "default")
    eventually(lambda: "old" not in pods_of(store), what="old pod deleted")
    clock.now = 1300
    kubeapi.put(pod("new", IP, created=1100))
    eventually(lambda: pods_of(store)["new"].ips, what="new pod IP")

    before = store.endpoint(IP, 1150)  # in flight from the old pod while new was pending
    assert (before.pod, before.uid, before.workload) == ("old", "uid-default-old", "StatefulSet/db")
    assert store.endpoint(IP, 1199.9).pod == "old"
    assert store.endpoint(IP, 1250).pod == "new"
    assert store.endpoint(IP, 1300).pod == "new"
    assert store.endpoint(IP, 999).kind == EXTERNAL

    clock.now = 1400
    kubeapi.put(pod("squatter", IP, created=1400))
    eventually(lambda: "squatter" in pods_of(store), what="second pod with the IP")
    assert store.endpoint(IP, 1450).attribution == AMBIGUOUS


def test_services_endpointslices_nodes_and_dual_stack_arrive_live(kubeapi, start_inventory):
    inventory = start_inventory()
    assert inventory.wait_synced(5)
    kubeapi.put(node("node-a", "192.168.0.10"))
    kubeapi.put(pod("api-1", "10.1.0.11", "fd00::11", created=time.time()))
    kubeapi.put(pod("agent", "192.168.0.10", host_network=True, created=time.time()))
    kubeapi.put(service("api", "10.96.0.5", "fd00:96::5"))
    kubeapi.put(endpointslice("api-abc", "api", ("api-1", "10.1.0.11")))
    store = inventory.store
    eventually(lambda: store.service_backends("default", "api"), what="endpointslice")
    eventually(lambda: store.counts()["Node"] and store.counts()["Service"], what="node and service")
    now = time.time() + 1
    assert store.endpoint("fd00::11", now).pod == "api-1"
    assert store.endpoint("192.168.0.10", now).kind == NODE
    for ip in ("10.96.0.5", "fd00:96::5"):
        found = store.endpoint(ip, now)
        assert (found.kind, found.service) == (SERVICE, "api")
        assert [(c.kind, c.pod) for c in found.candidates] == [(POD, "api-1")]


def test_bookmarks_move_the_point_a_watch_resumes_from(kubeapi, start_inventory):
    inventory = start_inventory()
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.active_watches == 6, what="six watches")
    for i in range(3):
        kubeapi.put(namespace(f"ns{i}"))  # moves the resourceVersion, not pods
    bookmarked = kubeapi.bookmark()
    eventually(lambda: inventory.stats()["namespaces"].objects == 3, what="namespaces")
    time.sleep(0.1)  # the bookmark reaches the pods watch
    kubeapi.drop_watches("pods")
    eventually(lambda: len(kubeapi.requests_for("pods", "watch")) == 2, what="pods watch resumed")
    assert kubeapi.requests_for("pods", "watch")[1].params["resourceVersion"] == str(bookmarked)
    assert len(kubeapi.requests_for("pods", "list")) == 1
    assert inventory.stats()["pods"].restarts == {"connection": 1}


def test_an_expired_watch_relists_without_losing_or_duplicating_state(kubeapi, start_inventory):
    for name in ("a", "b", "c"):
        kubeapi.put(pod(name, f"10.1.0.{ord(name)}", created=1000))
    clock = FakeClock(2000)
    inventory = start_inventory(clock=clock)
    assert inventory.wait_synced(5)
    seen = []
    inventory.store.subscribe(lambda kind, old, new: seen.append(
        (kind, old and old.name, new and new.name)) if kind == "Pod" else None)
    kubeapi.set_down(True)  # the watches drop; meanwhile the cluster changes and compacts
    kubeapi.delete("Pod", "b", "default")
    kubeapi.put(pod("d", "10.1.0.100", created=2050))
    kubeapi.put(pod("a", "10.1.0.97", created=1000, labels={"app": "a", "v": "2"}))
    kubeapi.compact()
    clock.now = 2100
    kubeapi.set_down(False)
    eventually(lambda: set(pods_of(inventory.store)) == {"a", "c", "d"}, what="relisted state")
    eventually(lambda: inventory.stats()["pods"].restarts.get("gone") == 1, what="410 counted")
    assert sorted(seen, key=str) == [("Pod", "a", "a"), ("Pod", "b", None), ("Pod", None, "d")]
    assert pods_of(inventory.store)["a"].labels["v"] == "2"
    assert inventory.store.endpoint("10.1.0.98", 2099).pod == "b"  # until the relist saw it gone
    assert inventory.store.endpoint("10.1.0.98", 2100).kind == EXTERNAL
    assert inventory.store.counts()["Pod"] == 3 and inventory.ready


def test_410_on_a_watch_or_a_continue_token_restarts_the_list_from_scratch(kubeapi, start_inventory):
    for i in range(5):
        kubeapi.put(pod(f"p{i}", f"10.1.0.{i}"))
    kubeapi.fail("pods", "continue", status=410)
    kubeapi.fail("pods", "watch", status=410)
    inventory = start_inventory(page_size=2)
    assert inventory.wait_synced(5)
    eventually(lambda: len(kubeapi.requests_for("pods", "watch")) == 2, what="watch after relist")
    assert len(kubeapi.requests_for("pods", "list")) == 3
    assert inventory.stats()["pods"].restarts == {"gone": 2}
    assert sorted(pods_of(inventory.store)) == [f"p{i}" for i in range(5)]


def test_policy_changes_reach_subscribers_one_by_one_and_status_churn_not_at_all(kubeapi, start_inventory):
    kubeapi.put(pod("web", IP))
    inventory = start_inventory()
    assert inventory.wait_synced(5)
    seen = []
    inventory.store.subscribe(lambda kind, old, new: seen.append((kind, old is not None, new is not None)))
    kubeapi.put(networkpolicy("deny-all"))
    kubeapi.put(networkpolicy("deny-all", policyTypes=["Ingress", "Egress"]))
    churn = pod("web", IP)
    churn["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    kubeapi.put(churn)  # nothing the inventory keeps changed
    kubeapi.delete("NetworkPolicy", "deny-all", "default")
    eventually(lambda: len(seen) >= 3 and not inventory.store.policies("default"), what="policy events")
    time.sleep(0.1)
    assert seen == [("NetworkPolicy", False, True), ("NetworkPolicy", True, True), ("NetworkPolicy", True, False)]


def test_the_collector_reports_sync_objects_restarts_and_event_age(kubeapi, start_inventory):
    kubeapi.put(pod("web", IP))
    clock = FakeClock(5000)
    inventory = start_inventory(clock=clock)
    registry = CollectorRegistry()
    registry.register(KubeCollector(inventory))
    assert registry.get_sample_value("flowwarden_kube_synced", {"resource": "pods"}) in (0.0, 1.0)
    assert inventory.wait_synced(5)
    for resource in ALL:
        assert registry.get_sample_value("flowwarden_kube_synced", {"resource": resource}) == 1.0
    assert registry.get_sample_value("flowwarden_kube_objects", {"resource": "pods"}) == 1.0
    assert registry.get_sample_value("flowwarden_kube_objects", {"resource": "nodes"}) == 0.0
    clock.now = 5042
    assert registry.get_sample_value("flowwarden_kube_last_event_age_seconds", {"resource": "pods"}) == 42.0
    eventually(lambda: kubeapi.active_watches == 6, what="six watches")
    kubeapi.drop_watches("pods")
    eventually(lambda: registry.get_sample_value(
        "flowwarden_kube_watch_restarts_total", {"resource": "pods", "reason": "connection"}) == 1.0,
        what="restart counted")
    kubeapi.put(pod("api", "10.1.0.8"))
    eventually(lambda: registry.get_sample_value("flowwarden_kube_objects", {"resource": "pods"}) == 2.0,
               what="second pod")
    assert registry.get_sample_value("flowwarden_kube_last_event_age_seconds", {"resource": "pods"}) == 0.0


def test_a_snapshot_of_the_live_cluster_reads_back_through_load_cluster(kubeapi, kubeconfig, tmp_path):
    kubeapi.put(namespace("default", team="a"))
    kubeapi.put(node("node-a", "192.168.0.10"))
    kubeapi.put(pod("api-1", "10.1.0.11", ports=((8080, "http"),)))
    kubeapi.put(service("api", "10.96.0.5"))
    kubeapi.put(endpointslice("api-abc", "api", ("api-1", "10.1.0.11")))
    kubeapi.put(networkpolicy("deny-all"))
    snapshot = dump_cluster(load_api_client(kubeconfig), page_size=2)
    assert snapshot["kind"] == "List" and snapshot["apiVersion"] == "v1"
    assert sorted(i["kind"] for i in snapshot["items"]) == [
        "EndpointSlice", "Namespace", "NetworkPolicy", "Node", "Pod", "Service"]
    assert all(i["apiVersion"] for i in snapshot["items"])
    path = tmp_path / "cluster.json"
    path.write_bytes(orjson.dumps(snapshot))
    store = load_cluster(path)
    assert store.synced
    assert store.endpoint("10.1.0.11", 0).ports[0].name == "http"
    assert [c.pod for c in store.endpoint("10.96.0.5", 0).candidates] == ["api-1"]
    assert store.endpoint("192.168.0.10", 0).kind == NODE
    assert [p.name for p in store.policies("default")] == ["deny-all"]
    assert store.namespace("default").labels["team"] == "a"


def test_the_kubeconfig_context_and_file_are_honoured(kubeapi, tmp_path, monkeypatch):
    config = yaml.safe_load(open(write_kubeconfig(tmp_path / "a", kubeapi.url)))
    config["clusters"].append({"name": "other", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "other", "context": {"cluster": "other", "user": "agent"}})
    path = tmp_path / "two"
    path.write_text(yaml.safe_dump(config))
    assert load_api_client(str(path)).configuration.host == kubeapi.url
    assert load_api_client(str(path), "other").configuration.host == "http://127.0.0.1:9"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_api_client(None, "other").configuration.host == "http://127.0.0.1:9"
    with pytest.raises(KubeConfigError, match="context"):
        load_api_client(str(path), "missing")
    with pytest.raises(KubeConfigError, match="nowhere"):
        load_api_client(str(tmp_path / "nowhere"))
    (tmp_path / "bad").write_text("clusters: [")
    with pytest.raises(KubeConfigError, match="bad"):
        load_api_client(str(tmp_path / "bad"))


def test_in_a_pod_the_service_account_is_used_unless_a_kubeconfig_is_given(kubeapi, kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):  # really in a pod
        assert load_api_client().configuration.host == "https://127.0.0.1:1"
    else:
        with pytest.raises(KubeConfigError, match="in-cluster service account"):
            load_api_client()
    assert load_api_client(kubeconfig).configuration.host == kubeapi.url
