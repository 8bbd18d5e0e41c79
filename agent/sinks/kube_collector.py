"""Prometheus state of the live Kubernetes inventory, read at scrape time.

A sink: a custom collector (registered on the pipeline's injected registry) that
reads the watcher's per-resource stats when scraped, so the values are never
stale and the watcher holds no prometheus objects.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class KubeCollector:
    """flowwarden_kube_{synced, watch_restarts_total, objects, last_event_age_seconds}.

    `inventory` is an `agent.inventory.watch.Inventory` (anything with `stats()`
    and `clock`).
    """

    def __init__(self, inventory: Any):
        self.inventory = inventory

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        synced, restarts, objects, age = self._families()
        now = self.inventory.clock()
        for resource, stats in self.inventory.stats().items():
            synced.add_metric([resource], 1.0 if stats.synced else 0.0)
            objects.add_metric([resource], float(stats.objects))
            for reason, count in sorted(stats.restarts.items()):
                restarts.add_metric([resource, reason], float(count))
            if stats.last_event is not None:
                age.add_metric([resource], max(0.0, now - stats.last_event))
        yield from (synced, restarts, objects, age)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("flowwarden_kube_synced",
                              "1 once the resource's first full list has loaded and no "
                              "non-retryable error (e.g. RBAC) stands", labels=["resource"]),
            CounterMetricFamily("flowwarden_kube_watch_restarts",
                                "List/watch restarts by reason (timeout, gone, connection, read_timeout, "
                                "server_error, throttled, client_error, internal)",
                                labels=["resource", "reason"]),
            GaugeMetricFamily("flowwarden_kube_objects", "Objects of the resource held in the inventory",
                              labels=["resource"]),
            GaugeMetricFamily("flowwarden_kube_last_event_age_seconds",
                              "Seconds since the last list, watch event or bookmark of the resource",
                              labels=["resource"]),
        )
