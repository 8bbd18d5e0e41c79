"""Cluster objects for the pcap fixtures: the one source of truth for pod addresses.

`record.sh` asks this script which pods of a scenario live on node-1 (and so
become network namespaces with those very IPs), then writes the scenario's
`cluster.json` with it. `craft.py` and `craft_rules.py` import it for the crafted sets. The output
is a Kubernetes `List` shaped like
`kubectl get namespaces,pods,services,endpointslices,nodes,networkpolicies -A -o json`
(keys sorted, 4-space indent). Everything is fixed (uids, timestamps,
resourceVersions) so re-recording yields byte-identical cluster files.

Usage: python3 cluster.py pods SCENARIO [NODE]  -> "name ns ipv4 ipv6" per pod on NODE
                                                  (default node-1; hostNetwork pods left out)
       python3 cluster.py nodes SCENARIO        -> "name InternalIP" per node
       python3 cluster.py json SCENARIO         -> the List on stdout
Standard library only: it runs with the system python3 too.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid

# creationTimestamp of every object: before any recording or crafted packet.
CREATED = "2025-12-01T00:00:00Z"
NODE_IPS = {"node-1": "172.18.0.2", "node-2": "172.18.0.3", "cp-1": "172.18.0.4", "cp-2": "172.18.0.5"}
POD_CIDRS = {"node-1": ("10.244.1.0/24", "fd00:10:244:1::/64"),
             "node-2": ("10.244.2.0/24", "fd00:10:244:2::/64"),
             "cp-1": ("10.244.0.0/24", "fd00:10:244::/64"),
             "cp-2": ("10.244.3.0/24", "fd00:10:244:3::/64")}
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
EXPOSE_ANNOTATION = "flowwarden.io/expose"


def uid(*parts: str) -> str:
    """A fixed, uuid-shaped uid derived from the object's identity."""
    return str(uuid.UUID(hashlib.sha256("/".join(parts).encode()).hexdigest()[:32], version=4))


def rv(*parts: str) -> str:
    return str(1000 + int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:6], 16) % 900000)


def _meta(kind: str, name: str, namespace: str | None = None, *, labels=None,
          annotations=None, owner=None, generate_name=None) -> dict:
    meta = {"creationTimestamp": CREATED, "name": name,
            "resourceVersion": rv(kind, namespace or "", name),
            "uid": uid(kind, namespace or "", name)}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner:
        meta["ownerReferences"] = [owner]
    if generate_name:
        meta["generateName"] = generate_name
    return meta


def namespace(name: str, *, labels=None, annotations=None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta("Namespace", name, labels={"kubernetes.io/metadata.name": name,
                                                         **(labels or {})},
                              annotations=annotations),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def node(name: str, *, control_plane: bool = False) -> dict:
    """A node; `control_plane` -> kubeadm's control-plane role label and NoSchedule taint."""
    v4, v6 = POD_CIDRS[name]
    spec = {"podCIDR": v4, "podCIDRs": [v4, v6], "providerID": f"kind://docker/fw/{name}"}
    if control_plane:
        spec["taints"] = [{"effect": "NoSchedule", "key": CONTROL_PLANE_LABEL}]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": _meta("Node", name, labels={
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux", **({CONTROL_PLANE_LABEL: ""} if control_plane else {})},
                annotations={"node.alpha.kubernetes.io/ttl": "0"}),
            "spec": spec,
            "status": {"addresses": [{"address": NODE_IPS[name], "type": "InternalIP"},
                                     {"address": name, "type": "Hostname"}],
                       "conditions": [{"lastHeartbeatTime": CREATED, "lastTransitionTime": CREATED,
                                       "message": "kubelet is posting ready status",
                                       "reason": "KubeletReady", "status": "True",
                                       "type": "Ready"}],
                       "nodeInfo": {"architecture": "amd64",
                                    "containerRuntimeVersion": "containerd://1.7.18",
                                    "kernelVersion": "6.1.0", "kubeProxyVersion": "v1.30.0",
                                    "kubeletVersion": "v1.30.0", "operatingSystem": "linux",
                                    "osImage": "Debian GNU/Linux 12 (bookworm)"}}}


