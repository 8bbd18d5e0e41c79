"""What the live agent exposes over HTTP: /metrics, /healthz, /readyz (**sinks**).

The registry of `flowwarden run` with the agent's own metrics (capture and
conntrack counters read at scrape time, judge latency, process CPU/RSS, build
info, the inventory's watch state), and the small threaded WSGI server that
serves it next to the health endpoints. prometheus_client stays in sinks/.
"""
from __future__ import annotations

import socket
import sys
from importlib import metadata
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, Info, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

JUDGE_BUCKETS = (1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 0.1)
Check = Callable[[], tuple[bool, str]]


class AgentMetrics:
    """The live agent's registry and its self-metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._judge_time = Histogram("flowwarden_judge_duration_seconds", "Time a judge takes per flow.",
                                     ["judge"], registry=self.registry, buckets=JUDGE_BUCKETS)
        ProcessCollector(registry=self.registry)
        try:
            version = metadata.version("flowwarden")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self._build = Info("flowwarden_build", "Version of the running agent, and the node it judges for.",
                           registry=self.registry)
        self._build_labels = {"version": version, "python": ".".join(map(str, sys.version_info[:3]))}
        self.set_node(None)

    def set_node(self, node: str | None) -> None:
        """`node` label of flowwarden_build_info: the node whose pods' sides this agent judges ("": all)."""
        self._build.info({**self._build_labels, "node": node or ""})

    def judge_timer(self, judge: str) -> Callable[[float], None]:
        return self._judge_time.labels(judge).observe

    def register_agent(self, agent: Any, inventory: Any | None) -> None:
        self.registry.register(CaptureCollector(agent))
        if inventory is not None:
            from agent.sinks.kube_collector import KubeCollector
            self.registry.register(KubeCollector(inventory))


class CaptureCollector:
    """Capture counters read at scrape time (the capture thread holds no metric)."""

    def __init__(self, agent: Any):
        self.agent = agent

    def collect(self):
        capture = self.agent.capture
        drops = CounterMetricFamily("flowwarden_capture_kernel_drops", "Packets the kernel dropped because "
                                    "the socket buffer was full (PACKET_STATISTICS), by interface; "
                                    "interfaces that went away add up under `_detached`.", labels=["interface"])
        passed = CounterMetricFamily("flowwarden_capture_kernel_packets", "Packets the kernel filter passed "
                                     "to the agent, by interface.", labels=["interface"])
        for name, (packets, dropped) in sorted(capture.kernel_stats().items()):
            drops.add_metric([name], dropped)
            passed.add_metric([name], packets)
        yield from (drops, passed)
        yield GaugeMetricFamily("flowwarden_capture_interfaces", "Interfaces captured on.",
                                value=capture.attached)
        yield CounterMetricFamily("flowwarden_capture_errors", "Capture errors (malformed frames, socket "
                                  "faults) survived; the first of each kind is logged.", value=capture.errors)
        yield CounterMetricFamily("flowwarden_capture_duplicates", "Copies of a packet already seen on "
                                  "another interface (veth and bridge), skipped.", value=capture.duplicates)
        limited = CounterMetricFamily("flowwarden_capture_limited", "Packets past their flow's budget, "
                                      "skipped before the pipeline.", labels=["protocol"])
        for proto, n in sorted(capture.limited.items()):
            limited.add_metric([proto], n)
        yield limited
        yield GaugeMetricFamily("flowwarden_capture_ring_fill_ratio", "The largest share of an interface "
                                "ring's blocks found waiting for the agent at one read, over the last second "
                                "(1 = full: the kernel drops).", value=capture.ring_fill)
        yield GaugeMetricFamily("flowwarden_capture_workers", "Capture worker threads (capture.workers).",
                                value=len(capture.workers))
        frames = CounterMetricFamily("flowwarden_capture_worker_frames", "Frames each capture worker read from "
                                     "its rings (the fanout's balance).", labels=["worker"])
        for worker in capture.workers:
            frames.add_metric([str(worker.number)], worker.filter.read)
        yield frames
        yield GaugeMetricFamily("flowwarden_capture_queue_batches", "Batches waiting for the pipeline.",
                                value=self.agent.queue.qsize())
        yield CounterMetricFamily("flowwarden_events_written", "Event lines written.",
                                  value=self.agent.events.written)
        yield GaugeMetricFamily("flowwarden_conntrack_available", "1 when conntrack events are read "
                                "(probed at start).", value=float(self.agent.ct_reader is not None))
        reader, merge = self.agent.ct_reader, self.agent.merge
        if reader is not None and merge is not None:
            yield CounterMetricFamily("flowwarden_conntrack_events", "Conntrack NEW/DESTROY events read.",
                                      value=reader.events)
            lost = CounterMetricFamily("flowwarden_conntrack_lost", "Conntrack loss: events dropped on a full "
                                       "queue; socket overruns (ENOBUFS, events uncounted).", labels=["reason"])
            merged = CounterMetricFamily("flowwarden_conntrack_flows", "How packet flows and conntrack "
                                         "entries were merged.", labels=["outcome"])
            for family, label, n in ((lost, "queue-full", reader.dropped), (lost, "overrun", reader.overruns),
                                     (merged, "completed", merge.completed), (merged, "duplicate", merge.duplicates),
                                     (merged, "conntrack-only", merge.conntrack_only),
                                     (merged, "expired", merge.expired), (merged, "evicted", merge.evicted)):
                family.add_metric([label], n)
            yield from (lost, merged)
            yield GaugeMetricFamily("flowwarden_conntrack_parked_flows", "Ended flows waiting for their "
                                    "conntrack DESTROY.", value=len(merge.parked))


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # scrapes are not worth a log line each
        pass


def serve(host: str, port: int, registry: CollectorRegistry, *, healthy: Check, ready: Check) -> _Server:
    """A server (not yet serving: call `serve_forever` in a thread) for /metrics, /healthz, /readyz."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, why = healthy() if path == "/healthz" else ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [why.encode() + b"\n"]
        if path == "/metrics":
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (_Server,), {"address_family": family})
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
