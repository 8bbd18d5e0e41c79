"""Attribution over time through the real Store, fed API objects through objects.convert."""
from agent.inventory.objects import convert
from agent.inventory.store import Store
from agent.model import AMBIGUOUS, EXTERNAL, NODE, POD, SERVICE, UNIQUE
from tests.kubeapi import endpointslice, node, pod, service

IP = "10.1.0.7"


def feed(store: Store, event: str, d: dict, at: float) -> None:
    kind, obj = convert(d)
    store.apply(kind, event, obj, at=at)


def owner(store: Store, ip: str, at: float) -> str | None:
    return store.endpoint(ip, at).pod


def test_a_new_pod_reusing_an_ip_gets_only_the_flows_after_it_appeared():
    store = Store(grace=120)
    feed(store, "ADDED", pod("old", IP, created=100), at=100)
    feed(store, "DELETED", pod("old", IP, created=100), at=200)
    feed(store, "ADDED", pod("new", IP, created=300), at=300)
    assert owner(store, IP, 150) == "old"
    assert owner(store, IP, 199.9) == "old"
    assert store.endpoint(IP, 250).kind == EXTERNAL
    assert owner(store, IP, 300) == "new"


def test_a_pod_created_before_the_old_owner_left_does_not_take_its_earlier_flows():
    # The new pod was scheduled (created) at 150 while the old one was terminating; it got
    # the IP only after the old one was gone (seen at 260).
    store = Store(grace=120)
    feed(store, "ADDED", pod("old", IP, created=100), at=100)
    feed(store, "ADDED", pod("new", created=150, phase="Pending"), at=150)
    feed(store, "DELETED", pod("old", IP, created=100), at=200)
    feed(store, "MODIFIED", pod("new", IP, created=150), at=260)
    assert owner(store, IP, 180) == "old"
    assert store.endpoint(IP, 180).attribution != AMBIGUOUS
    assert owner(store, IP, 230) == "new"


def test_an_in_flight_flow_from_a_deleted_pod_stays_its_own_until_the_grace_period_ends():
    store = Store(grace=120)
    feed(store, "ADDED", pod("gone", IP, created=100), at=100)
    feed(store, "DELETED", pod("gone", IP, created=100), at=200)
    assert owner(store, IP, 199) == "gone"
    assert store.expire(now=319) == 0
    assert owner(store, IP, 199) == "gone"
    assert store.expire(now=320) == 1
    assert store.endpoint(IP, 199).kind == EXTERNAL


def test_a_finished_pod_stops_owning_its_ip_at_the_phase_change():
    store = Store(grace=120)
    feed(store, "ADDED", pod("job", IP, created=100), at=100)
    feed(store, "MODIFIED", pod("job", IP, created=100, phase="Succeeded"), at=150)
    feed(store, "ADDED", pod("next", IP, created=160), at=160)
    assert owner(store, IP, 140) == "job"
    assert owner(store, IP, 170) == "next"
    feed(store, "DELETED", pod("job", IP, created=100, phase="Succeeded"), at=400)
    assert owner(store, IP, 140) == "job" and owner(store, IP, 500) == "next"


def test_an_ip_change_ends_the_old_claim_and_starts_the_new_one():
    store = Store(grace=120)
    feed(store, "ADDED", pod("web", "10.1.0.1", created=100), at=100)
    feed(store, "MODIFIED", pod("web", "10.1.0.2", created=100), at=200)
    assert owner(store, "10.1.0.1", 150) == "web"
    assert store.endpoint("10.1.0.1", 250).kind == EXTERNAL
    assert owner(store, "10.1.0.2", 250) == "web"


def test_a_status_update_keeps_the_claim_and_refreshes_labels():
    store = Store(grace=120)
    feed(store, "ADDED", pod("web", IP, created=100, labels={"v": "1"}), at=100)
    feed(store, "MODIFIED", pod("web", IP, created=100, labels={"v": "2"}), at=200)
    assert store.endpoint(IP, 150).labels == {"v": "2"}
    assert store.endpoint(IP, 150).attribution == UNIQUE  # one claim, not two


def test_two_live_pods_claiming_one_ip_are_ambiguous_with_both_as_candidates():
    store = Store(grace=120)
    feed(store, "ADDED", pod("a", IP, created=100), at=100)
    feed(store, "ADDED", pod("b", IP, created=110), at=110)
    found = store.endpoint(IP, 120)
    assert found.attribution == AMBIGUOUS and found.kind == POD
    assert sorted(c.pod for c in found.candidates) == ["a", "b"]