def pod(ns: str, name: str, *, app: str, ips: list[str], node_name: str = "node-1",
        ports=(), image: str = "debian:bookworm", annotations=None, labels=None,
        deployment: str | None = None, phase: str = "Running", host_network: bool = False) -> dict:
    """A pod; `deployment` set -> owned by a ReplicaSet as a Deployment's pods are.
    `host_network` -> spec.hostNetwork, each containerPort also a hostPort (as the API server
    defaults them), and `ips` should be its node's address."""
    owner = None
    all_labels = {"app": app, **(labels or {})}
    gen = None
    if deployment:
        rs = name.rsplit("-", 1)[0]  # name is <deployment>-<pod-template-hash>-<suffix>
        rs_hash = rs.rsplit("-", 1)[1]
        owner = {"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True,
                 "kind": "ReplicaSet", "name": rs, "uid": uid("ReplicaSet", ns, rs)}
        all_labels["pod-template-hash"] = rs_hash
        gen = rs + "-"
    container = {"image": image, "imagePullPolicy": "IfNotPresent", "name": app,
                 "resources": {}, "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File"}
    if ports:
        container["ports"] = [{"containerPort": p, "name": n, "protocol": proto,
                               **({"hostPort": p} if host_network else {})}
                              for n, p, proto in ports]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta("Pod", name, ns, labels=all_labels, annotations=annotations,
                              owner=owner, generate_name=gen),
            "spec": {"containers": [container],
                     "dnsPolicy": "ClusterFirstWithHostNet" if host_network else "ClusterFirst",
                     "enableServiceLinks": True, **({"hostNetwork": True} if host_network else {}),
                     "nodeName": node_name,
                     "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
                     "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "securityContext": {}, "serviceAccount": "default",
                     "serviceAccountName": "default", "terminationGracePeriodSeconds": 30},
            "status": {"hostIP": NODE_IPS[node_name], "hostIPs": [{"ip": NODE_IPS[node_name]}],
                       "phase": phase, "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                       "qosClass": "BestEffort", "startTime": CREATED}}


def service(ns: str, name: str, *, cluster_ips: list[str], selector: dict, ports, annotations=None,
            type: str = "ClusterIP") -> dict:
    """`ports`: (name, port, protocol, targetPort) or, for type NodePort, (..., nodePort)."""
    fam = ["IPv6" if ":" in ip else "IPv4" for ip in cluster_ips]
    node_port = type in ("NodePort", "LoadBalancer")
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta("Service", name, ns, labels={"app": name} if selector else None,
                              annotations=annotations),
            "spec": {"clusterIP": cluster_ips[0], "clusterIPs": list(cluster_ips),
                     **({"externalTrafficPolicy": "Cluster"} if node_port else {}),
                     "internalTrafficPolicy": "Cluster", "ipFamilies": fam,
                     "ipFamilyPolicy": "SingleStack" if len(fam) == 1 else "PreferDualStack",
                     "ports": [{"name": n, "port": p, "protocol": proto, "targetPort": t,
                                **({"nodePort": np[0]} if np else {})}
                               for n, p, proto, t, *np in ports],
                     **({"selector": dict(selector)} if selector else {}),
                     "sessionAffinity": "None", "type": type},
            "status": {"loadBalancer": {}}}


