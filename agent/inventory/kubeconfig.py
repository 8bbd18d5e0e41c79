"""Talking to the Kubernetes API: client configuration, the watched resources, raw lists.

Part of the inventory stage. Together with `watch.py` this is the only code that
imports `kubernetes`. Objects are read as raw JSON (`_preload_content=False`) and
converted by `agent.inventory.objects`: the client's model deserialisation is slow
and keeps every field, which a 100,000-pod cluster cannot afford.
"""
from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from typing import Any, Iterator

import orjson
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
DEFAULT_KUBECONFIG = "~/.kube/config"
# (connect, read) timeout of one list page, seconds.
LIST_TIMEOUT = (10.0, 60.0)

# Restart/failure reasons (metric label values; bounded).
GONE = "gone"  # 410: our resourceVersion or continue token is too old: relist
TIMEOUT = "timeout"  # the server ended the watch at timeoutSeconds: resume
READ_TIMEOUT = "read_timeout"  # nothing arrived for too long: the connection is presumed dead
CONNECTION = "connection"  # refused, reset, dropped mid-stream, garbled
SERVER_ERROR = "server_error"  # 5xx
THROTTLED = "throttled"  # 429
CLIENT_ERROR = "client_error"  # other 4xx (RBAC, auth, missing API): not retryable by itself
INTERNAL = "internal"  # a bug of ours: logged with its traceback

_STATUS_WORDS = {401: "unauthorized", 403: "forbidden", 404: "not found"}


class KubeConfigError(ValueError):
    """No usable client configuration; the message says where we looked."""


class KubeApiError(RuntimeError):
    """An API call that failed, classified: `reason` is one of the reasons above."""

    def __init__(self, message: str, *, reason: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.status, self.retry_after = reason, status, retry_after


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # plural, as RBAC and the metrics name it
    kind: str
    api_version: str
    api: type
    method: str  # cluster-wide list/watch method of `api`


RESOURCES = (
    Resource("namespaces", "Namespace", "v1", k8s.CoreV1Api, "list_namespace"),
    Resource("nodes", "Node", "v1", k8s.CoreV1Api, "list_node"),
    Resource("services", "Service", "v1", k8s.CoreV1Api, "list_service_for_all_namespaces"),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", k8s.DiscoveryV1Api,
             "list_endpoint_slice_for_all_namespaces"),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1", k8s.NetworkingV1Api,
             "list_network_policy_for_all_namespaces"),
    Resource("pods", "Pod", "v1", k8s.CoreV1Api, "list_pod_for_all_namespaces"),
)


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An ApiClient from the pod's service account, or from a kubeconfig.

    In-cluster when running in a pod (KUBERNETES_SERVICE_HOST set) and neither a
    kubeconfig nor a context was given; otherwise `kubeconfig`, else $KUBECONFIG
    (a `:`-separated list is merged), else ~/.kube/config.
    """
    configuration = k8s.Configuration()
    in_cluster = kubeconfig is None and context is None and bool(os.environ.get(IN_CLUSTER_ENV))
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser(DEFAULT_KUBECONFIG)
    where = "in-cluster service account" if in_cluster else f"kubeconfig {path}"
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            for one in path.split(os.pathsep):
                if one and not os.path.exists(os.path.expanduser(one)):
                    raise KubeConfigError(f"kubeconfig {one}: no such file")
            k8s_config.load_kube_config(config_file=path, context=context, persist_config=False,
                                        client_configuration=configuration)
    except KubeConfigError:
        raise
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as e:
        context_note = f" (context {context})" if context else ""
        raise KubeConfigError(f"{where}{context_note}: {' '.join(str(e).split())}") from e
    # We retry with our own backoff and log every attempt: no hidden urllib3 retries.
    configuration.retries = False
    configuration.keep_alive = True  # TCP keepalive: the kernel notices a vanished peer too
    return k8s.ApiClient(configuration)


def call(api_client: k8s.ApiClient, resource: Resource, **params: Any) -> urllib3.HTTPResponse:
    """The raw (unread) response of a cluster-wide list or watch; errors are classified."""
    method = getattr(resource.api(api_client), resource.method)
    verb = "watch" if params.get("watch") else "list"
    try:
        return method(_preload_content=False, **params)
    except Exception as e:
        raise classify(e, resource=resource, verb=verb) from e


def classify(error: BaseException, *, resource: Resource, verb: str) -> KubeApiError:
    """A KubeApiError naming the resource and verb, with the reason that decides what's next."""
    if isinstance(error, KubeApiError):
        return error
    status = getattr(error, "status", None) if isinstance(error, k8s.ApiException) else None
    if status:
        retry_after = _retry_after(getattr(error, "headers", None))
        if status == 410:
            return KubeApiError(f"{verb} {resource.name}: 410 Gone; relisting", reason=GONE, status=status)
        if status == 429:
            return KubeApiError(f"{verb} {resource.name}: 429 Too Many Requests", reason=THROTTLED,
                                status=status, retry_after=retry_after)
        if status >= 500:
            return KubeApiError(f"{verb} {resource.name}: server error {status} {error.reason or ''}".rstrip(),
                                reason=SERVER_ERROR, status=status, retry_after=retry_after)
        word = _STATUS_WORDS.get(status, "rejected")
        return KubeApiError(f"{word}: cannot {verb} {resource.name} ({status})", reason=CLIENT_ERROR,
                            status=status)
    if isinstance(error, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return KubeApiError(f"{verb} {resource.name}: no data for too long ({error})", reason=READ_TIMEOUT)
    if isinstance(error, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
                          orjson.JSONDecodeError, k8s.ApiException)):
        return KubeApiError(f"{verb} {resource.name}: {type(error).__name__}: {error}", reason=CONNECTION)
    raise error


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # the HTTP-date form: the API server never sends it
        return None


