"""A capture worker: one thread reading its TPACKET_V3 rings through epoll (**capture** -> queue).

Every attached interface gives each worker one ring (`agent/capture/ring.py`); with
several workers the rings of an interface form a PACKET_FANOUT group in hash mode,
so a flow's packets, both directions and every interface's copy, reach one worker
and its dedup and budget. A wake-up reads every block the kernel handed over, through
the worker's filter (compiled or Python), and puts batches of at most BATCH frames on
the pipeline's bounded queue; a full queue drops the batch and counts it, capture
never blocks. An unexpected exception is counted and logged once per type; the
blocks not read yet stay in the ring and are read on the next turn.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import queue
import select
import socket
import struct
import threading
import time
from typing import Callable

from agent.capture.ring import Ring

BATCH = 1024  # frames per queue item at most
PACKET_STATISTICS, SOL_PACKET = 6, 263
_STATS = struct.Struct("II")  # struct tpacket_stats_v3 starts with {tp_packets, tp_drops}
GONE = (errno.ENETDOWN, errno.ENXIO, errno.ENODEV)  # the interface is going away
PR_SET_NAME = 15  # linux/prctl.h


def name_thread(name: str) -> None:
    """The OS-level name of the calling thread (top -H, /proc/PID/task/*/comm, bench_live.py's split)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux/glibc: only the name is missing
        pass


def read_kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: PACKET_STATISTICS resets on read."""
    return _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))


class InterfaceStats:
    __slots__ = ("name", "packets", "drops")

    def __init__(self, name: str):
        self.name, self.packets, self.drops = name, 0, 0


class CaptureWorker:
    """Reads the rings given to it (`attach`, from any thread) and feeds `out`."""

    def __init__(self, number: int, out: queue.Queue, filt, limits, *, clock: Callable[[], float],
                 log: logging.Logger, on_gone: Callable[[int], None] = lambda index: None):
        self.number, self.out, self.filter, self.limits = number, out, filt, limits
        self.clock, self.log, self.on_gone = clock, log, on_gone
        self.interfaces: dict[int, InterfaceStats] = {}  # attached, by ifindex
        self.detached = InterfaceStats("_detached")  # totals of interfaces that went away
        self.queue_dropped = 0
        self.errors = 0
        self.fill = 0.0  # the largest share of a ring's blocks found waiting at one read, last second
        self._fill = 0.0
        self._logged: set[type] = set()
        self.heartbeat = time.monotonic()
        self._rings: dict[int, Ring] = {}  # fd -> ring
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def attach(self, ring: Ring) -> None:
        self._commands.put(("attach", ring))

    def detach(self, index: int) -> None:
        self._commands.put(("detach", index))

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"flowwarden-capture-{self.number}", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)

    # --- the worker's thread -----------------------------------------------------------
    def _run(self) -> None:
        name_thread(f"fw-capture-{self.number}")
        poller = select.epoll()
        next_stats = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self._apply_commands(poller)
                    events = poller.poll(0.1)
                    if events:
                        self._read(events, poller)
                    mono = time.monotonic()
                    self.heartbeat = mono
                    if mono >= next_stats:
                        self._poll_kernel_stats()
                        self.fill, self._fill = self._fill, 0.0
                        next_stats = mono + 1.0
                except Exception as e:  # a bug of ours must not end capture silently
                    self._error(e, "capture loop")
                    self._stop.wait(0.1)  # no spinning if it happens on every turn
        finally:
            self._apply_commands(poller)  # rings given but not taken yet are closed too
            for fd in list(self._rings):
                self._close(fd, poller)
            poller.close()

    def _read(self, events, poller) -> None:
        filt, limits = self.filter, self.limits
        if filt.udp != limits.udp or filt.tcp != limits.tcp:  # a reload changed them
            filt.udp, filt.tcp = limits.udp, limits.tcp
        now = self.clock()
        for fd, mask in events:
            ring = self._rings.get(fd)
            if ring is None:
                continue
            link = ring.link
            if mask & select.EPOLLERR and self._failed(ring, poller):
                continue
            if filt.pending and filt.linktype != link.linktype:
                self._put(filt.take())
            try:
                while True:
                    ring.index, _blocks, _frames, ready = filt.read_ring(
                        ring.mem, ring.geometry, ring.index, off=ring.off, linktype=link.linktype, now=now, most=BATCH)
                    self._fill = max(self._fill, ready / ring.geometry.blocks)
                    if filt.pending < BATCH:
                        break
                    self._put(filt.take())
            except Exception as e:  # the frames kept so far go on; the ring is read again next turn
                self._error(e, link.name)
        if filt.pending:
            self._put(filt.take())

    def _failed(self, ring: Ring, poller) -> bool:
        """EPOLLERR: the interface went down or away (detach), or something to count."""
        code = ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code in GONE:
            self.log.info("interface %s: %s; detaching", ring.link.name, errno.errorcode.get(code, code))
            self._detach(ring.link.index, poller)
            self.on_gone(ring.link.index)
            return True
        if code:
            self._error(OSError(code, f"socket error {code}"), ring.link.name)
        return False

    def _put(self, batch) -> None:
        try:
            self.out.put_nowait(batch)
        except queue.Full:
            self.queue_dropped += len(batch)

    def _error(self, error: Exception, where: str) -> None:
        """Count an unexpected exception; log its traceback the first time its type is seen."""
        self.errors += 1
        if type(error) not in self._logged:
            self._logged.add(type(error))
            self.log.error("capture error on %s (counted; further %s not logged)", where,
                           type(error).__name__, exc_info=error)

    def _apply_commands(self, poller) -> None:
        while True:
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "attach":
                self._rings[arg.fileno()] = arg
                self.interfaces[arg.link.index] = InterfaceStats(arg.link.name)
                poller.register(arg.fileno(), select.EPOLLIN)
            else:
                self._detach(arg, poller)

    def _detach(self, index: int, poller) -> None:
        for fd, ring in list(self._rings.items()):
            if ring.link.index == index:
                self._close(fd, poller)

    def _close(self, fd: int, poller) -> None:
        ring = self._rings.pop(fd)
        self._collect(ring)
        stats = self.interfaces.pop(ring.link.index, None)
        if stats is not None:
            self.detached.packets += stats.packets
            self.detached.drops += stats.drops
        try:
            poller.unregister(fd)
        except OSError:
            pass
        ring.close()

    def _poll_kernel_stats(self) -> None:
        for ring in list(self._rings.values()):
            self._collect(ring)

    def _collect(self, ring: Ring) -> None:
        try:
            packets, drops = read_kernel_stats(ring.sock)
        except OSError:
            return
        stats = self.interfaces.get(ring.link.index)
        if stats is not None:
            stats.packets += packets
            stats.drops += drops