def endpointslice(svc: dict, pods: list[dict], *, family: str = "IPv4") -> dict:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    digest = hashlib.sha256(f"{ns}/{name}/{family}".encode()).digest()
    slice_name = name + "-" + "".join("bcdfghjklmnpqrstvwxz2456789"[b % 27] for b in digest[:5])
    owner = {"apiVersion": "v1", "blockOwnerDeletion": True, "controller": True,
             "kind": "Service", "name": name, "uid": svc["metadata"]["uid"]}
    endpoints = []
    for p in pods:
        ips = [i["ip"] for i in p["status"]["podIPs"] if (":" in i["ip"]) == (family == "IPv6")]
        endpoints.append({"addresses": ips[:1],
                          "conditions": {"ready": True, "serving": True, "terminating": False},
                          "nodeName": p["spec"]["nodeName"],
                          "targetRef": {"kind": "Pod", "name": p["metadata"]["name"],
                                        "namespace": ns, "uid": p["metadata"]["uid"]}})
    return {"addressType": family, "apiVersion": "discovery.k8s.io/v1", "endpoints": endpoints,
            "kind": "EndpointSlice",
            "metadata": _meta("EndpointSlice", slice_name, ns, owner=owner, generate_name=name + "-",
                              labels={"endpointslice.kubernetes.io/managed-by":
                                      "endpointslice-controller.k8s.io",
                                      "kubernetes.io/service-name": name}),
            "ports": [{"name": n, "port": t, "protocol": proto}
                      for n, _p, proto, t in svc_ports(svc)]}


def svc_ports(svc: dict):
    return [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in svc["spec"]["ports"]]


def netpol(ns: str, name: str, spec: dict) -> dict:
    meta = _meta("NetworkPolicy", name, ns)
    meta["generation"] = 1
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta, "spec": spec}


def ns_sel(name: str) -> dict:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def base(*, nodes=("node-1", "node-2"), apiserver: str = "node-1") -> list[dict]:
    """What every cluster has: default/kube-system namespaces, nodes, the API service
    (its EndpointSlice on `apiserver`'s address, port 6443). Nodes named cp-* are control-plane."""
    api = service("default", "kubernetes", cluster_ips=["10.96.0.1"], selector=None,
                  ports=[("https", 443, "TCP", 6443)])
    api["metadata"]["labels"] = {"component": "apiserver", "provider": "kubernetes"}
    eps = {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1",
           "endpoints": [{"addresses": [NODE_IPS[apiserver]],
                          "conditions": {"ready": True, "serving": True, "terminating": False}}],
           "kind": "EndpointSlice",
           "metadata": _meta("EndpointSlice", "kubernetes", "default",
                             labels={"kubernetes.io/service-name": "kubernetes"}),
           "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}
    return [namespace("default"), namespace("kube-system"),
            *(node(n, control_plane=n.startswith("cp-")) for n in nodes), api, eps]


def _svc_with_slice(items: list, svc: dict, pods: list[dict], families=("IPv4",)) -> None:
    items.append(svc)
    for fam in families:
        items.append(endpointslice(svc, pods, family=fam))


# --- scenarios ------------------------------------------------------------------

def http_allowed_and_denied() -> list[dict]:
    items = base() + [namespace("web"), namespace("api"), namespace("other")]
    http = [("http", 8080, "TCP")]
    frontend = pod("web", "frontend-5f7c9d8b6-abcde", app="frontend", ips=["10.244.1.10"],
                   deployment="frontend")
    api_a = pod("api", "api-6d8f7b9c5-kx2lp", app="api", ips=["10.244.1.20"], ports=http,
                deployment="api", image="python:3.11-slim")
    # Second replica on node-2: node-1 cannot reach it, so SYNs to it get no answer.
    api_b = pod("api", "api-6d8f7b9c5-q9wrt", app="api", ips=["10.244.2.50"], ports=http,
                deployment="api", image="python:3.11-slim", node_name="node-2")
    intruder = pod("other", "batch-job-7b5d6c8f9-mn4zx", app="batch-job", ips=["10.244.1.30"],
                   deployment="batch-job")
    items += [frontend, api_a, api_b, intruder]
    _svc_with_slice(items, service("api", "api", cluster_ips=["10.96.120.20"], selector={"app": "api"},
                                   ports=[("http", 80, "TCP", 8080)]), [api_a, api_b])
    items.append(netpol("api", "api-allow-frontend", {
        "podSelector": {"matchLabels": {"app": "api"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": ns_sel("web"),
                               "podSelector": {"matchLabels": {"app": "frontend"}}}],
                     "ports": [{"port": 8080, "protocol": "TCP"}]}]}))
    return items


