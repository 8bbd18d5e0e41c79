"""The link monitor when attaching fails: it logs, keeps running, retries, and its heartbeat tells.

Each test creates a veth pair with unique `fwt*` names in this namespace (as
tests/capture/test_live.py does) and deletes it in the teardown, also on failure.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from agent.capture.interfaces import Link, LinkMonitor


@pytest.fixture
def pair():
    tag = uuid.uuid4().hex[:6]
    names = (f"fwt{tag}a", f"fwt{tag}b")
    subprocess.run(["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1]], check=True)
    try:
        yield tag, names
    finally:
        subprocess.run(["ip", "link", "del", names[0]], capture_output=True, check=False)


def test_a_failing_sync_is_logged_and_retried_and_the_monitor_thread_lives_on(pair, caplog):
    tag, names = pair
    failing = threading.Event()
    failing.set()
    calls: list[str] = []
    added: list[Link] = []

    def on_add(link: Link) -> None:
        calls.append(link.name)
        if failing.is_set():  # what pyroute2 raises when netlink refuses: not an OSError
            raise NetlinkError(16, "Device or resource busy")
        added.append(link)

    monitor = LinkMonitor([f"fwt{tag}*"], on_add=on_add, on_remove=lambda index: None)
    before = monitor.heartbeat
    with caplog.at_level(logging.WARNING, logger="flowwarden.capture"):
        monitor.start()  # its first sync fails: start() must not raise
        try:
            deadline = time.monotonic() + 3
            while len(calls) < 2 and time.monotonic() < deadline:  # the thread's own first sync
                time.sleep(0.01)
            assert len(calls) >= 2 and monitor._thread.is_alive()
            assert monitor.heartbeat == before and monitor.known == {}  # nothing attached, no success
            failing.clear()
            monitor.sync()  # what the next rescan (or SIGHUP) does
            assert sorted(link.name for link in added) == sorted(names)
            assert monitor.heartbeat > before
        finally:
            monitor.stop()
    failures = [r for r in caplog.records if "listing interfaces failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None  # the traceback once...
    assert all(r.exc_info is None for r in failures[1:])  # ...then one line per retry
