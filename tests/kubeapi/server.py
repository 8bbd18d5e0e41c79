"""A loopback Kubernetes API server for the inventory tests.

Speaks the real list/watch protocol for the six resources the agent watches
(cluster-wide): lists with resourceVersion and limit/continue (a consistent
snapshot per continue token), `watch=true` chunked streams of ADDED/MODIFIED/
DELETED/BOOKMARK events resumed from a resourceVersion, `ERROR 410` for a
compacted resourceVersion, and scriptable faults: HTTP errors (500, 429 with
Retry-After, 403, 410), slow answers, connections dropped before or during a
stream, and streams that go silent. The real `kubernetes` client is pointed at it
through a real kubeconfig file (`kubeconfig` fixture).
"""
from __future__ import annotations

import base64
import copy
import itertools
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
import yaml

# path -> (resource, kind, apiVersion)
PATHS = {
    "/api/v1/namespaces": ("namespaces", "Namespace", "v1"),
    "/api/v1/pods": ("pods", "Pod", "v1"),
    "/api/v1/services": ("services", "Service", "v1"),
    "/api/v1/nodes": ("nodes", "Node", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("endpointslices", "EndpointSlice", "discovery.k8s.io/v1"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1"),
}
BY_KIND = {kind: (resource, version) for resource, kind, version in PATHS.values()}
TOKEN = "test-token"


@dataclass
class Fault:
    """What the next matching request gets. verb: list | continue (a list page after the first) | watch."""
    resource: str
    verb: str
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0  # before answering
    drop: bool = False  # close the connection without answering
    after_events: int | None = None  # watch: send this many events, then drop the connection
    stall: bool = False  # watch: send the headers, then nothing, and never end
    times: int = 1


@dataclass
class Request:
    resource: str
    verb: str
    params: dict[str, str]
    at: float  # time.monotonic()


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKubeAPI:
    """State, event log and faults, shared by the handler threads (all under `cond`)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[tuple, dict]] = {r: {} for r, _, _ in PATHS.values()}
        self.log: list[tuple] = []  # (rv, resource, type, object) or (rv, None, control, resource|None)
        self.compacted = 0  # a watch from below this resourceVersion gets ERROR 410
        self.faults: list[Fault] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.down = False
        self.requests: list[Request] = []
        self.continues: dict[str, tuple[int, list[dict]]] = {}
        self.active_watches = 0
        self.stopping = threading.Event()
        self._ids = itertools.count(1)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.api = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> "FakeKubeAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- changing the cluster ---------------------------------------------------------
    def put(self, obj: dict) -> int:
        """Create or update an object (kind, metadata.name[, namespace]); returns its resourceVersion."""
        resource, version = BY_KIND[obj["kind"]]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = version
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        with self.cond:
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            event = "MODIFIED" if key in self.objects[resource] else "ADDED"
            self.objects[resource][key] = obj
            self.log.append((self.rv, resource, event, obj))
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, name: str, namespace: str = "") -> int:
        resource, _ = BY_KIND[kind]
        with self.cond:
            obj = copy.deepcopy(self.objects[resource].pop((namespace, name)))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.log.append((self.rv, resource, "DELETED", obj))
            self.cond.notify_all()
            return self.rv

    def bookmark(self) -> int:
        """Every open watch gets a BOOKMARK at the current resourceVersion."""
        return self._control("BOOKMARK")

    def expire_watches(self, resource: str | None = None) -> int:
        """Open watches get `ERROR 410` and end; older resourceVersions are compacted away."""
        with self.cond:
            self.compacted = self.rv
        return self._control("EXPIRE", resource)

    def drop_watches(self, resource: str | None = None) -> int:
        """Open watches lose their connection mid-stream (no terminating chunk)."""
        return self._control("DROP", resource)

    def compact(self) -> None:
        """Resource versions before now are gone: resuming from them gets 410."""
        with self.cond:
            self.compacted = self.rv

    def expire_continues(self) -> None:
        with self.cond:
            self.continues.clear()

    def _control(self, what: str, resource: str | None = None) -> int:
        with self.cond:
            self.log.append((self.rv, None, what, resource))
            self.cond.notify_all()
            return self.rv

    # --- faults -----------------------------------------------------------------------
    def fail(self, resource: str, verb: str, **how) -> None:
        with self.cond:
            self.faults.append(Fault(resource, verb, **how))

    def set_down(self, down: bool) -> None:
        """While down, every connection is closed without an answer (and open watches drop)."""
        with self.cond:
            self.down = down
        if down:
            self.drop_watches()

    def take_fault(self, resource: str, verb: str) -> Fault | None:
        with self.cond:
            for fault in self.faults:
                if fault.resource == resource and fault.verb == verb:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests_for(self, resource: str, verb: str | None = None) -> list[Request]:
        with self.cond:
            return [r for r in self.requests if r.resource == resource and verb in (None, r.verb)]

    # --- answering --------------------------------------------------------------------
    def list_page(self, resource: str, kind: str, version: str, params: dict) -> tuple[int, dict]:
        with self.cond:
            token = params.get("continue")
            if token:
                if token not in self.continues:
                    return 410, status_body(410, "Expired", "The provided continue parameter is too old")
                rv, items = self.continues.pop(token)
            else:
                rv = self.rv
                items = [copy.deepcopy(o) for _, o in sorted(self.objects[resource].items())]
            limit = int(params.get("limit") or 0)
            meta = {"resourceVersion": str(rv)}
            if limit and len(items) > limit:
                items, rest = items[:limit], items[limit:]
                token = base64.urlsafe_b64encode(b"%d" % next(self._ids)).decode()
                self.continues[token] = (rv, rest)
                meta["continue"] = token
                meta["remainingItemCount"] = len(rest)
        for item in items:  # a list's items carry neither kind nor apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return 200, {"kind": kind + "List", "apiVersion": version, "metadata": meta, "items": items}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients dropping connections mid-request is what the tests do


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        api: FakeKubeAPI = self.server.api
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path not in PATHS:
            return self._send_json(404, status_body(404, "NotFound", f"the server could not find {url.path}"))
        resource, kind, version = PATHS[url.path]
        verb = "watch" if params.get("watch") in ("true", "1") else ("continue" if params.get("continue") else "list")
        with api.cond:
            api.requests.append(Request(resource, verb, params, time.monotonic()))
            down, arrived = api.down, len(api.log)
        if down:
            self.close_connection = True
            return
        if self.headers.get("Authorization", "").lower() != f"bearer {TOKEN}":
            return self._send_json(401, status_body(401, "Unauthorized", "Unauthorized"))
        fault = api.take_fault(resource, verb)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.drop:
            self.close_connection = True
            return
        if (resource, "watch" if verb == "watch" else "list") in api.forbidden:
            verb_word = "watch" if verb == "watch" else "list"
            return self._send_json(403, status_body(403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:'
                                   f'flowwarden:agent" cannot {verb_word} resource "{resource}" at the cluster scope'))
        if fault and fault.status:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return self._send_json(fault.status, status_body(fault.status, "Injected", "injected fault"), headers)
        if verb == "watch":
            return self._watch(api, resource, params, fault, arrived=arrived)
        self._send_json(*api.list_page(resource, kind, version, params))

    def _send_json(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = orjson.dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, event: dict) -> None:
        data = orjson.dumps(event) + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, api: FakeKubeAPI, resource: str, params: dict, fault: Fault | None, *, arrived: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if fault and fault.stall:  # a connection that silently died
            api.stopping.wait(60)
            self.close_connection = True
            return
        deadline = time.monotonic() + int(params.get("timeoutSeconds") or 1800)
        bookmarks = params.get("allowWatchBookmarks") == "true"
        sent, limit = 0, fault.after_events if fault else None
        with api.cond:
            if api.down:  # went down since the request came in: this watch is dropped too
                self.close_connection = True
                return
            api.active_watches += 1
            start = int(params.get("resourceVersion") or 0)
            if start and start < api.compacted:
                backlog = [("ERROR", status_body(410, "Expired", f"too old resource version: {start} ({api.compacted})"))]
            else:
                backlog = [(t, o) for rv, r, t, o in api.log if r == resource and rv > start]
            # Drops and expiries ordered while this request was on its way apply to it too.
            backlog += self._pending(api, resource, [e for e in api.log[arrived:] if e[1] is None], False)
            position = len(api.log)
        try:
            while True:
                for event_type, obj in backlog:
                    if event_type == "DROP" or (limit is not None and sent >= limit):
                        self.close_connection = True  # no terminating chunk: the client sees a broken stream
                        return
                    self._chunk({"type": event_type, "object": obj})
                    sent += 1
                    if event_type == "ERROR":
                        return self._end()
                with api.cond:
                    while len(api.log) == position and time.monotonic() < deadline and not api.stopping.is_set():
                        api.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    if len(api.log) == position:
                        return self._end()
                    backlog = self._pending(api, resource, api.log[position:], bookmarks)
                    position = len(api.log)
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            with api.cond:
                api.active_watches -= 1

    @staticmethod
    def _pending(api: FakeKubeAPI, resource: str, entries: list[tuple], bookmarks: bool) -> list[tuple]:
        out = []
        for rv, r, what, obj in entries:
            if r == resource:
                out.append((what, obj))
            elif r is None and obj in (None, resource):
                if what == "BOOKMARK" and bookmarks:
                    out.append(("BOOKMARK", {"kind": "Bookmark", "metadata": {"resourceVersion": str(rv)}}))
                elif what == "EXPIRE":
                    out.append(("ERROR", status_body(410, "Expired", "too old resource version")))
                elif what == "DROP":
                    out.append(("DROP", None))
        return out

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def write_kubeconfig(path, url: str, *, context: str = "fake") -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "agent", "user": {"token": TOKEN}}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "agent"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)