def redis_plaintext() -> list[dict]:
    items = base() + [namespace("shop"), namespace("data")]
    checkout = pod("shop", "checkout-7c6d5b8f9-r2d2x", app="checkout", ips=["10.244.1.40"],
                   deployment="checkout")
    redis = pod("data", "redis-0", app="redis", ips=["10.244.1.41"], image="redis:7",
                ports=[("redis", 6379, "TCP")], annotations={"flowwarden.io/require-tls": "6379"})
    redis["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "blockOwnerDeletion": True,
                                             "controller": True, "kind": "StatefulSet",
                                             "name": "redis", "uid": uid("StatefulSet", "data", "redis")}]
    items += [checkout, redis]
    _svc_with_slice(items, service("data", "redis", cluster_ips=["10.96.64.41"], selector={"app": "redis"},
                                   ports=[("redis", 6379, "TCP", 6379)]), [redis])
    items.append(netpol("shop", "default-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    items.append(netpol("shop", "allow-redis", {
        "podSelector": {"matchLabels": {"app": "checkout"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": ns_sel("data"),
                            "podSelector": {"matchLabels": {"app": "redis"}}}],
                    "ports": [{"port": 6379, "protocol": "TCP"}]}]}))
    return items


def dns() -> list[dict]:
    items = base() + [namespace("dns-client")]
    client = pod("dns-client", "resolver-test-8d7c6b5f4-t5vq8", app="resolver-test",
                 ips=["10.244.1.50"], deployment="resolver-test")
    dnsd = pod("kube-system", "coredns-5d78c9869d-h7kzp", app="kube-dns", ips=["10.244.1.53"],
               image="registry.k8s.io/coredns/coredns:v1.11.1", deployment="coredns",
               labels={"k8s-app": "kube-dns"},
               ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")])
    items += [client, dnsd]
    kube_dns = service("kube-system", "kube-dns", cluster_ips=["10.96.0.10"],
                       selector={"k8s-app": "kube-dns"},
                       ports=[("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53),
                              ("metrics", 9153, "TCP", 9153)])
    _svc_with_slice(items, kube_dns, [dnsd])
    items.append(netpol("dns-client", "egress-dns-udp-only", {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": ns_sel("kube-system"),
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}]}]}))
    return items


def tls_versions() -> list[dict]:
    items = base() + [namespace("secure", annotations={"flowwarden.io/require-tls": "true",
                                                       "flowwarden.io/tls-min-version": "1.2"}),
                      namespace("tls-client")]
    client = pod("tls-client", "probe-6b5c4d7f8-zx9kw", app="probe", ips=["10.244.1.60"],
                 deployment="probe")
    legacy = pod("secure", "legacy-tls-0", app="legacy-tls", ips=["10.244.1.61"],
                 image="openssl:3.0",
                 ports=[("tls10", 4410, "TCP"), ("tls11", 4411, "TCP"), ("tls12", 4412, "TCP"),
                        ("tls13", 4413, "TCP")])
    web = pod("secure", "web-7f8d9c6b5-p4lmn", app="web", ips=["10.244.1.62"], image="nginx:1.22",
              deployment="web", ports=[("http", 80, "TCP"), ("https", 443, "TCP")])
    items += [client, legacy, web]
    _svc_with_slice(items, service("secure", "legacy-tls", cluster_ips=["10.96.77.61"],
                                   selector={"app": "legacy-tls"},
                                   ports=[(f"tls1{i}", 4410 + i, "TCP", 4410 + i) for i in range(4)]),
                    [legacy])
    _svc_with_slice(items, service("secure", "web", cluster_ips=["10.96.77.62"], selector={"app": "web"},
                                   ports=[("http", 80, "TCP", 80), ("https", 443, "TCP", 443)]), [web])
    return items


