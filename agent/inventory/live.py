"""One-shot use of the live cluster: a synced `Store` for `replay/evaluate --kubeconfig`,
and the state file of `flowwarden snapshot`.

Inventory stage. The long-running agent keeps its `Inventory` watching (agent/run.py);
the commands here list once, stop the watch threads and hand back the result. Every
failure is a `LiveInventoryError` (a ValueError) with one line naming the kubeconfig
and what went wrong, so the CLI reports it like a bad file.
"""
from __future__ import annotations

import logging
from typing import Any

from agent.inventory.store import Store

SYNC_TIMEOUT = 60.0


class LiveInventoryError(ValueError):
    """The live cluster could not be read; the message is one line."""


def _where(kubeconfig: str | None, context: str | None) -> str:
    where = f"kubeconfig {kubeconfig}" if kubeconfig else "the default kubeconfig or in-cluster account"
    return f"{where} (context {context})" if context else where


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    from agent.inventory.kubeconfig import KubeConfigError, load_api_client
    try:
        return load_api_client(kubeconfig, context)
    except KubeConfigError as e:
        raise LiveInventoryError(str(e)) from e


def live_store(kubeconfig: str | None, context: str | None = None, *,
               timeout: float = SYNC_TIMEOUT, grace: float = 120.0) -> Store:
    """Every watched resource listed once into a timeless Store (like a `--cluster` file).

    Timeless because the flows judged against it (a pcap, a flow file) were recorded
    before the list: who owns an address now is the best answer there is.
    """
    from agent.inventory.watch import Inventory
    client = api_client(kubeconfig, context)
    store = Store(history=False, grace=grace)
    inventory = Inventory(client, store, logger=logging.getLogger("flowwarden.inventory"),
                          backoff=(0.5, 5.0))
    inventory.start()
    try:
        synced = inventory.wait_synced(timeout, fail_fast=True)
    finally:
        inventory.stop(timeout=2.0)
    if not synced:
        errors = inventory.errors
        if errors:
            detail = "; ".join(f"{name}: {error}" for name, error in sorted(errors.items()))
        else:
            pending = sorted(name for name, s in inventory.stats().items() if not s.synced)
            detail = f"not synced after {timeout:.0f}s (waiting for {', '.join(pending)})"
        raise LiveInventoryError(f"{_where(kubeconfig, context)}: {detail}")
    return store


def snapshot_cluster(kubeconfig: str | None, context: str | None = None) -> dict:
    """The cluster state as one `List` (what `--cluster` reads)."""
    from agent.inventory.kubeconfig import KubeApiError, dump_cluster
    client = api_client(kubeconfig, context)
    try:
        return dump_cluster(client)
    except KubeApiError as e:
        raise LiveInventoryError(f"{_where(kubeconfig, context)}: {e}") from e
