"""The live inventory: list, then watch the cluster, keeping a `Store` current.

Part of the inventory stage: the `--kubeconfig` source of cluster state (`snapshot.py`
is the file source). One daemon thread per resource follows the informer pattern of
client-go and kopf: a paginated list, then a watch from the list's resourceVersion
with bookmarks. A watch that ends is resumed from the last resourceVersion seen;
410 Gone relists and applies only the difference; connection errors, timeouts, 5xx
and 429 are retried forever with exponential backoff and jitter (Retry-After
honoured). Other 4xx (RBAC, auth) become the resource's error: the agent stays up,
not ready, and retries at the longest backoff, so a fixed RBAC needs no restart.

Store writes hold `Inventory.lock`; readers that need several consistent reads
(a judge's batch) may hold it too.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson

from agent.inventory.kubeconfig import (
    CLIENT_ERROR, GONE, INTERNAL, RESOURCES, TIMEOUT, KubeApiError, Resource,
    call, classify, iter_lines, iter_pages, status_error,
)
from agent.inventory.objects import ObjectError, convert
from agent.inventory.store import Store

__all__ = ["Inventory", "ResourceStats"]

CONNECT_TIMEOUT = 10.0
QUIET_LIMIT = 150.0  # default read timeout of a watch, seconds


@dataclass(frozen=True, slots=True)
class ResourceStats:
    """What the metrics say about one watched resource."""
    synced: bool
    objects: int
    restarts: dict[str, int]
    last_event: float | None  # clock() of the last list, event or bookmark
    error: str | None


@dataclass(slots=True)
class _State:
    synced: bool = False
    restarts: Counter = field(default_factory=Counter)
    last_event: float | None = None
    error: str | None = None
    resource_version: str | None = None  # None: (re)list before watching
    failures: int = 0  # consecutive: since the last watch event or bookmark, lists included
    response: Any = None  # the open watch stream, so stop() can cut it


class Inventory:
    """Keeps `store` in step with the cluster through `api_client` (see module docstring).

    `backoff` is (first, longest) delay in seconds; `watch_timeout` is the shortest
    server-side watch duration (each watch asks for 1-2x, jittered so that many
    agents do not reconnect together); a watch silent for `read_timeout` seconds
    (default: its duration + 30 s, at most 150 s) is presumed dead and resumed.
    """

    def __init__(self, api_client: Any, store: Store, *, clock: Callable[[], float] = time.time,
                 backoff: tuple[float, float] = (0.5, 30.0), watch_timeout: float = 300.0,
                 read_timeout: float | None = None, page_size: int = 500, expire_every: float = 10.0,
                 resources: Iterable[Resource] = RESOURCES, logger: logging.Logger | None = None,
                 rng: random.Random | None = None):
        self.api_client, self.store, self.clock = api_client, store, clock
        self.backoff, self.watch_timeout, self.read_timeout = backoff, watch_timeout, read_timeout
        self.page_size, self.expire_every = page_size, expire_every
        self.resources = tuple(resources)
        self.log = logger or logging.getLogger(__name__)
        self.lock = threading.RLock()
        self._rng = rng or random.Random()
        self._states = {r.name: _State() for r in self.resources}
        self._stopping = threading.Event()
        self._all_synced = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """One daemon thread per resource, and one that expires ended IP claims."""
        if self._threads:
            raise RuntimeError("inventory already started")
        for resource in self.resources:
            self._threads.append(threading.Thread(
                target=self._run, args=(resource,), name=f"flowwarden-watch-{resource.name}", daemon=True))
        self._threads.append(threading.Thread(target=self._expire_loop, name="flowwarden-expire", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the threads, cutting open watch streams rather than waiting them out."""
        self._stopping.set()
        for state in self._states.values():
            response = state.response
            if response is not None:
                try:
                    response.shutdown()
                except Exception:  # already closed: nothing to cut
                    pass
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait_synced(self, timeout: float | None = None, *, fail_fast: bool = False) -> bool:
        """True once every resource had its first full list; False after `timeout`.

        With `fail_fast`, gives up as soon as a resource has a non-retryable error
        (e.g. RBAC forbidden), for one-shot commands.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._all_synced.is_set():
            if fail_fast and self.errors:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._all_synced.wait(0.05 if left is None else min(0.05, left))
        return True

    # --- state for readiness and metrics ------------------------------------------
    @property
    def ready(self) -> bool:
        """Every resource synced and none with a non-retryable error."""
        return all(s.synced and s.error is None for s in self._states.values())

    @property
    def errors(self) -> dict[str, str]:
        """resource -> its current non-retryable error, e.g. "forbidden: cannot list pods (403)"."""
        return {name: s.error for name, s in self._states.items() if s.error}

    def stats(self) -> dict[str, ResourceStats]:
        counts = self.store.counts()
        return {r.name: ResourceStats(synced=s.synced, objects=counts.get(r.kind, 0), restarts=dict(s.restarts),
                                      last_event=s.last_event, error=s.error)
                for r, s in ((r, self._states[r.name]) for r in self.resources)}

    # --- one resource ---------------------------------------------------------------
    def _run(self, resource: Resource) -> None:
        state = self._states[resource.name]
        while not self._stopping.is_set():
            try:
                if state.resource_version is None:
                    self._list(resource, state)
                started = time.monotonic()
                self._watch(resource, state)
            except KubeApiError as e:
                if not self._stopping.is_set():
                    self._failed(resource, state, e)
            except Exception as e:  # a bug of ours: keep watching, loudly
                if not self._stopping.is_set():
                    self.log.exception("%s: unexpected error", resource.name)
                    self._failed(resource, state, KubeApiError(f"{resource.name}: {e!r}", reason=INTERNAL))
            else:  # the server ended the watch at timeoutSeconds: resume where we were
                state.restarts[TIMEOUT] += 1
                if time.monotonic() - started < 1.0:  # never spin on a server that ends watches at once
                    self._stopping.wait(self.backoff[0])

    def _failed(self, resource: Resource, state: _State, error: KubeApiError) -> None:
        state.restarts[error.reason] += 1
        state.failures += 1
        first, longest = self.backoff
        if error.reason == CLIENT_ERROR:
            state.error, state.synced = str(error), False
            delay = longest
            self.log.error("%s; attempt %d failed; will retry in %.1fs", error, state.failures, delay)
        elif error.reason == GONE and state.failures == 1:  # a second 410 before any event waits
            state.resource_version = None
            self.log.info("%s", error)
            return
        else:
            if error.reason == GONE:
                state.resource_version = None
            # The exponent is capped: after days of outage 2**failures would overflow a float.
            delay = min(longest, first * 2 ** min(state.failures - 1, 32)) * (0.5 + self._rng.random() / 2)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            self.log.warning("%s; attempt %d failed; will retry in %.1fs", error, state.failures, delay)
        self._stopping.wait(delay)

    def _list(self, resource: Resource, state: _State) -> None:
        objects, version = [], None
        read_timeout = max(60.0, self.read_timeout or 0.0)
        for page in iter_pages(self.api_client, resource, page_size=self.page_size,
                               timeout=(CONNECT_TIMEOUT, read_timeout)):
            version = version or (page.get("metadata") or {}).get("resourceVersion")
            for item in page.get("items") or ():
                item["kind"] = resource.kind  # a list's items omit it
                if (obj := self._convert(resource, item)) is not None:
                    objects.append(obj)
        at = self.clock()
        with self.lock:
            self.store.replace(resource.kind, objects, at=at)
        state.resource_version = version or ""
        # failures stay: a watch that fails at once after every list must not relist back to back.
        state.synced, state.error, state.last_event = True, None, at
        if all(s.synced for s in self._states.values()):
            self._all_synced.set()
        self.log.info("%s: listed %d at resourceVersion %s", resource.name, len(objects), version)

    def _watch(self, resource: Resource, state: _State) -> None:
        duration = max(1, int(self.watch_timeout * (1 + self._rng.random())))
        # The API server sends a bookmark about every minute, so a longer silence means
        # a dead connection (a server without bookmarks costs a cheap resume, not a relist).
        read_timeout = self.read_timeout or min(duration + 30.0, QUIET_LIMIT)
        response = call(self.api_client, resource, watch=True, resource_version=state.resource_version,
                        allow_watch_bookmarks=True, timeout_seconds=duration,
                        _request_timeout=(CONNECT_TIMEOUT, read_timeout))
        state.response = response  # failures are reset by the first event, not by connecting
        if self._stopping.is_set():  # stop() may have looked before the response was there
            response.close()
            return
        if state.error:  # permission came back: what we had is current again once the watch runs
            state.error, state.synced = None, True
        try:
            for line in iter_lines(response):
                self._event(resource, state, line)
        except KubeApiError:
            raise
        except Exception as e:
            raise classify(e, resource=resource, verb="watch") from e
        finally:
            state.response = None
            response.close()
            response.release_conn()

    def _event(self, resource: Resource, state: _State, line: bytes) -> None:
        event = orjson.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise status_error(obj, resource=resource)
        now = self.clock()
        state.last_event, state.failures = now, 0
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("kind", resource.kind)
            if (converted := self._convert(resource, obj)) is not None:
                with self.lock:
                    stored = self.store.get(resource.kind, converted)
                    # Status churn we do not keep (conditions, restarts...) changes nothing.
                    if kind == "DELETED" or stored != converted:
                        self.store.apply(resource.kind, kind, converted, at=now)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            state.resource_version = version

    def _convert(self, resource: Resource, item: dict) -> Any:
        try:
            return convert(item)[1]
        except ObjectError as e:
            self.log.warning("%s: skipped: %s", resource.name, e)
            return None

    def _expire_loop(self) -> None:
        while not self._stopping.wait(self.expire_every):
            with self.lock:
                self.store.expire(self.clock())