def postgres_ssl() -> list[dict]:
    items = base() + [namespace("billing"), namespace("db")]
    client = pod("billing", "invoicer-5c4b7d8f6-j3k8s", app="invoicer", ips=["10.244.1.70"],
                 deployment="invoicer")
    pg = pod("db", "postgres-0", app="postgres", ips=["10.244.1.71"], image="postgres:15",
             ports=[("postgres", 5432, "TCP")], annotations={"flowwarden.io/require-tls": "5432"})
    items += [client, pg]
    _svc_with_slice(items, service("db", "postgres", cluster_ips=["10.96.54.32"],
                                   selector={"app": "postgres"},
                                   ports=[("postgres", 5432, "TCP", 5432)]), [pg])
    return items


def ipv6_cooked() -> list[dict]:
    items = base() + [namespace("v6")]
    client = pod("v6", "client-7d6c5b4f8-v6c1x", app="client",
                 ips=["10.244.1.80", "fd00:10:244:1::80"], deployment="client")
    server = pod("v6", "server-8c7b6d5f9-v6s2y", app="server",
                 ips=["10.244.1.81", "fd00:10:244:1::81"], deployment="server",
                 image="python:3.11-slim", ports=[("http", 8080, "TCP")])
    items += [client, server]
    svc = service("v6", "server", cluster_ips=["fd00:10:96::81", "10.96.80.81"],
                  selector={"app": "server"}, ports=[("http", 80, "TCP", 8080)])
    _svc_with_slice(items, svc, [server], families=("IPv6", "IPv4"))
    return items


def mail_starttls() -> list[dict]:
    """SMTP, IMAP, POP3, FTP, XMPP and LDAP servers requiring TLS, reached with their upgrades (and without)."""
    items = base() + [namespace("office"), namespace("mail", annotations={"flowwarden.io/require-tls": "true"}),
                      namespace("files", annotations={"flowwarden.io/require-tls": "21"}),
                      namespace("chat", annotations={"flowwarden.io/require-tls": "true"}),
                      namespace("directory", annotations={"flowwarden.io/require-tls": "true"})]
    client = pod("office", "mailer-6b7c8d9f5-m4k2p", app="mailer", ips=["10.244.1.90"], deployment="mailer")
    imap = pod("mail", "dovecot-0", app="dovecot", ips=["10.244.1.91"], image="dovecot/dovecot:2.3",
               ports=[("imap", 143, "TCP"), ("pop3", 110, "TCP")])
    ftp = pod("files", "vsftpd-0", app="vsftpd", ips=["10.244.1.92"], image="fauria/vsftpd:latest",
              ports=[("ftp", 21, "TCP")])
    chat = pod("chat", "prosody-0", app="prosody", ips=["10.244.1.94"], image="prosody/prosody:0.12",
               ports=[("xmpp-client", 5222, "TCP")])
    directory = pod("directory", "openldap-0", app="openldap", ips=["10.244.1.95"], image="bitnami/openldap:2.5",
                    ports=[("ldap", 389, "TCP")])
    smtp = pod("mail", "exim-0", app="exim", ips=["10.244.1.93"], image="exim4:4.96", ports=[("smtp", 25, "TCP")])
    items += [client, imap, ftp, chat, directory, smtp]
    _svc_with_slice(items, service("mail", "dovecot", cluster_ips=["10.96.25.91"], selector={"app": "dovecot"},
                                   ports=[("imap", 143, "TCP", 143), ("pop3", 110, "TCP", 110)]), [imap])
    _svc_with_slice(items, service("files", "vsftpd", cluster_ips=["10.96.21.92"], selector={"app": "vsftpd"},
                                   ports=[("ftp", 21, "TCP", 21)]), [ftp])
    _svc_with_slice(items, service("chat", "prosody", cluster_ips=["10.96.52.94"], selector={"app": "prosody"},
                                   ports=[("xmpp-client", 5222, "TCP", 5222)]), [chat])
    _svc_with_slice(items, service("directory", "openldap", cluster_ips=["10.96.52.95"], selector={"app": "openldap"},
                                   ports=[("ldap", 389, "TCP", 389)]), [directory])
    _svc_with_slice(items, service("mail", "exim", cluster_ips=["10.96.25.93"], selector={"app": "exim"},
                                   ports=[("smtp", 25, "TCP", 25)]), [smtp])
    return items


