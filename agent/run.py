"""`flowwarden run`: the node agent the DaemonSet runs.

Wiring only, like `pipeline.py` for replay: live capture (agent.capture.live) on
the interfaces the netlink monitor reports -> a bounded queue -> the pipeline,
driven by the main thread, which alone touches the pipeline (it also sweeps idle
flows on the wall clock and closes event windows). The inventory is a `--cluster`
file or the live API; its watch threads change the store under `inventory.lock`,
which the pipeline thread holds while it judges. An HTTP server (prometheus
client, agent.sinks.exposition) serves /metrics, /healthz and /readyz. SIGHUP reloads the config,
SIGTERM/SIGINT stop capture, flush flows and events, and exit 0.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import orjson

from agent.capture.conntrack import ConntrackReader, probe_conntrack
from agent.capture.interfaces import RESCAN_EVERY, LinkMonitor, list_links, matches, parse_patterns
from agent.capture.live import BATCH, LiveCapture, require_capture_permission, ring_geometry
from agent.config import Config, ConfigError, load_config
from agent.evaluate import load_policy_files
from agent.flows.merge import ConntrackMerge
from agent.inventory.snapshot import load_cluster
from agent.inventory.store import Store
from agent.judges import build_judges
from agent.model import CLASSIFIED
from agent.pipeline import Pipeline, settle_heap
from agent.sinks.events import EventSink, FlowRecordSink
from agent.sinks.exposition import AgentMetrics, serve
from agent.sinks.metrics import MetricsSink
from agent.sinks.text import TextWriter, default_format, use_colour

log = logging.getLogger("flowwarden.run")
TICK = 1.0  # seconds between wall-clock sweeps of the flow table
STALL = 5.0  # /healthz fails when a loop has not turned for this long
MONITOR_STALL = 3 * RESCAN_EVERY  # ... or when the interface listing has failed for this long
CONNTRACK_QUEUE = 1024  # batches of conntrack events waiting for the pipeline


@dataclass
class RunOptions:
    config: str | None = None
    cluster: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    interfaces: str | None = None
    listen: str = "0.0.0.0:9847"
    events: str | None = None
    flows: str | None = None
    format: str | None = None  # events as "text" or "json" (default: text on a terminal, json otherwise)
    with_policies: tuple[str, ...] = ()  # staged candidates; over the config's policies.staged
    node: str | None = None  # the node judged for (model.side_of); None: $NODE_NAME, else this host's node


def _host_node(nodes) -> str | None:
    """The node that is this host: by name (the kubelet's default node name), else by an InternalIP."""
    hostname = socket.gethostname()
    nodes = list(nodes)
    for node in nodes:
        if node.name in (hostname, hostname.split(".")[0]):
            return node.name
    addresses = _host_addresses()
    return next((n.name for n in nodes if addresses.intersection(n.internal_ips)), None)


def _host_addresses() -> set[str]:
    from pyroute2 import IPRoute
    try:
        with IPRoute() as ipr:
            return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()} - {None}
    except OSError:
        return set()


