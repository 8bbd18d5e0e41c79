"""`--cluster FILE`: the cluster state as `kubectl get ... -A -o json` (or YAML) prints it.

Loads a Kubernetes `List` (or any `*List`, or a multi-document YAML of objects) into
a `Store`, for replay, evaluate and air-gapped nodes. The store is timeless: a
snapshot says who owns what, not since when.
"""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson
import yaml

from agent.inventory.objects import KINDS, CONVERTERS, ObjectError, convert
from agent.inventory.store import Store


class ClusterFileError(ValueError):
    """A cluster file that cannot be used; the message names the file and the problem."""


def read_documents(path: str | Path) -> list[Any]:
    """Parsed JSON or (multi-document) YAML; gzip is undone first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise ClusterFileError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            return [orjson.loads(raw)]
        except orjson.JSONDecodeError as e:
            raise ClusterFileError(f"{path}: invalid JSON: {e}") from e
    try:
        return [d for d in yaml.safe_load_all(raw) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ClusterFileError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from e


def iter_items(documents: Iterable[Any], *, source: str) -> Iterable[Mapping]:
    """Every object in the documents, unwrapping `List`s."""
    for doc in documents:
        if isinstance(doc, list):
            yield from iter_items(doc, source=source)
        elif not isinstance(doc, Mapping):
            raise ClusterFileError(f"{source}: expected Kubernetes objects, found {type(doc).__name__}")
        elif str(doc.get("kind", "")).endswith("List") or "items" in doc:
            items = doc.get("items")
            if not isinstance(items, list):
                raise ClusterFileError(f"{source}: {doc.get('kind', 'List')} without an items list")
            item_kind = str(doc.get("kind", ""))[:-4]  # PodList items may omit their kind
            yield from ({"kind": item_kind, **i} if isinstance(i, Mapping) and "kind" not in i and
                        item_kind else i for i in items)
        else:
            yield doc


def load_cluster(path: str | Path, *, store: Store | None = None, ignored: Counter | None = None) -> Store:
    """A synced, timeless Store from a cluster file; ClusterFileError names what is wrong.

    Objects of kinds flowwarden does not use are counted by kind in `ignored`:
    a ConfigMap given as the cluster state should be said, not silently dropped.
    """
    source = str(path)
    by_kind: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for item in iter_items(read_documents(path), source=source):
        if not isinstance(item, Mapping):
            raise ClusterFileError(f"{source}: list item is not an object")
        if item.get("kind") not in CONVERTERS:
            if ignored is not None:  # other kinds (ReplicaSets, ConfigMaps ...) are not needed
                ignored[str(item.get("kind") or "object without a kind")] += 1
            continue
        try:
            kind, obj = convert(item)
        except ObjectError as e:
            raise ClusterFileError(f"{source}: {e}") from e
        by_kind[kind].append(obj)
    store = store or Store(history=False)
    for kind in KINDS:  # namespaces first: policies and pods refer to them
        store.replace(kind, by_kind[kind], at=0.0)
    return store


def check_usable(store: Store, *, source: str, ignored: Counter) -> None:
    """A cluster state without Pods and Namespaces makes every endpoint external: a false all-clear."""
    if any(store.objects[kind] for kind in ("Pod", "Namespace")):
        return
    found = f"found {describe_kinds(ignored)}" if ignored else "found nothing flowwarden uses"
    raise ClusterFileError(f"{source}: no Pods and no Namespaces ({found}), so every endpoint would be "
                           "external; give kubectl get pods,namespaces,services,endpointslices,networkpolicies "
                           "-A -o json, or pass --allow-empty-cluster")


def describe_kinds(counts: Counter) -> str:
    """"2 ConfigMap, 1 Deployment": objects counted by kind, most first."""
    return ", ".join(f"{n:,} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
