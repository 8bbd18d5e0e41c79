"""The live inventory when the API server misbehaves: down, 5xx, 429, 403/401, drops, silence."""
import logging
import threading
import time
from itertools import pairwise

from agent.inventory.kubeconfig import load_api_client
from agent.inventory.store import Store
from agent.inventory.watch import Inventory
from tests.kubeapi import (  # noqa: F401 (fixtures)
    eventually, kubeapi, kubeconfig, namespace, pod, start_inventory, write_kubeconfig,
)

IP = "10.1.0.7"


def pod_names(inventory) -> set[str]:
    return {p.name for p in inventory.store.objects["Pod"].values()}


def test_an_api_server_down_at_start_is_retried_until_it_comes_back(kubeapi, start_inventory, caplog):
    caplog.set_level(logging.WARNING, "agent.inventory.watch")
    kubeapi.put(pod("web", IP))
    kubeapi.set_down(True)
    inventory = start_inventory(backoff=(0.01, 0.05))
    eventually(lambda: len(kubeapi.requests_for("pods")) >= 4, what="retries")
    assert not inventory.ready and not inventory.store.synced
    assert inventory.errors == {}  # transient: no error to report, just not ready yet
    kubeapi.set_down(False)
    assert inventory.wait_synced(5)
    assert pod_names(inventory) == {"web"}
    assert inventory.stats()["pods"].restarts["connection"] >= 3
    messages = [r.getMessage() for r in caplog.records if "list pods" in r.getMessage()]
    assert any("attempt 3 failed; will retry in" in m for m in messages)
    attempts = [m.split("attempt ")[1].split()[0] for m in messages]
    assert attempts == sorted(attempts, key=int) and len(attempts) == len(set(attempts))  # once each


def test_an_outage_after_sync_resumes_the_watch_without_relisting(kubeapi, start_inventory):
    inventory = start_inventory(backoff=(0.01, 0.05))
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.active_watches == 6, what="six watches")
    kubeapi.set_down(True)
    kubeapi.put(pod("web", IP))
    eventually(lambda: len(kubeapi.requests_for("pods", "watch")) >= 3, what="watch retries")
    assert inventory.ready  # the last known state stands while the API is away
    kubeapi.set_down(False)
    eventually(lambda: pod_names(inventory) == {"web"}, what="missed pod")
    assert len(kubeapi.requests_for("pods", "list")) == 1


def test_server_errors_and_throttling_are_retried_honouring_retry_after(kubeapi, start_inventory):
    kubeapi.put(pod("web", IP))
    kubeapi.fail("pods", "list", status=500, times=2)
    kubeapi.fail("pods", "list", status=429, retry_after=1)
    inventory = start_inventory(backoff=(0.01, 0.05))
    assert inventory.wait_synced(5)
    lists = kubeapi.requests_for("pods", "list")
    assert len(lists) == 4
    assert lists[3].at - lists[2].at >= 1.0  # Retry-After: 1, above our 0.05 s backoff
    assert lists[2].at - lists[0].at < 1.0
    assert inventory.stats()["pods"].restarts == {"server_error": 2, "throttled": 1}


def test_a_forbidden_resource_is_a_clear_error_and_the_agent_stays_up_not_ready(
        kubeapi, start_inventory, caplog):
    kubeapi.put(pod("web", IP))
    kubeapi.forbidden.add(("pods", "list"))
    inventory = start_inventory(backoff=(0.01, 0.1))
    eventually(lambda: inventory.errors, what="an error")
    assert inventory.errors == {"pods": "forbidden: cannot list pods (403)"}
    assert not inventory.wait_synced(5, fail_fast=True)
    eventually(lambda: inventory.store.synced_kinds() >= {"Namespace", "Node", "Service", "EndpointSlice",
                                                          "NetworkPolicy"}, what="the others synced")
    assert not inventory.ready and not inventory.store.synced
    assert inventory.stats()["pods"].synced is False
    assert any("forbidden: cannot list pods (403)" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    eventually(lambda: len(kubeapi.requests_for("pods", "list")) >= 2, what="retry at the longest backoff")
    kubeapi.forbidden.clear()  # RBAC fixed: no restart needed
    assert inventory.wait_synced(5)
    eventually(lambda: inventory.ready, what="ready")
    assert inventory.errors == {} and pod_names(inventory) == {"web"}


def test_a_forbidden_watch_after_the_list_is_reported_with_its_verb(kubeapi, start_inventory):
    kubeapi.forbidden.add(("nodes", "watch"))
    inventory = start_inventory(backoff=(0.01, 0.1))
    eventually(lambda: inventory.errors, what="an error")
    assert inventory.errors == {"nodes": "forbidden: cannot watch nodes (403)"}
    assert not inventory.ready


def test_bad_credentials_are_reported_as_unauthorized(kubeapi, tmp_path):
    path = write_kubeconfig(tmp_path / "kubeconfig", kubeapi.url)
    (tmp_path / "kubeconfig").write_text(open(path).read().replace("test-token", "wrong"))
    inventory = Inventory(load_api_client(path), Store(), backoff=(0.01, 0.1))
    inventory.start()
    try:
        eventually(lambda: len(inventory.errors) == 6, what="six errors")
        assert inventory.errors["pods"] == "unauthorized: cannot list pods (401)"
        assert not inventory.ready
    finally:
        inventory.stop()


def test_a_watch_dropped_mid_stream_resumes_from_the_last_event_it_saw(kubeapi, start_inventory):
    kubeapi.fail("pods", "watch", after_events=2)
    inventory = start_inventory()
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.requests_for("pods", "watch"), what="first watch")
    versions = [kubeapi.put(pod(f"p{i}", f"10.1.0.{i}")) for i in range(4)]
    eventually(lambda: len(pod_names(inventory)) == 4, what="all four pods")
    watches = kubeapi.requests_for("pods", "watch")
    assert watches[1].params["resourceVersion"] == str(versions[1])
    assert len(kubeapi.requests_for("pods", "list")) == 1
    assert inventory.stats()["pods"].restarts == {"connection": 1}


