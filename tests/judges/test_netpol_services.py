"""Ends that stand for several pods: a Service (judged on its backends' target ports, as kube-proxy
DNATs it) and an address two live pods claim (each claimant judged, never a guess)."""
from agent.inventory.objects import convert
from agent.inventory.store import Store
from agent.judges.netpol import NetpolEngine
from agent.model import ALLOW, AMBIGUOUS, DENY, SERVICE
from tests.kubeapi import endpointslice, namespace, networkpolicy, pod, service

CLIENT, WEB, CLUSTER_IP, SHARED = "10.1.0.2", "10.1.0.3", "10.96.0.10", "10.1.0.9"


def _store(*objects) -> Store:
    store = Store(history=False)
    by_kind: dict[str, list] = {}
    for d in objects:
        kind, obj = convert(d)
        by_kind.setdefault(kind, []).append(obj)
    for kind in ("Namespace", "Pod", "Service", "EndpointSlice", "Node", "NetworkPolicy"):
        store.replace(kind, by_kind.get(kind, []), at=0)
    return store


def _allow_client_on(port) -> dict:
    return networkpolicy("web-from-client", podSelector={"matchLabels": {"app": "web"}}, ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": port}]}])


def _web_service(target) -> dict:
    svc = service("web", CLUSTER_IP)
    svc["spec"]["ports"] = [{"port": 80, "targetPort": target, "protocol": "TCP"}]
    return svc


def _verdict(store: Store, dst_ip: str, port: int = 80) -> str:
    dst = store.endpoint(dst_ip, 0)
    return NetpolEngine(store).decide_flow(store.endpoint(CLIENT, 0), dst, port, "TCP").verdict


def _cluster(target, policy_port):
    return _store(namespace("default"), pod("client", CLIENT),
                  pod("web", WEB, ports=((8080, "http"),)), _web_service(target),
                  endpointslice("web-abc", "web", ("web", WEB)), _allow_client_on(policy_port))


def test_a_flow_to_a_service_port_is_judged_on_the_numeric_target_port_of_its_backends():
    assert _verdict(_cluster(8080, 8080), CLUSTER_IP) == ALLOW
    assert _verdict(_cluster(8080, 80), CLUSTER_IP) == DENY  # policies speak of pod ports, not 80


def test_a_named_target_port_is_resolved_on_each_backend():
    assert _verdict(_cluster("http", 8080), CLUSTER_IP) == ALLOW
    assert _verdict(_cluster("http", "http"), CLUSTER_IP) == ALLOW
    assert _verdict(_cluster("http", 9999), CLUSTER_IP) == DENY


def test_the_service_endpoint_is_a_service_with_its_backends():
    dst = _cluster(8080, 8080).endpoint(CLUSTER_IP, 0)
    assert dst.kind == SERVICE and [c.pod for c in dst.candidates] == ["web"]


def _shared_address(*locked: bool):
    pods = [pod(f"p{i}", SHARED, labels={"app": "locked" if lock else "open"}) for i, lock in enumerate(locked)]
    deny_locked = networkpolicy("deny-locked", podSelector={"matchLabels": {"app": "locked"}})
    return _store(namespace("default"), pod("client", CLIENT), *pods, deny_locked)


def test_an_address_two_live_pods_claim_is_denied_if_either_claimant_would_deny():
    store = _shared_address(False, True)
    assert store.endpoint(SHARED, 0).attribution == AMBIGUOUS
    assert _verdict(store, SHARED) == DENY
    assert _verdict(_shared_address(False, False), SHARED) == ALLOW
