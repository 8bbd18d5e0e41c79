"""Which interfaces the live agent captures on, and when they come and go (**capture**).

Pod traffic crosses the host side of each pod's veth, the CNI bridge and the
overlay device; every CNI names them differently, so the default is a list of
globs covering the common ones. `--interfaces` (or `capture.interfaces`) replaces
it. A netlink monitor (pyroute2, RTMGRP_LINK) reports links that appear or vanish
while running, so a pod started after the agent is captured within milliseconds;
a periodic full listing repairs anything a lost netlink message would miss.
A failing listing (pyroute2's NetlinkError is not an OSError) is logged and
retried; `LinkMonitor.heartbeat` tells /healthz when the last one succeeded.
"""
from __future__ import annotations

import fnmatch
import logging
import select
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

# Host-side names of pod veths, CNI bridges and overlay devices of common CNIs.
DEFAULT_PATTERNS = (
    "veth*",  # bridge/ptp plugins, flannel, kindnet, weave
    "cali*", "vxlan.calico", "vxlan-v6.calico",  # Calico
    "lxc*", "cilium_vxlan", "cilium_geneve",  # Cilium
    "gke*",  # GKE dataplane v1
    "eni*",  # AWS VPC CNI
    "azv*",  # Azure CNI
    "antrea-gw0",  # Antrea
    "cni0", "cbr0", "kube-bridge", "weave",  # bridges
    "flannel.1", "flannel-v6.1", "genev_sys_*", "vxlan_sys_*",  # overlays
)

# ARPHRD_* (include/uapi/linux/if_arp.h) -> pcap link type of the frames AF_PACKET gives.
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534
RAW_IP_ARPHRD = frozenset((ARPHRD_NONE, 768, 769, 776, 778))  # none, ipip, ip6tnl, sit, gre
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101

RESCAN_EVERY = 5.0  # seconds between full listings (netlink is lossy under load)


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    linktype: int  # pcap link type of captured frames


def linktype_of(arphrd: int) -> int | None:
    """The pcap link type of an ARPHRD, or None when we cannot decode its frames."""
    if arphrd in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return LINKTYPE_ETHERNET
    if arphrd in RAW_IP_ARPHRD:
        return LINKTYPE_RAW
    return None


def parse_patterns(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"veth*,cni0"` or a list -> globs; empty means the default patterns."""
    if text is None:
        return DEFAULT_PATTERNS
    items = text.split(",") if isinstance(text, str) else list(text)
    patterns = tuple(p.strip() for p in items if p.strip())
    return patterns or DEFAULT_PATTERNS


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _link(msg) -> Link | None:
    linktype = linktype_of(msg["ifi_type"])
    name = msg.get_attr("IFLA_IFNAME")
    return Link(msg["index"], name, linktype) if linktype is not None and name else None


def list_links() -> list[Link]:
    """Every capturable link of this network namespace."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return [link for msg in ipr.get_links() if (link := _link(msg)) is not None]


class LinkMonitor:
    """Calls `on_add(link)` / `on_remove(index)` for links matching `patterns`.

    Runs one daemon thread. The pyroute2 socket is created inside that thread
    (pyroute2 0.9 ties a socket to the thread's event loop) and read only when
    select() says it is readable, so `stop()` never waits on a blocking read.
    `heartbeat` is the monotonic time of the last successful full listing (one
    every RESCAN_EVERY seconds while the thread lives).
    """

    def __init__(self, patterns: Sequence[str], *, on_add: Callable[[Link], None],
                 on_remove: Callable[[int], None], log: logging.Logger | None = None):
        self.patterns = tuple(patterns)
        self.on_add, self.on_remove = on_add, on_remove
        self.log = log or logging.getLogger("flowwarden.capture")
        self.known: dict[int, Link] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # sync() runs on SIGHUP too
        self._logged: set[type] = set()  # exception types whose traceback was logged
        self.events = 0
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        self.sync()  # the first attach happens before start() returns
        self._thread = threading.Thread(target=self._run, name="flowwarden-netlink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def set_patterns(self, patterns: Sequence[str]) -> None:
        """SIGHUP: new globs; the next sync attaches and detaches to match."""
        self.patterns = tuple(patterns)

    def sync(self) -> None:
        """Compare a full listing with what is attached; add and remove the difference."""
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        try:
            links = {link.index: link for link in list_links() if matches(link.name, self.patterns)}
            for index in [i for i, link in self.known.items() if links.get(i) != link]:
                self._remove(index)
            for index, link in links.items():
                if index not in self.known:
                    self._add(link)
        except Exception as e:  # NetlinkError, or a failing on_add: the next sync retries
            self._failed("listing interfaces", e)
            return
        self.heartbeat = time.monotonic()

    def _failed(self, what: str, error: Exception) -> None:
        """Log a failure; the traceback only the first time its type is seen."""
        first = type(error) not in self._logged
        self._logged.add(type(error))
        self.log.warning("%s failed: %s; will retry", what, error, exc_info=error if first else None)

    # Known only once the callback returned: a link whose attach failed is tried again.
    def _add(self, link: Link) -> None:
        self.on_add(link)
        self.known[link.index] = link

    def _remove(self, index: int) -> None:
        if index in self.known:
            self.on_remove(index)
            del self.known[index]

    def _run(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_LINK
        ipr = None
        try:
            ipr = IPRoute()
            ipr.bind(groups=RTMGRP_LINK)
            fd = ipr.fileno()
        except Exception as e:  # no netlink: periodic listings still find new pods
            self.log.warning("netlink monitor unavailable (%s); rescanning every %.0fs", e, RESCAN_EVERY)
            fd = None
        deadline = 0.0
        while not self._stop.is_set():
            try:
                deadline = self._turn(ipr, fd, deadline)
            except Exception as e:  # a bug of ours must not end the monitor: heartbeat shows it
                self._failed("netlink monitor", e)
                self._stop.wait(1.0)
        if ipr is not None:
            ipr.close()

    def _turn(self, ipr, fd: int | None, deadline: float) -> float:
        """One wait for netlink messages (or one rescan period without netlink); the next rescan time."""
        if fd is None:
            self._stop.wait(RESCAN_EVERY)
            self.sync()
            return deadline
        readable, _, _ = select.select([fd], [], [], 0.25)
        if readable:
            try:
                for msg in ipr.get():
                    self._message(msg)
            except Exception as e:  # ENOBUFS after a burst: messages lost, relist
                self.log.warning("netlink monitor: %s; relisting interfaces", e)
                self.sync()
        if time.monotonic() >= deadline:
            self.sync()
            deadline = time.monotonic() + RESCAN_EVERY
        return deadline

    def _message(self, msg) -> None:
        with self._lock:
            self._on_message(msg)

    def _on_message(self, msg) -> None:
        self.events += 1
        event = msg.get("event")
        if event == "RTM_DELLINK":
            self._remove(msg["index"])
        elif event == "RTM_NEWLINK":
            link = _link(msg)
            old = self.known.get(msg["index"])
            if link is None or not matches(link.name, self.patterns):
                if old is not None:  # renamed away from our patterns
                    self._remove(msg["index"])
            elif old != link:
                if old is not None:
                    self._remove(old.index)
                self._add(link)
