"""Kubernetes API objects (JSON dicts, camelCase) -> the compact model objects the inventory keeps.

Shared by the snapshot loader (`--cluster FILE`) and the live watch, so both see the
cluster the same way. Only what judges and events need is kept (a pod is a few hundred
bytes, not the API's tens of kilobytes).
"""
from __future__ import annotations

import re
import sys
from datetime import datetime
from types import MappingProxyType
from typing import Any, Callable, Mapping

from agent.model import (
    EXPOSE_ANNOTATION, NAMESPACE_NAME_LABEL, REQUIRE_TLS_ANNOTATION, TLS_MIN_VERSION_ANNOTATION, ContainerPort,
    EndpointSlice, Namespace,
    NetworkPolicy, Node, Pod, Service, ServicePort,
)

KEPT_ANNOTATIONS = (REQUIRE_TLS_ANNOTATION, TLS_MIN_VERSION_ANNOTATION, EXPOSE_ANNOTATION)
# A Job created by a CronJob is named "<cronjob>-<scheduled minute since epoch>".
_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")
_intern = sys.intern
# Replicas of a workload have equal labels and ports: one shared copy each keeps a cached
# pod under 1 KiB (bench/bench_inventory.py). The cache only ever loses sharing when cleared.
_shared: dict[Any, Any] = {}
_SHARED_MAX = 200_000
_NO_ANNOTATIONS: Mapping[str, str] = MappingProxyType({})


def _share(key: Any, value: Any) -> Any:
    if len(_shared) >= _SHARED_MAX:
        _shared.clear()
    return _shared.setdefault(key, value)


class ObjectError(ValueError):
    """An API object that cannot be read; the message names the object and field."""


def parse_time(value: str | None) -> float | None:
    """RFC 3339 timestamp (as the API writes it) -> epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _labels(meta: Mapping) -> dict[str, str]:
    items = tuple((_intern(k), _intern(v)) for k, v in (meta.get("labels") or {}).items())
    return _share(("labels", items), dict(items)) if items else {}


def _annotations(meta: Mapping) -> Mapping[str, str]:
    found = meta.get("annotations") or {}
    return {k: found[k] for k in KEPT_ANNOTATIONS if k in found} or _NO_ANNOTATIONS


def workload_of(meta: Mapping) -> str | None:
    """The owning workload as "Kind/name", from the controller ownerReference.

    ReplicaSet -> Deployment and Job -> CronJob are resolved by name, without API
    calls: a Deployment's ReplicaSet is "<deployment>-<pod-template-hash>".
    """
    for ref in meta.get("ownerReferences") or ():
        if not ref.get("controller"):  # unset means false in the API
            continue
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ReplicaSet":
            template_hash = (meta.get("labels") or {}).get("pod-template-hash")
            if template_hash and name.endswith("-" + template_hash):
                return _intern("Deployment/" + name[: -len(template_hash) - 1])
        elif kind == "Job" and (match := _CRONJOB_JOB.match(name)):
            return _intern("CronJob/" + match.group(1))
        return _intern(f"{kind}/{name}")
    return None


def _container_ports(spec: Mapping) -> tuple[ContainerPort, ...]:
    ports = []
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in container.get("ports") or ():
            name = p.get("name")
            ports.append(ContainerPort(int(p["containerPort"]), _intern(p.get("protocol") or "TCP"),
                                       _intern(name) if name else None))
    return _share(("ports", tuple(ports)), tuple(ports))


def pod_from_dict(d: Mapping) -> Pod:
    meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    ips = tuple(p["ip"] for p in status.get("podIPs") or () if p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (status["podIP"],)
    return Pod(
        namespace=_intern(meta["namespace"]), name=meta["name"], uid=meta.get("uid") or "",
        labels=_labels(meta), ips=ips, node=_intern(spec.get("nodeName") or "") or None,
        phase=_intern(status.get("phase") or "Pending"),
        host_network=bool(spec.get("hostNetwork")), ports=_container_ports(spec),
        annotations=_annotations(meta), workload=workload_of(meta),
        created=parse_time(meta.get("creationTimestamp")),
    )


def namespace_from_dict(d: Mapping) -> Namespace:
    meta = d.get("metadata") or {}
    labels = dict(_labels(meta))  # its own copy: shared dicts are never mutated
    # The API server sets this label on every namespace (since 1.21); snapshots made by
    # hand may lack it, and namespaceSelectors rely on it.
    labels.setdefault(NAMESPACE_NAME_LABEL, meta["name"])
    return Namespace(name=_intern(meta["name"]), labels=labels, annotations=_annotations(meta))


def service_from_dict(d: Mapping) -> Service:
    meta, spec = d.get("metadata") or {}, d.get("spec") or {}
    ips = tuple(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    return Service(
        namespace=_intern(meta["namespace"]), name=meta["name"], uid=meta.get("uid") or "",
        cluster_ips=tuple(ip for ip in ips if ip and ip != "None"), annotations=_annotations(meta),
        ports=tuple(_service_port(p) for p in spec.get("ports") or ()),
    )


def _service_port(p: Mapping) -> ServicePort:
    target = p.get("targetPort")
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    node_port = p.get("nodePort")
    return ServicePort(int(p["port"]), _intern(p.get("protocol") or "TCP"), target,
                       int(node_port) if node_port else None)


def endpointslice_from_dict(d: Mapping) -> EndpointSlice:
    meta = d.get("metadata") or {}
    addresses, uids = [], []
    for ep in d.get("endpoints") or ():
        addresses.extend(ep.get("addresses") or ())
        ref = ep.get("targetRef") or {}
        if ref.get("kind") == "Pod" and ref.get("uid"):
            uids.append(ref["uid"])
    return EndpointSlice(
        namespace=_intern(meta["namespace"]), name=meta["name"],
        service=(meta.get("labels") or {}).get("kubernetes.io/service-name"),
        addresses=tuple(addresses), pod_uids=tuple(uids),
    )


def node_from_dict(d: Mapping) -> Node:
    meta, status = d.get("metadata") or {}, d.get("status") or {}
    ips = tuple(a["address"] for a in status.get("addresses") or () if a.get("type") == "InternalIP")
    return Node(name=meta["name"], internal_ips=ips, labels=_labels(meta))


def networkpolicy_from_dict(d: Mapping) -> NetworkPolicy:
    meta = d.get("metadata") or {}
    return NetworkPolicy(namespace=_intern(meta["namespace"]), name=meta["name"],
                         spec=d.get("spec") or {}, uid=meta.get("uid") or "")


CONVERTERS: dict[str, Callable[[Mapping], Any]] = {
    "Namespace": namespace_from_dict,
    "Pod": pod_from_dict,
    "Service": service_from_dict,
    "EndpointSlice": endpointslice_from_dict,
    "Node": node_from_dict,
    "NetworkPolicy": networkpolicy_from_dict,
}
KINDS = tuple(CONVERTERS)


def convert(d: Mapping) -> tuple[str, Any]:
    """(kind, model object) for one API object; ObjectError names what is wrong."""
    kind = d.get("kind") if isinstance(d, Mapping) else None
    meta = (d.get("metadata") or {}) if isinstance(d, Mapping) else {}
    where = f"{kind or 'object'} {meta.get('namespace', '')}/{meta.get('name', '?')}".replace(" /", " ")
    if kind not in CONVERTERS:
        raise ObjectError(f"{where}: unsupported kind {kind!r} (expected one of {', '.join(KINDS)})")
    try:
        return kind, CONVERTERS[kind](d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ObjectError(f"{where}: malformed ({type(e).__name__}: {e})") from e
