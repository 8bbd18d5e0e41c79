"""AF_PACKET capture on the node's pod interfaces -> batches of frames (the entry of `run`).

**capture** -> decode. Each attached interface gets a socket with a kernel BPF program
(agent/capture/bpf.py) that keeps only what the judges use, truncated to the bytes they
read, and a memory-mapped TPACKET_V3 ring (agent/capture/ring.py) the kernel fills a
block at a time: no system call per frame. `capture.workers` threads
(agent/capture/worker.py, default one) read the rings through epoll; with more than one,
each interface has one ring per worker, joined in a PACKET_FANOUT hash group. Before the
queue, a packet seen on several interfaces (pod veth, bridge, peer veth) is kept once
and UDP packets and TCP data segments beyond a per-flow budget are dropped
(prefilter.py, or the same in C in agent/_capture.h, with the GIL released). The pipeline
gets pcap record blocks (compiled) or `(timestamp, linktype, bytes)` lists (Python), as
`replay` does, through a bounded queue: when it is full the batch is dropped and
counted, capture never blocks. Kernel drops come from PACKET_STATISTICS per interface.
See docs/capture.md for the design and its measured cost.
"""
from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from typing import Callable

from scapy.arch.linux import PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, SOL_PACKET
from scapy.data import ETH_P_ALL

from agent.capture.bpf import attach_bpf, bpf_program
from agent.capture.interfaces import Link
from agent.capture.ring import Ring, RingGeometry, join_fanout, make_filter, map_ring
from agent.capture.worker import BATCH, CaptureWorker, InterfaceStats
from agent.config import CaptureConfig, ConfigError
from agent.decode.hotpath import HOTPATH

__all__ = ["BATCH", "LiveCapture", "open_ring", "require_capture_permission", "ring_geometry"]
_MREQ = struct.Struct("iHH8s")  # struct packet_mreq


def require_capture_permission() -> None:
    """Raise ConfigError (one line, exit 2) when this process may not open AF_PACKET sockets."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError as e:
        raise ConfigError("capture: opening an AF_PACKET socket: Operation not permitted; "
                          "flowwarden run needs root or CAP_NET_RAW") from e


def open_ring(link: Link, *, payload_bytes: int = 4096, geometry: RingGeometry = RingGeometry(),
              dns_names: bool = False) -> Ring:
    """An AF_PACKET socket on `link` with its ring, the filter attached before binding,
    so no unfiltered packet is ever queued on it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
    try:
        attach_bpf(sock, bpf_program(link.linktype, payload_bytes=payload_bytes, dns_names=dns_names))
        mem = map_ring(sock, geometry)
        try:
            sock.bind((link.name, ETH_P_ALL))
            # A bridge passes forwarded frames up to its own device only when promiscuous;
            # the membership ends with the socket.
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(link.index, PACKET_MR_PROMISC, 0, b""))
        except BaseException:
            mem.close()
            raise
    except BaseException:
        sock.close()
        raise
    return Ring(sock, link, mem, geometry)


def ring_geometry(config: CaptureConfig) -> RingGeometry:
    """The ring of `capture.ring_*`; ConfigError (one line) for one the kernel would refuse."""
    size, blocks, timeout = config.ring_block_size, config.ring_blocks, config.ring_block_timeout
    if size < 1 << 16 or size & (size - 1):
        raise ConfigError(f"capture.ring_block_size: {size} is not a power of two of at least 65536")
    if not 2 <= blocks <= 4096:
        raise ConfigError(f"capture.ring_blocks: {blocks} is not between 2 and 4096")
    if not 0.001 <= timeout <= 60:
        raise ConfigError(f"capture.ring_block_timeout: {timeout} is not between 0.001 and 60 seconds")
    if not 1 <= config.workers <= 64:
        raise ConfigError(f"capture.workers: {config.workers} is not between 1 and 64")
    return RingGeometry(block_size=size, blocks=blocks, timeout_ms=round(timeout * 1000))


class BudgetLimits:
    """The per-flow budget every worker applies; a reload changes it in place."""
    __slots__ = ("udp", "tcp")

    def __init__(self, udp: int, tcp: int):
        self.udp, self.tcp = udp, tcp


