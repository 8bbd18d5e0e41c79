"""AF_PACKET capture on the node's pod interfaces -> batches of frames (the entry of `run`).

**capture** -> decode. One thread serves every attached interface through epoll:
a pod's veth costs one socket, not one thread. Each socket carries a kernel BPF
program (agent/capture/bpf.py) that keeps only what the judges use, truncated to the
bytes they read; see docs/capture.md for the design and the measured reduction.
In user space, before the queue, a packet seen on several interfaces (pod veth,
bridge, peer veth) is kept once (`Dedup`), and UDP packets and TCP data segments
beyond a per-flow budget are dropped (`FlowBudget`). The pipeline gets the same
`(timestamp, linktype, bytes)` frames as `replay`, in lists, through a bounded
queue: when it is full the batch is dropped and counted, capture never blocks.
Kernel drops come from PACKET_STATISTICS per interface. An unexpected exception
while reading is counted (`errors`) and logged once per exception type; capture goes on.
"""
from __future__ import annotations

import errno
import logging
import queue
import select
import socket
import struct
import threading
import time
from typing import Callable

from scapy.arch.linux import PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, PACKET_STATISTICS, SOL_PACKET
from scapy.data import ETH_P_ALL

from agent.capture.bpf import TCP_SYN_FIN_RST, attach_bpf, bpf_program
from agent.capture.interfaces import LINKTYPE_ETHERNET, Link
from agent.config import ConfigError

SO_RCVBUFFORCE = 33  # asm-generic/socket.h: like SO_RCVBUF, past rmem_max (CAP_NET_ADMIN)
RCVBUF = 4 << 20
MAX_FRAME = 0x10000  # largest frame on a GSO/GRO veth
DRAIN = 256  # packets read from one socket before looking at the others
BATCH = 1024  # frames per queue item at most
DEDUP_PERIOD = 0.5  # seconds a packet's fingerprint is remembered (x2 generations)
DEDUP_MAX = 1 << 18  # fingerprints per generation before an early rotation
BUDGET_PERIOD = 10.0  # seconds after which every flow gets its budget back
BUDGET_MAX = 1 << 18  # flows tracked before an early reset
_STATS = struct.Struct("II")  # struct tpacket_stats {tp_packets, tp_drops}
_MREQ = struct.Struct("iHH8s")  # struct packet_mreq
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD  # EtherTypes (IEEE 802, RFC 7042)
VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad (QinQ), pre-standard QinQ
FRAGMENT = -1  # locate_ip's protocol for an IPv4 fragment: ports are in the first one only