def status_error(status: dict, *, resource: Resource) -> KubeApiError:
    """The KubeApiError for an ERROR event inside a watch stream (a Status object)."""
    code = status.get("code") if isinstance(status, dict) else None
    message = (status.get("message") if isinstance(status, dict) else None) or "error event"
    if code == 410:
        return KubeApiError(f"watch {resource.name}: {message}", reason=GONE, status=410)
    if code == 429:
        return KubeApiError(f"watch {resource.name}: {message}", reason=THROTTLED, status=429)
    if isinstance(code, int) and 400 <= code < 500:
        word = _STATUS_WORDS.get(code, "rejected")
        return KubeApiError(f"{word}: cannot watch {resource.name} ({code})", reason=CLIENT_ERROR, status=code)
    return KubeApiError(f"watch {resource.name}: {message} ({code})", reason=SERVER_ERROR, status=code)


def iter_pages(api_client: k8s.ApiClient, resource: Resource, *, page_size: int,
               timeout: tuple[float, float] = LIST_TIMEOUT) -> Iterator[dict]:
    """The pages (decoded JSON) of one consistent paginated list, following `continue`."""
    token = None
    while True:
        params: dict[str, Any] = {"limit": page_size, "_request_timeout": timeout}
        if token:
            params["_continue"] = token
        response = call(api_client, resource, **params)
        try:
            page = orjson.loads(response.data)
        except Exception as e:
            raise classify(e, resource=resource, verb="list") from e
        finally:
            response.release_conn()
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def iter_lines(response: urllib3.HTTPResponse) -> Iterator[bytes]:
    """Newline-delimited JSON events of a watch stream, as each chunk arrives."""
    pending = b""
    for chunk in response.stream(amt=1 << 16, decode_content=False):
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def dump_cluster(api_client: k8s.ApiClient, *, page_size: int = 500) -> dict:
    """The cluster state file (`snapshot`): a `List` of every watched resource.

    Items get their apiVersion and kind (a list's items omit them) and lose
    managedFields (large, and never read). Failures raise KubeApiError.
    """
    items: list[dict] = []
    for resource in RESOURCES:
        for page in iter_pages(api_client, resource, page_size=page_size):
            for item in page.get("items") or ():
                item["apiVersion"], item["kind"] = resource.api_version, resource.kind
                (item.get("metadata") or {}).pop("managedFields", None)
                items.append(item)
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