def test_dual_stack_pods_own_both_addresses_with_uid_and_workload():
    store = Store(grace=120)
    feed(store, "ADDED", pod("web-7d4b9c-xk2p1", "10.1.0.9", "fd00::9", created=100,
                             owner=("ReplicaSet", "web-7d4b9c"),
                             labels={"app": "web", "pod-template-hash": "7d4b9c"}), at=100)
    for ip in ("10.1.0.9", "fd00::9"):
        found = store.endpoint(ip, 150)
        assert (found.pod, found.uid, found.workload) == (
            "web-7d4b9c-xk2p1", "uid-default-web-7d4b9c-xk2p1", "Deployment/web")


def test_host_network_pods_and_node_addresses_are_the_node():
    store = Store(grace=120)
    feed(store, "ADDED", node("node-a", "192.168.0.10"), at=0)
    feed(store, "ADDED", pod("agent", "192.168.0.10", created=100, host_network=True,
                             owner=("DaemonSet", "flowwarden")), at=100)
    found = store.endpoint("192.168.0.10", 150)
    assert (found.kind, found.node, found.pod) == (NODE, "node-a", None)
    assert store.endpoint("192.168.0.10", 50).kind == NODE


def test_a_service_address_carries_its_backend_pods_at_the_flows_time():
    store = Store(grace=120)
    feed(store, "ADDED", pod("api-1", "10.1.0.11", created=100), at=100)
    feed(store, "ADDED", pod("api-2", "10.1.0.12", created=100), at=100)
    feed(store, "ADDED", service("api", "10.96.0.5", "fd00:96::5"), at=100)
    feed(store, "ADDED", endpointslice("api-x", "api", ("api-1", "10.1.0.11"), ("api-2", "10.1.0.12")), at=100)
    for ip in ("10.96.0.5", "fd00:96::5"):
        found = store.endpoint(ip, 150)
        assert (found.kind, found.service, found.namespace) == (SERVICE, "api", "default")
        assert [c.pod for c in found.candidates] == ["api-1", "api-2"]
    assert [s.name for s in store.services_for_pod("uid-default-api-1")] == ["api"]


def test_a_relist_ends_claims_of_pods_deleted_while_we_were_not_watching():
    store = Store(grace=120)
    kind, keep = convert(pod("keep", "10.1.0.1", created=100))
    _, lost = convert(pod("lost", "10.1.0.2", created=100))
    store.replace(kind, [keep, lost], at=100)
    store.replace(kind, [convert(pod("keep", "10.1.0.1", created=100))[1]], at=500)
    assert owner(store, "10.1.0.2", 400) == "lost"
    assert store.endpoint("10.1.0.2", 501).kind == EXTERNAL
    assert owner(store, "10.1.0.1", 501) == "keep"
    assert store.counts()["Pod"] == 1


def test_a_pod_stays_behind_its_service_while_any_slice_of_the_service_lists_it():
    store = Store()
    feed(store, "ADDED", service("web", "10.96.0.10"), at=0)
    feed(store, "ADDED", pod("web-1", IP), at=0)
    v4 = endpointslice("web-v4", "web", ("web-1", IP))
    v6 = endpointslice("web-v6", "web", ("web-1", "fd00::7"))
    feed(store, "ADDED", v4, at=0)
    feed(store, "ADDED", v6, at=0)
    feed(store, "DELETED", v6, at=1)
    assert [s.name for s in store.services_for_pod("uid-default-web-1")] == ["web"]
    assert store.service_backends("default", "web") == [IP]
    feed(store, "DELETED", v4, at=2)
    assert store.services_for_pod("uid-default-web-1") == []
    assert store.service_backends("default", "web") == []


def test_a_failing_listener_is_counted_and_the_other_listeners_still_hear_the_change():
    store = Store()
    heard = []

    def broken(kind, old, new):
        raise RuntimeError("bug")

    store.subscribe(broken)
    store.subscribe(lambda kind, old, new: heard.append(kind))
    feed(store, "ADDED", pod("a", IP), at=0)
    feed(store, "ADDED", pod("b", "10.1.0.8"), at=0)
    assert heard == ["Pod", "Pod"] and store.listener_errors == 2
    assert owner(store, IP, 1) == "a"