def test_a_silent_watch_is_noticed_by_the_read_timeout(kubeapi, start_inventory):
    kubeapi.fail("pods", "watch", stall=True)
    inventory = start_inventory(read_timeout=0.5)
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.requests_for("pods", "watch"), what="first watch")
    kubeapi.put(pod("web", IP))
    eventually(lambda: pod_names(inventory) == {"web"}, timeout=3, what="pod after the dead watch")
    assert inventory.stats()["pods"].restarts.get("read_timeout", 0) >= 1


def test_a_watch_ended_by_the_server_is_resumed_without_relisting(kubeapi, start_inventory):
    inventory = start_inventory(watch_timeout=1)
    assert inventory.wait_synced(5)
    eventually(lambda: len(kubeapi.requests_for("pods", "watch")) >= 2, timeout=4, what="second watch")
    assert len(kubeapi.requests_for("pods", "list")) == 1
    assert inventory.stats()["pods"].restarts["timeout"] >= 1
    assert inventory.ready


def test_stop_ends_every_thread_promptly_with_watches_open(kubeapi, start_inventory):
    inventory = start_inventory(watch_timeout=60)
    assert inventory.wait_synced(5)
    eventually(lambda: kubeapi.active_watches == 6, what="six watches")
    started = time.monotonic()
    inventory.stop()
    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name.startswith("flowwarden-") and t.is_alive()]


def test_a_watch_that_breaks_right_after_connecting_backs_off_instead_of_spinning(kubeapi, start_inventory):
    inventory = start_inventory(backoff=(0.02, 0.5))
    assert inventory.wait_synced(5)
    kubeapi.put(pod("probe", "10.1.0.8"))  # seen through the watch: the stream is live
    eventually(lambda: pod_names(inventory) == {"probe"}, what="the first watch streaming")
    watched = len(kubeapi.requests_for("pods", "watch"))
    kubeapi.fail("pods", "watch", after_events=0, times=1000)  # headers, then the connection drops
    kubeapi.drop_watches("pods")  # the live stream drops; the pod below waits for a working watch
    kubeapi.put(pod("web", IP))
    time.sleep(2.0)
    watches = kubeapi.requests_for("pods", "watch")[watched:]
    gaps = [b.at - a.at for a, b in pairwise(watches)]
    assert 5 <= len(watches) <= 15, gaps  # spinning at 0.01-0.02 s would be about a hundred
    assert gaps[-1] >= 0.25 and gaps[-1] > 4 * gaps[0], gaps  # the longest backoff, jittered down to half
    with kubeapi.cond:
        kubeapi.faults.clear()
    eventually(lambda: pod_names(inventory) == {"probe", "web"}, timeout=3, what="the pod once watches work")
    assert len(kubeapi.requests_for("pods", "list")) == 1


def test_repeated_410s_do_not_relist_back_to_back(kubeapi, start_inventory):
    inventory = start_inventory(backoff=(0.05, 0.4))
    assert inventory.wait_synced(5)
    kubeapi.fail("pods", "watch", status=410, times=1000)
    kubeapi.drop_watches("pods")
    time.sleep(1.5)
    lists = kubeapi.requests_for("pods", "list")[1:]
    gaps = [b.at - a.at for a, b in pairwise(lists)]
    assert 2 <= len(lists) <= 10, gaps  # back to back, a full list would repeat hundreds of times
    assert all(gap >= 0.05 for gap in gaps), gaps  # at least the first backoff before a second relist
    with kubeapi.cond:
        kubeapi.faults.clear()
    kubeapi.put(pod("web", IP))
    eventually(lambda: pod_names(inventory) == {"web"}, timeout=3, what="the pod once watches work")
    assert inventory.ready