CRAFTED_CLIENT = ("10.244.1.10", "fd00:10:244:1::10")
CRAFTED_SERVER = ("10.244.2.20", "fd00:10:244:2::20")


def crafted() -> list[dict]:
    """The cluster of pcaps/crafted/ (craft.py): frontend on node-1, api on node-2."""
    items = base() + [namespace("web"), namespace("api")]
    frontend = pod("web", "frontend-5f7c9d8b6-abcde", app="frontend", ips=list(CRAFTED_CLIENT),
                   deployment="frontend")
    api = pod("api", "api-6d8f7b9c5-kx2lp", app="api", ips=list(CRAFTED_SERVER), node_name="node-2",
              deployment="api", ports=[("http", 8080, "TCP"), ("https", 443, "TCP"), ("dns", 53, "UDP"),
                                       ("statsd", 8125, "UDP"), ("sctp", 9999, "SCTP")])
    items += [frontend, api]
    _svc_with_slice(items, service("api", "api", cluster_ips=["10.96.120.20"], selector={"app": "api"},
                                   ports=[("http", 80, "TCP", 8080)]), [api])
    items.append(netpol("api", "api-allow-frontend", {
        "podSelector": {"matchLabels": {"app": "api"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": ns_sel("web"),
                               "podSelector": {"matchLabels": {"app": "frontend"}}}],
                     "ports": [{"port": 8080, "protocol": "TCP"}]}]}))
    return items


# --- issue #13: the built-in rules for the network-visible controls of the 4C's -----------

RULES_NODES = ("cp-1", "cp-2", "node-1", "node-2")  # cp-1 and cp-2: control plane; the API server on cp-1
RULES_CLIENT = ("10.244.1.110", "fd00:10:244:1::110")  # shop/client, dual-stack (it reaches fd00:ec2::254)


def _rules_common(*namespaces: str) -> list[dict]:
    """What rules-4c and rules-crafted share: two control-plane nodes and two workers, the API server's
    EndpointSlice on cp-1, shop/client, shop/api behind the NodePort Service shop/web (30080, not
    annotated), and the hostNetwork pod monitoring/node-exporter on node-1 (:9100)."""
    items = base(nodes=RULES_NODES, apiserver="cp-1") + [namespace(n) for n in ("shop", "monitoring", *namespaces)]
    client = pod("shop", "client-7b9c6d5f8-c4l1x", app="client", ips=list(RULES_CLIENT), deployment="client")
    api = pod("shop", "api-5f6d7c8b9-a8p1x", app="api", ips=["10.244.1.111"], ports=[("http", 8080, "TCP")],
              deployment="api", image="python:3.11-slim")
    exporter = pod("monitoring", "node-exporter-x7k2p", app="node-exporter", ips=[NODE_IPS["node-1"]],
                   host_network=True, image="quay.io/prometheus/node-exporter:v1.8.1",
                   ports=[("metrics", 9100, "TCP")],
                   labels={"controller-revision-hash": "6f8b9c7d54", "pod-template-generation": "1"})
    exporter["metadata"]["generateName"] = "node-exporter-"
    exporter["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "blockOwnerDeletion": True,
                                                "controller": True, "kind": "DaemonSet", "name": "node-exporter",
                                                "uid": uid("DaemonSet", "monitoring", "node-exporter")}]
    items += [client, api, exporter]
    _svc_with_slice(items, service("shop", "web", cluster_ips=["10.96.40.80"], selector={"app": "api"},
                                   ports=[("http", 80, "TCP", 8080, 30080)], type="NodePort"), [api])
    return items