class JsonFormatter(logging.Formatter):
    """One JSON object per line on stderr; a traceback stays inside its line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
                f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def json_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class TimedJudge:
    """A judge whose calls are timed (`flowwarden_judge_duration_seconds{judge}`)."""

    def __init__(self, judge: Any, observe: Callable[[float], None]):
        self.inner, self.name, self.stage = judge, judge.name, getattr(judge, "stage", CLASSIFIED)
        self.compact_safe = getattr(judge, "compact_safe", False)
        self._observe = observe

    def judge(self, flow, src, dst):
        started = time.perf_counter()
        try:
            return self.inner.judge(flow, src, dst)
        finally:
            self._observe(time.perf_counter() - started)

    def on_change(self, kind: str, old, new) -> None:
        if hasattr(self.inner, "on_change"):
            self.inner.on_change(kind, old, new)


def effective_grace(config: Config, *, conntrack: bool) -> float:
    """How long the store keeps the IPs of deleted pods: at least as long as a flow
    may wait to be judged (idle timeout, linger after FIN, and the conntrack merge's
    wait for final counters), so no flow loses its attribution before its verdict."""
    f = config.flows
    judged_within = max(f.tcp_timeout, f.udp_timeout) + f.closed_linger + (
        config.capture.conntrack_wait if conntrack else 0.0)
    return max(config.inventory.grace, judged_within)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {listen}: expected HOST:PORT, e.g. 0.0.0.0:9847 or [::]:9847")
    return host.strip("[]") or "0.0.0.0", int(port)


class Agent:
    def __init__(self, options: RunOptions):
        self.options = options
        self.config = load_config(options.config)
        host, port = parse_listen(options.listen)
        self._check_capture()
        self.inventory, self.store = self._inventory()
        self.lock = self.inventory.lock if self.inventory is not None else threading.RLock()
        self.exposition = AgentMetrics()
        self.registry = self.exposition.registry
        self._events_file = open(options.events, "ab") if options.events else None
        self._flows_file = open(options.flows, "ab") if options.flows else None
        self.events = EventSink(self._events_out(), window=self.config.events.window,
                                max_groups=self.config.events.max_groups)
        self.metrics = MetricsSink(self.registry, max_namespaces=self.config.metrics.max_namespaces, staged=True)
        self.flow_records = FlowRecordSink(self._flows_file) if self._flows_file else None
        sinks = [self.events, self.metrics] + ([self.flow_records] if self.flow_records else [])
        self.pipeline = Pipeline(view=self.store, config=self.config, sinks=sinks,
                                 candidates=self._staged(self.config))
        self.node: str | None = None
        self._node_wanted = True  # until the node is known, or the inventory synced without a match
        self._resolve_node()
        self.metrics.watch(self.pipeline.stats())
        self.pipeline.judges = self._timed(self.pipeline.judges)
        self.store.subscribe(self._on_change)
        c = self.config.capture
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, c.queue_size // BATCH))
        self.capture = LiveCapture(self.queue, udp_packets_per_flow=c.udp_packets_per_flow,
                                   tcp_segments_per_flow=c.tcp_segments_per_flow, payload_bytes=c.payload_bytes,
                                   ring=ring_geometry(c), workers=c.workers, dns_names=self.pipeline.table.dns_queries)
        self.monitor = LinkMonitor(self._patterns(self.config), on_add=self.capture.attach,
                                   on_remove=self.capture.detach)
        self.conntrack = probe_conntrack()
        self.ct_queue: queue.Queue = queue.Queue(maxsize=CONNTRACK_QUEUE)
        self.ct_reader, self.merge = self._conntrack() if self.conntrack else (None, None)
        self._apply_grace(self.config)
        self.exposition.register_agent(self, self.inventory)
        try:
            self.server = serve(host, port, self.registry, healthy=self.healthy, ready=self.ready)
        except OSError as e:
            raise ConfigError(f"--listen {options.listen}: {e.strerror}") from e
        self.heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._queue_drops_seen = 0
        self._heap_settled = False

    # --- building ------------------------------------------------------------------
    def _inventory(self):
        o, grace = self.options, self.config.inventory.grace
        if o.cluster:
            return None, load_cluster(o.cluster, store=Store(history=False, grace=grace))
        from agent.inventory.live import api_client
        from agent.inventory.watch import Inventory
        store = Store(grace=grace)
        return Inventory(api_client(o.kubeconfig, o.context), store,
                         logger=logging.getLogger("flowwarden.inventory")), store

    def _conntrack(self) -> tuple[ConntrackReader | None, ConntrackMerge | None]:
        if not self.config.capture.conntrack:
            log.info("conntrack disabled by capture.conntrack; packet capture alone accounts for connections")
            return None, None
        try:
            reader = ConntrackReader(self.ct_queue)
        except OSError as e:
            log.info("conntrack events unavailable (%s); packet capture alone accounts for connections", e)
            return None, None
        table = self.pipeline.table
        merge = ConntrackMerge(table, self.pipeline.end, answer=self.pipeline.answer,
                               wait=self.config.capture.conntrack_wait, max_entries=self.config.flows.max_flows,
                               clock=time.time)
        table.on_end, table.on_answer = merge.on_end, merge.on_answer
        self.pipeline.compact(False)  # a compact flow would never meet its conntrack entry
        return reader, merge

    def _apply_grace(self, config: Config) -> None:
        if self.inventory is None:  # a --cluster file: its pods are never deleted
            return
        grace = effective_grace(config, conntrack=self.merge is not None)
        if grace != self.store.grace and grace > config.inventory.grace:
            log.info("inventory.grace raised from %gs to %gs: flows are judged up to that long after "
                     "their last packet (flows.tcp_timeout + flows.closed_linger + capture.conntrack_wait)",
                     config.inventory.grace, grace)
        self.store.grace = grace

    def _events_out(self) -> BinaryIO | TextWriter:
        out = self._events_file or sys.stdout.buffer
        if (self.options.format or default_format(out)) == "text":
            return TextWriter(out, colour=use_colour(out))
        return out

    def _check_capture(self) -> None:
        """Fail at start, in one line, where capture cannot work: no permission, or (for
        `--interfaces` typed on the command line) nothing matches on this node."""
        require_capture_permission()
        patterns = parse_patterns(self.options.interfaces)
        links = list_links() if patterns else []
        if patterns and not any(matches(link.name, patterns) for link in links):
            names = ", ".join(sorted(link.name for link in links))
            raise ConfigError(f"--interfaces {self.options.interfaces}: no interface of this node matches "
                              f"(it has: {names})")

    def _staged(self, config: Config) -> list:
        """The staged candidate policies: `--with-policies`, else `policies.staged` (read again on SIGHUP)."""
        paths = self.options.with_policies or ((config.policies.staged,) if config.policies.staged else ())
        staged = load_policy_files(paths) if paths else []
        if paths:
            log.info("staged %d candidate policies from %s", len(staged), ", ".join(paths))
        return staged

    def _patterns(self, config: Config) -> tuple[str, ...]:
        return parse_patterns(self.options.interfaces if self.options.interfaces else config.capture.interfaces)

    def _timed(self, judges: list) -> list:
        return [TimedJudge(j, self.exposition.judge_timer(j.name)) for j in judges]

    # --- state -----------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        now = time.monotonic()
        beats = [("capture loop", self.capture.heartbeat, STALL), ("pipeline loop", self.heartbeat, STALL),
                 ("interface listing", self.monitor.heartbeat, MONITOR_STALL)]
        if self.ct_reader is not None:
            beats.append(("conntrack reader", self.ct_reader.heartbeat, STALL))
        for name, beat, limit in beats:
            if now - beat > limit:
                return False, f"{name} stalled for {now - beat:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.inventory is not None and not self.inventory.ready:
            errors = self.inventory.errors
            return False, "inventory: " + ("; ".join(errors.values()) if errors else "not synced")
        if not self.capture.attached:
            return False, "capture: no interface attached"
        return True, "ok"

    def _resolve_node(self) -> None:
        """Who this agent judges for: --node, else $NODE_NAME (the DaemonSet's downward API), else the
        node whose name is this host's name or whose InternalIP is one of this host's addresses (once the
        inventory knows the nodes), else nobody: every flow judged whole, as a replay does."""
        node = self.options.node or os.environ.get("NODE_NAME") or None
        if node is None:
            if not self.store.synced:
                return
            node = _host_node(self.store.objects["Node"].values())
        self._node_wanted = False
        self.node = self.pipeline.node = self.events.node = node
        if self.flow_records is not None:
            self.flow_records.node = node
        self.pipeline.cluster_changed()  # the compact table's classes hold which pods are local
        self.exposition.set_node(node)
        if node:
            log.info("judging for node %s: its pods' policy sides, not transit", node)
        else:
            log.info("no node identity (--node, NODE_NAME, or a node matching this host): every flow judged whole")

    def _on_change(self, kind: str, old, new) -> None:
        for judge in self.pipeline.judges:  # the current judges, also after a reload
            judge.on_change(kind, old, new)
        self.pipeline.cluster_changed()
        if kind == "Namespace" and new is None:  # its metric series go with it
            self.metrics.forget_namespace(old.name)

    # --- running -------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        if self.inventory is not None:
            self.inventory.start()
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="flowwarden-http", daemon=True).start()
        self.capture.start()
        if self.ct_reader is not None:
            self.ct_reader.start()
        self.monitor.start()
        host, port = self.server.server_address[:2]
        log.info("started: %d interface(s) matching %s to capture on; metrics on %s:%d",
                 len(self.monitor.known), ",".join(self.monitor.patterns), host, port)
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _on_stop(self, signum, _frame) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self._stop.set()

    def _loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            try:
                batch = self.queue.get(timeout=0.2)
            except queue.Empty:
                batch = None
            with self.lock:
                try:
                    if batch:
                        self._feed(batch)
                    self._feed_conntrack()
                    now = time.time()
                    if now >= next_tick:
                        self._tick(now)
                        next_tick = now + TICK
                except Exception:  # a bug in a stage must not blind the node: log once, count, go on
                    self.pipeline.failed("flows", "loop")
            self.heartbeat = time.monotonic()

    def _feed(self, batch: list) -> None:
        self.pipeline.feed(batch)
        for _ in range(64):  # take what else is waiting while we hold the lock
            try:
                self.pipeline.feed(self.queue.get_nowait())
            except queue.Empty:
                return

    def _feed_conntrack(self, limit: int = 64) -> None:
        for _ in range(limit if self.merge is not None else 0):
            try:
                self.merge.feed(self.ct_queue.get_nowait())
            except queue.Empty:
                return

    def _tick(self, now: float) -> None:
        if not self._heap_settled and self.store.synced:  # the inventory is loaded: see settle_heap
            settle_heap()
            self._heap_settled = True
        if self._node_wanted:
            self._resolve_node()
        if self.merge is not None:
            self.merge.sweep(now)
        self.pipeline.tick(now)  # deadlines, the flow table's sweep when due, sinks
        dropped = self.capture.queue_dropped
        if dropped > self._queue_drops_seen:
            self.pipeline.count_drop("queue", "full", dropped - self._queue_drops_seen)
            self._queue_drops_seen = dropped

    def reload(self) -> None:
        """SIGHUP: read the config again; a bad one (or any failure applying it) is logged
        and the old one kept."""
        try:
            config = load_config(self.options.config)
            staged = self._staged(config)
            with self.lock:  # judges read the store while they are built: no watch may change it meanwhile
                self.pipeline.what_if = bool(staged)  # before the judges: it decides the compact table
                self._apply(config, self._timed(build_judges(config, self.store, candidates=staged)))
        except ValueError as e:  # ConfigError, a bad tls rule, a bad staged policy
            log.error("reload failed, keeping the running config: %s", e)
            return
        except Exception:
            log.exception("reload failed, keeping the running config")
            return
        self.monitor.set_patterns(self._patterns(config))
        self.monitor.sync()  # logs and keeps the old interfaces when listing fails
        log.info("reloaded %s (capture.queue_size applies at the next start)", self.options.config)

    def _apply(self, config: Config, judges: list) -> None:
        self.config = self.pipeline.config = config
        self.pipeline.judges = judges
        self.capture.dns_names = self.pipeline.table.dns_queries  # interfaces attached from now on
        self.pipeline.table.settings = config.flows
        self.events.window, self.events.max_groups = config.events.window, config.events.max_groups
        self.metrics.max_namespaces = config.metrics.max_namespaces
        self.capture.budget.udp = config.capture.udp_packets_per_flow
        self.capture.budget.tcp = config.capture.tcp_segments_per_flow
        self._apply_grace(config)

    def _shutdown(self) -> None:
        """Stop capture, judge what was captured, flush sinks: well within 5 s."""
        self.monitor.stop()
        self.capture.stop()
        if self.ct_reader is not None:
            self.ct_reader.stop()
        with self.lock:
            while True:
                try:
                    self.pipeline.feed(self.queue.get_nowait())
                except queue.Empty:
                    break
            self._feed_conntrack(CONNTRACK_QUEUE)
            self._tick(time.time())
            if self.merge is not None:
                self.merge.finish()  # parked flows are judged with what is known now
            self.pipeline.finish()
        for f in (self._events_file, self._flows_file):
            if f is not None:
                f.close()
        self.server.shutdown()
        self.server.server_close()
        if self.inventory is not None:
            self.inventory.stop(timeout=1.0)
        log.info("stopped: %d packets, %d flows judged", self.pipeline.table.packets, self.pipeline.totals.flows)