class LiveCapture:
    """Captures on attached links with `workers` threads and puts frame batches on `out`.

    `attach`/`detach` may be called from any thread (the netlink monitor): attach opens
    the interface's rings at once, in worker order (so a fanout hash picks the same
    worker on every interface), and hands each to its worker, the only thread reading it.
    """

    def __init__(self, out: queue.Queue, *, udp_packets_per_flow: int = 4, tcp_segments_per_flow: int = 8,
                 payload_bytes: int = 4096, ring: RingGeometry = RingGeometry(), workers: int = 1,
                 compiled: bool = HOTPATH is not None, clock: Callable[[], float] = time.time,
                 log: logging.Logger | None = None, dns_names: bool = False):
        self.out, self.payload_bytes, self.geometry = out, payload_bytes, ring
        self.dns_names = dns_names  # UDP/53 keeps its query (bpf.py), for interfaces attached from now on
        self.log = log or logging.getLogger("flowwarden.capture")
        self.budget = BudgetLimits(udp_packets_per_flow, tcp_segments_per_flow)
        self.workers = [CaptureWorker(i, out, make_filter(udp=udp_packets_per_flow, tcp=tcp_segments_per_flow,
                                                          compiled=compiled),
                                      self.budget, clock=clock, log=self.log, on_gone=self._gone)
                        for i in range(max(1, workers))]
        self._attached: set[int] = set()
        self._lock = threading.Lock()

    # --- control (any thread) ---------------------------------------------------------
    def attach(self, link: Link) -> None:
        with self._lock:
            if link.index in self._attached:
                return
            rings: list[Ring] = []
            try:
                group = None
                for _ in self.workers:
                    rings.append(open_ring(link, payload_bytes=self.payload_bytes, geometry=self.geometry,
                                           dns_names=self.dns_names))
                    if len(self.workers) > 1:
                        group = join_fanout(rings[-1].sock, group)
            except OSError as e:  # gone again already, or not permitted: log and carry on
                for ring in rings:
                    ring.close()
                self.log.warning("cannot capture on %s: %s", link.name, e.strerror or e)
                return
            self._attached.add(link.index)
        for worker, ring in zip(self.workers, rings):
            worker.attach(ring)
        self.log.info("capturing on %s", link.name)

    def detach(self, index: int) -> None:
        with self._lock:
            known = index in self._attached
            self._attached.discard(index)
        for worker in self.workers:
            worker.detach(index)
        if known:
            self.log.info("stopped capturing on interface %d", index)

    def _gone(self, index: int) -> None:
        """A worker saw the interface go; the others stop reading it too."""
        self.detach(index)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: float = 2.0) -> None:
        for worker in self.workers:
            worker._stop.set()
        for worker in self.workers:
            worker.stop(timeout)

    # --- state (any thread) -----------------------------------------------------------
    @property
    def interfaces(self) -> dict[int, InterfaceStats]:
        return self.workers[0].interfaces

    @property
    def attached(self) -> int:
        """Interfaces with open rings: capturing from `attach`'s return, before a worker reads them."""
        with self._lock:
            return len(self._attached)

    @property
    def heartbeat(self) -> float:
        return min(w.heartbeat for w in self.workers)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.workers)

    @property
    def queue_dropped(self) -> int:
        return sum(w.queue_dropped for w in self.workers)

    @property
    def duplicates(self) -> int:
        return sum(w.filter.duplicates for w in self.workers)

    @property
    def limited(self) -> dict[str, int]:
        totals = {"udp": 0, "tcp": 0}
        for w in self.workers:
            for proto, n in w.filter.limited.items():
                totals[proto] += n
        return totals

    @property
    def ring_fill(self) -> float:
        return max(w.fill for w in self.workers)

    def alive(self) -> bool:
        return all(w.thread is not None and w.thread.is_alive() for w in self.workers)

    def kernel_stats(self) -> dict[str, tuple[int, int]]:
        """interface -> (packets passed by the filter, kernel drops), `_detached` included."""
        stats: dict[str, tuple[int, int]] = {}
        for worker in self.workers:
            for s in [*list(worker.interfaces.values()), worker.detached]:
                packets, drops = stats.get(s.name, (0, 0))
                stats[s.name] = (packets + s.packets, drops + s.drops)
        return stats