def _mail(items: list[dict]) -> None:
    """mail/dovecot (IMAP 143, POP3 110) and mail/exim (SMTP 25), with their Services."""
    imap = pod("mail", "dovecot-0", app="dovecot", ips=["10.244.1.113"], image="dovecot/dovecot:2.3",
               ports=[("imap", 143, "TCP"), ("pop3", 110, "TCP")])
    smtp = pod("mail", "exim-0", app="exim", ips=["10.244.1.114"], image="exim4:4.96", ports=[("smtp", 25, "TCP")])
    items += [imap, smtp]
    _svc_with_slice(items, service("mail", "dovecot", cluster_ips=["10.96.25.113"], selector={"app": "dovecot"},
                                   ports=[("imap", 143, "TCP", 143), ("pop3", 110, "TCP", 110)]), [imap])
    _svc_with_slice(items, service("mail", "exim", cluster_ips=["10.96.25.114"], selector={"app": "exim"},
                                   ports=[("smtp", 25, "TCP", 25)]), [smtp])


def rules_4c() -> list[dict]:
    """Recorded traffic for the 4C's rules (record.sh rules-4c): the node namespace is node-1 and the
    hostNetwork pod; cp-1, cp-2, an external client, the metadata server and kube-system/cp-agent (a pod
    the inventory puts on cp-1) are namespaces on the same bridge."""
    items = _rules_common("mail", "files", "dns")
    store = pod("shop", "store-6c7d8b9f5-s7r2x", app="store", ips=["10.244.1.112"], ports=[("http", 8080, "TCP")],
                deployment="store", image="python:3.11-slim")
    ftp = pod("files", "vsftpd-0", app="vsftpd", ips=["10.244.1.115"], image="fauria/vsftpd:latest",
              ports=[("ftp", 21, "TCP")])
    dnsd = pod("dns", "dnsmasq-7d8c9b6f5-d2n5x", app="dnsmasq", ips=["10.244.1.116"], deployment="dnsmasq",
               image="dnsmasq:2.89", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])
    agent = pod("kube-system", "cp-agent-6c9d8f7b5-lq2vx", app="cp-agent", ips=["10.244.0.10"], node_name="cp-1",
                deployment="cp-agent")
    agent["spec"]["tolerations"] = [{"effect": "NoSchedule", "key": CONTROL_PLANE_LABEL, "operator": "Exists"}]
    items += [store, ftp, dnsd, agent]
    _mail(items)
    _svc_with_slice(items, service("shop", "store", cluster_ips=["10.96.40.81"], selector={"app": "store"},
                                   ports=[("http", 80, "TCP", 8080, 30081)], type="NodePort",
                                   annotations={EXPOSE_ANNOTATION: "true"}), [store])
    _svc_with_slice(items, service("files", "vsftpd", cluster_ips=["10.96.21.115"], selector={"app": "vsftpd"},
                                   ports=[("ftp", 21, "TCP", 21)]), [ftp])
    _svc_with_slice(items, service("dns", "dnsmasq", cluster_ips=["10.96.53.116"], selector={"app": "dnsmasq"},
                                   ports=[("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53)]), [dnsd])
    return items


def rules_crafted() -> list[dict]:
    """The cluster of pcaps/rules-crafted/ (craft_rules.py): rules-4c's nodes, client, api and node-exporter,
    plus a telnet server, mail, an HTTP proxy, CoreDNS and its NodePort Service kube-system/dns-external
    (UDP 30053, not annotated)."""
    items = _rules_common("legacy", "mail")
    telnetd = pod("legacy", "telnetd-0", app="telnetd", ips=["10.244.1.123"], image="debian:bookworm",
                  ports=[("telnet", 23, "TCP")])
    proxy = pod("shop", "proxy-8b7c6d9f5-p3x8q", app="proxy", ips=["10.244.1.128"], deployment="proxy",
                image="ubuntu/squid:5.7", ports=[("http-proxy", 3128, "TCP")])
    dnsd = pod("kube-system", "coredns-5d78c9869d-h7kzp", app="kube-dns", ips=["10.244.1.153"],
               image="registry.k8s.io/coredns/coredns:v1.11.1", deployment="coredns", labels={"k8s-app": "kube-dns"},
               ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")])
    items += [telnetd, proxy, dnsd]
    _mail(items)
    _svc_with_slice(items, service("legacy", "telnetd", cluster_ips=["10.96.23.123"], selector={"app": "telnetd"},
                                   ports=[("telnet", 23, "TCP", 23)]), [telnetd])
    _svc_with_slice(items, service("shop", "proxy", cluster_ips=["10.96.31.28"], selector={"app": "proxy"},
                                   ports=[("http-proxy", 3128, "TCP", 3128)]), [proxy])
    kube_dns = service("kube-system", "kube-dns", cluster_ips=["10.96.0.10"], selector={"k8s-app": "kube-dns"},
                       ports=[("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53), ("metrics", 9153, "TCP", 9153)])
    _svc_with_slice(items, kube_dns, [dnsd])
    _svc_with_slice(items, service("kube-system", "dns-external", cluster_ips=["10.96.53.53"],
                                   selector={"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP", 53, 30053)],
                                   type="NodePort"), [dnsd])
    return items


SCENARIOS = {
    "http-allowed-and-denied": http_allowed_and_denied,
    "redis-plaintext": redis_plaintext,
    "dns": dns,
    "tls-versions": tls_versions,
    "postgres-ssl": postgres_ssl,
    "ipv6-cooked": ipv6_cooked,
    "mail-starttls": mail_starttls,
    "crafted": crafted,
    "rules-4c": rules_4c,
    "rules-crafted": rules_crafted,
}

KIND_ORDER = ["Namespace", "Pod", "Service", "EndpointSlice", "Node", "NetworkPolicy"]


def as_list(items: list[dict]) -> str:
    """The List as kubectl prints it: grouped by resource in the order asked, sorted by ns/name."""
    def key(o):
        m = o["metadata"]
        return (KIND_ORDER.index(o["kind"]), m.get("namespace", ""), m["name"])
    doc = {"apiVersion": "v1", "items": sorted(items, key=key), "kind": "List",
           "metadata": {"resourceVersion": ""}}
    return json.dumps(doc, indent=4, sort_keys=True) + "\n"


def pods_on(items: list[dict], node_name: str = "node-1") -> list[str]:
    """"app namespace ipv4 ipv6" per pod on `node_name` with an address of its own (not hostNetwork)."""
    lines = []
    for o in items:
        if o["kind"] == "Pod" and o["spec"]["nodeName"] == node_name and not o["spec"].get("hostNetwork"):
            ips = [i["ip"] for i in o["status"]["podIPs"]]
            v4 = next((i for i in ips if ":" not in i), "-")
            v6 = next((i for i in ips if ":" in i), "-")
            lines.append(f'{o["metadata"]["labels"]["app"]} {o["metadata"]["namespace"]} {v4} {v6}')
    return lines


def main(argv: list[str]) -> int:
    if (len(argv) not in (3, 4) or argv[1] not in ("pods", "nodes", "json") or argv[2] not in SCENARIOS
            or (len(argv) == 4 and argv[1] != "pods")):
        print(f"usage: {argv[0]} pods|nodes|json {'|'.join(SCENARIOS)} [NODE (pods only)]", file=sys.stderr)
        return 2
    items = SCENARIOS[argv[2]]()
    if argv[1] == "pods":
        lines = pods_on(items, *argv[3:])
        sys.stdout.write("\n".join(lines) + "\n" if lines else "")
    elif argv[1] == "nodes":
        sys.stdout.write("".join(f'{o["metadata"]["name"]} {o["status"]["addresses"][0]["address"]}\n'
                                 for o in items if o["kind"] == "Node"))
    else:
        sys.stdout.write(as_list(items))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
