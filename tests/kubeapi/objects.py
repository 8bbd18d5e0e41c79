"""Kubernetes API objects (JSON dicts) as the API server returns them, for tests."""
import time


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def pod(name: str, *ips: str, namespace: str = "default", uid: str | None = None, created: float = 0.0,
        phase: str = "Running", node: str = "node-a", labels: dict | None = None, host_network: bool = False,
        owner: tuple[str, str] | None = None, ports: tuple[tuple[int, str], ...] = ()) -> dict:
    meta = {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}",
            "creationTimestamp": rfc3339(created), "labels": dict(labels or {"app": name})}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "owner-uid", "controller": True}]
    status = {"phase": phase}
    if ips:
        status["podIP"], status["podIPs"] = ips[0], [{"ip": ip} for ip in ips]
    return {"kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "main", "image": "busybox",
                                     "ports": [{"containerPort": p, "name": n, "protocol": "TCP"} for p, n in ports]}]},
            "status": status}


def namespace(name: str, **labels: str) -> dict:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def node(name: str, *ips: str) -> dict:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips]
                       + [{"type": "Hostname", "address": name}]}}


def service(name: str, *cluster_ips: str, namespace: str = "default") -> dict:
    return {"kind": "Service", "metadata": {"name": name, "namespace": namespace, "uid": f"svc-{name}"},
            "spec": {"clusterIP": cluster_ips[0], "clusterIPs": list(cluster_ips),
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def endpointslice(name: str, service_name: str, *backends: tuple[str, str], namespace: str = "default") -> dict:
    """backends: (pod name, ip) pairs; the targetRef uid follows `pod()`'s default."""
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": p, "namespace": namespace,
                                         "uid": f"uid-{namespace}-{p}"}} for p, ip in backends],
            "ports": [{"port": 8080, "protocol": "TCP"}]}


def networkpolicy(name: str, namespace: str = "default", **spec) -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace, "uid": f"np-{name}"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], **spec}}