def require_capture_permission() -> None:
    """Raise ConfigError (one line, exit 2) when this process may not open AF_PACKET sockets."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError as e:
        raise ConfigError("capture: opening an AF_PACKET socket: Operation not permitted; "
                          "flowwarden run needs root or CAP_NET_RAW") from e


def open_socket(link: Link, *, payload_bytes: int = 4096, rcvbuf: int = RCVBUF) -> socket.socket:
    """A non-blocking AF_PACKET socket on `link` with the filter attached before binding,
    so no unfiltered packet is ever queued on it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
    try:
        attach_bpf(sock, bpf_program(link.linktype, payload_bytes=payload_bytes))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((link.name, ETH_P_ALL))
        # A bridge passes forwarded frames up to its own device only when promiscuous;
        # the membership ends with the socket.
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(link.index, PACKET_MR_PROMISC, 0, b""))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def read_kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: PACKET_STATISTICS resets on read."""
    return _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))


def locate_ip(frame: bytes, off: int) -> tuple[int, int, bytes, bytes] | None:
    """(protocol, L4 offset, addresses, fixed) of the IP packet in `frame`, or None when
    it is not IP or too short (the decoder then counts it; nothing here may raise).

    `off` is the link header's length: 14 for Ethernet, whose 802.1Q/QinQ tags the
    kernel filter passes whole and are skipped here, 0 for raw IP. `fixed` is what
    forwarding leaves alone in the IP header: IPv4 length, id and fragment field,
    or IPv6 payload length and next header. An IPv4 fragment has protocol FRAGMENT.
    """
    if off:
        if len(frame) < off:
            return None
        etype = frame[off - 2] << 8 | frame[off - 1]
        while etype in VLAN_TYPES:
            if len(frame) < off + 4:
                return None
            etype = frame[off + 2] << 8 | frame[off + 3]
            off += 4
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            return None
    if len(frame) < off + 20:
        return None
    version, ihl = frame[off] >> 4, (frame[off] & 15) * 4
    if version == 4 and ihl >= 20:
        proto = FRAGMENT if frame[off + 6] & 0x3F or frame[off + 7] else frame[off + 9]
        return proto, off + ihl, frame[off + 12:off + 20], frame[off + 2:off + 8]
    if version == 6 and len(frame) >= off + 40:
        return frame[off + 6], off + 40, frame[off + 8:off + 40], frame[off + 4:off + 7]
    return None


class Dedup:
    """Remembers packet fingerprints for 1-2 `period`s: the second copy of a packet
    (seen on the pod's veth, then on the bridge) is recognised and skipped.

    The fingerprint covers what forwarding does not change: IPv4 length, id and
    fragment field (IPv6 payload length and next header), addresses, and the first
    18 bytes of the L4 header (ports, TCP seq/ack/flags/window/checksum or UDP
    length/checksum); TTL, hop limit and the IPv4 header checksum are left out
    because routing rewrites them. `ip` is `locate_ip`'s answer for the frame.
    """

    __slots__ = ("period", "current", "previous", "rotate_at", "duplicates")

    def __init__(self, period: float = DEDUP_PERIOD):
        self.period, self.current, self.previous = period, set(), set()
        self.rotate_at, self.duplicates = 0.0, 0

    def seen(self, frame: bytes, ip: tuple[int, int, bytes, bytes] | None, now: float) -> bool:
        if now >= self.rotate_at or len(self.current) >= DEDUP_MAX:
            # After a quiet spell longer than a period, the last generation is stale too.
            self.previous = self.current if now < self.rotate_at + self.period else set()
            self.current = set()
            self.rotate_at = now + self.period
        if ip is None:
            return False
        _proto, l4, addrs, fixed = ip
        fp = hash(fixed + addrs + frame[l4:l4 + 18])
        if fp in self.current or fp in self.previous:
            self.duplicates += 1
            return True
        self.current.add(fp)
        return False


class FlowBudget:
    """At most `udp` UDP packets and `tcp` TCP data segments per flow direction per
    `period`; SYN/FIN/RST always pass. Past the budget packets are dropped and counted:
    the judges have what they need, and the flow still shows life once a period.
    Fragments, other protocols and frames `locate_ip` cannot read (`ip` None) pass."""

    __slots__ = ("udp", "tcp", "period", "counts", "reset_at", "limited")

    def __init__(self, *, udp: int, tcp: int, period: float = BUDGET_PERIOD):
        self.udp, self.tcp, self.period = udp, tcp, period
        self.counts: dict[int, int] = {}
        self.reset_at, self.limited = 0.0, {"udp": 0, "tcp": 0}

    def allow(self, frame: bytes, ip: tuple[int, int, bytes, bytes] | None, now: float) -> bool:
        if now >= self.reset_at or len(self.counts) >= BUDGET_MAX:
            self.counts = {}
            self.reset_at = now + self.period
        if ip is None:
            return True
        proto, l4, addrs, _fixed = ip
        if proto == 6:
            if len(frame) < l4 + 14 or frame[l4 + 13] & TCP_SYN_FIN_RST:
                return True
            limit, kind = self.tcp, "tcp"
        elif proto == 17:
            limit, kind = self.udp, "udp"
        else:
            return True
        key = hash(addrs + frame[l4:l4 + 4])
        n = self.counts.get(key, 0)
        if n >= limit:
            self.limited[kind] += 1
            return False
        self.counts[key] = n + 1
        return True


class InterfaceStats:
    __slots__ = ("name", "packets", "drops")

    def __init__(self, name: str):
        self.name, self.packets, self.drops = name, 0, 0


class LiveCapture:
    """Captures on attached links and puts frame batches on `out` (never blocking).

    `attach`/`detach` may be called from any thread (the netlink monitor): they are
    queued and applied by the capture thread, the only one touching the sockets.
    """

    def __init__(self, out: queue.Queue, *, udp_packets_per_flow: int = 4, tcp_segments_per_flow: int = 8,
                 payload_bytes: int = 4096, clock: Callable[[], float] = time.time,
                 log: logging.Logger | None = None):
        self.out, self.clock = out, clock
        self.payload_bytes = payload_bytes
        self.log = log or logging.getLogger("flowwarden.capture")
        self.dedup = Dedup()
        self.budget = FlowBudget(udp=udp_packets_per_flow, tcp=tcp_segments_per_flow)
        self.interfaces: dict[int, InterfaceStats] = {}  # attached, by ifindex
        self.detached = InterfaceStats("_detached")  # totals of interfaces that went away
        self.queue_dropped = 0
        self.errors = 0  # unexpected exceptions while reading or filtering, each logged once per type
        self._logged: set[type] = set()
        self.heartbeat = time.monotonic()
        self._socks: dict[int, tuple[socket.socket, Link]] = {}  # fd -> (socket, link)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control (any thread) ---------------------------------------------------------
    def attach(self, link: Link) -> None:
        self._commands.put(("attach", link))

    def detach(self, index: int) -> None:
        self._commands.put(("detach", index))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flowwarden-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def kernel_stats(self) -> dict[str, tuple[int, int]]:
        """interface -> (packets passed by the filter, kernel drops), `_detached` included."""
        stats = {s.name: (s.packets, s.drops) for s in list(self.interfaces.values())}
        stats[self.detached.name] = (self.detached.packets, self.detached.drops)
        return stats

    # --- the capture thread ----------------------------------------------------------
    def _run(self) -> None:
        poller = select.epoll()
        next_stats = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self._apply_commands(poller)
                    events = poller.poll(0.1)
                    batch = self._read(events, poller) if events else []
                    if batch:
                        self._put(batch)
                    mono = time.monotonic()
                    self.heartbeat = mono
                    if mono >= next_stats:
                        self._poll_kernel_stats()
                        next_stats = mono + 1.0
                except Exception as e:  # a bug of ours must not end capture silently
                    self._error(e, "capture loop")
                    self._stop.wait(0.1)  # no spinning if it happens on every turn
        finally:
            for fd in list(self._socks):
                self._close(fd, poller)
            poller.close()

    def _read(self, events, poller) -> list:
        batch: list = []
        append = batch.append
        dedup_seen, budget_allow = self.dedup.seen, self.budget.allow
        for fd, _mask in events:
            entry = self._socks.get(fd)
            if entry is None:
                continue
            sock, link = entry
            linktype, off = link.linktype, 14 if link.linktype == LINKTYPE_ETHERNET else 0
            try:
                recv, now = sock.recv, self.clock()
                for _ in range(DRAIN):
                    frame = recv(MAX_FRAME)
                    if len(frame) <= off:
                        continue
                    ip = locate_ip(frame, off)
                    if not dedup_seen(frame, ip, now) and budget_allow(frame, ip, now):
                        append((now, linktype, frame))
            except BlockingIOError:
                pass
            except OSError as e:  # ENETDOWN/ENXIO: the interface is going away
                if e.errno not in (errno.EINTR, errno.EAGAIN):
                    self.log.info("interface %s: %s; detaching", link.name, e.strerror)
                    self._detach(link.index, poller)
            except Exception as e:  # the frames read so far are kept; the socket is read again next turn
                self._error(e, link.name)
            if len(batch) >= BATCH:
                self._put(batch)
                batch = []
                append = batch.append
        return batch

    def _put(self, batch: list) -> None:
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
                self._attach(arg, poller)
            else:
                self._detach(arg, poller)

    def _attach(self, link: Link, poller) -> None:
        if link.index in self.interfaces:
            return
        try:
            sock = open_socket(link, payload_bytes=self.payload_bytes)
        except OSError as e:  # gone again already, or not permitted: log and carry on
            self.log.warning("cannot capture on %s: %s", link.name, e.strerror or e)
            return
        self._socks[sock.fileno()] = (sock, link)
        self.interfaces[link.index] = InterfaceStats(link.name)
        poller.register(sock.fileno(), select.EPOLLIN)
        self.log.info("capturing on %s", link.name)

    def _detach(self, index: int, poller) -> None:
        for fd, (_sock, link) in list(self._socks.items()):
            if link.index == index:
                self._close(fd, poller)
                self.log.info("stopped capturing on %s", link.name)

    def _close(self, fd: int, poller) -> None:
        sock, link = self._socks.pop(fd)
        self._collect(sock, link)
        stats = self.interfaces.pop(link.index, None)
        if stats is not None:
            self.detached.packets += stats.packets
            self.detached.drops += stats.drops
        try:
            poller.unregister(fd)
        except OSError:
            pass
        sock.close()

    def _poll_kernel_stats(self) -> None:
        for sock, link in list(self._socks.values()):
            self._collect(sock, link)

    def _collect(self, sock: socket.socket, link: Link) -> None:
        try:
            packets, drops = read_kernel_stats(sock)
        except OSError:
            return
        stats = self.interfaces.get(link.index)
        if stats is not None:
            stats.packets += packets
            stats.drops += drops
