"""The kernel's connection tracker as a second source (capture stage).

Conntrack reports every connection the node's network namespace tracks: a NEW
event when its first packet is confirmed, a DESTROY event when the entry dies
(after TIME_WAIT for a closed TCP connection), with the original tuple, the
reply tuple (which shows DNAT of a ClusterIP to a backend pod) and, with
`net.netfilter.nf_conntrack_acct=1`, complete packet and byte counters.

`ConntrackReader` subscribes to the NFNLGRP_CONNTRACK_NEW and _DESTROY netlink
groups on its own thread, decodes each message with pyroute2's `nfct_msg` and
puts lists of `ConntrackEvent` on a bounded queue, never blocking: a full queue
drops and counts, a socket overrun (ENOBUFS: the kernel dropped events) is
counted too. pyroute2 0.9's synchronous `NFCTSocket` has no multicast
subscription, so the socket is a plain AF_NETLINK one and pyroute2 only parses.
Merging with packet flows is agent/flows/merge.py; docs/capture.md explains both.
"""
from __future__ import annotations

import errno
import logging
import queue
import socket
import struct
import threading
import time

from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from agent.model import CT_DESTROY, CT_NEW, ConntrackEvent

log = logging.getLogger("flowwarden.capture")

NETLINK_NETFILTER = 12  # linux/netlink.h
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY = 1, 3  # linux/netfilter/nfnetlink.h
GROUPS = 1 << (NFNLGRP_CONNTRACK_NEW - 1) | 1 << (NFNLGRP_CONNTRACK_DESTROY - 1)  # bind() takes a mask
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_DELETE = 0, 2  # linux/netfilter/nfnetlink_conntrack.h
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400  # a CT_NEW with these is a new entry, without them an update
IPS_SEEN_REPLY = 1 << 1  # linux/netfilter/nf_conntrack_common.h
TRACKED = frozenset((6, 17, 132))  # TCP, UDP, SCTP: what the judges read
SO_RCVBUFFORCE = 33
_NLMSGHDR = struct.Struct("=IHH")  # length, type, flags (linux/netlink.h)
BATCH = 256  # events per queue item
RCVBUF = 4 << 20


def _tuple(nla) -> tuple[str, str, int, int] | None:
    ip, proto = nla.get_attr("CTA_TUPLE_IP"), nla.get_attr("CTA_TUPLE_PROTO")
    if ip is None or proto is None:
        return None
    src = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
    dst = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    sport, dport = proto.get_attr("CTA_PROTO_SRC_PORT"), proto.get_attr("CTA_PROTO_DST_PORT")
    if src is None or dst is None or sport is None or dport is None:
        return None
    return src, dst, sport, dport


def _counters(msg) -> tuple[int, int, int, int] | None:
    """(packets, bytes) original direction, (packets, bytes) reply; None when nf_conntrack_acct=0."""
    orig, reply = msg.get_attr("CTA_COUNTERS_ORIG"), msg.get_attr("CTA_COUNTERS_REPLY")
    if orig is None or reply is None:
        return None

    def get(nla, name: str) -> int:
        return nla.get_attr(f"CTA_COUNTERS_{name}") or nla.get_attr(f"CTA_COUNTERS32_{name}") or 0

    return get(orig, "PACKETS"), get(orig, "BYTES"), get(reply, "PACKETS"), get(reply, "BYTES")


def parse_events(data: bytes, *, at: float) -> list[ConntrackEvent]:
    """The NEW and DESTROY events of one netlink datagram; anything else (UPDATE, ICMP, loopback) is left out."""
    events, off = [], 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, flags = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        chunk, off = data[off:off + length], off + (length + 3 & ~3)
        if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
            continue
        if mtype & 0xFF == IPCTNL_MSG_CT_DELETE:
            kind = CT_DESTROY
        elif mtype & 0xFF == IPCTNL_MSG_CT_NEW and flags & (NLM_F_CREATE | NLM_F_EXCL):
            kind = CT_NEW
        else:
            continue
        try:
            msg = nfct_msg(chunk)
            msg.decode()
            orig_nla = msg.get_attr("CTA_TUPLE_ORIG")
            proto = orig_nla.get_attr("CTA_TUPLE_PROTO").get_attr("CTA_PROTO_NUM")
            orig, reply = _tuple(orig_nla), _tuple(msg.get_attr("CTA_TUPLE_REPLY"))
        except Exception:  # a malformed message is skipped, like a bad packet
            continue
        if proto not in TRACKED or orig is None or reply is None or _loopback(orig[0]):
            continue
        events.append(ConntrackEvent(kind, at, proto, orig, reply,
                                     seen_reply=bool((msg.get_attr("CTA_STATUS") or 0) & IPS_SEEN_REPLY),
                                     counters=_counters(msg), id=msg.get_attr("CTA_ID") or 0))
    return events


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def open_socket(*, rcvbuf: int = RCVBUF) -> socket.socket:
    """A netlink socket subscribed to conntrack NEW and DESTROY events in this network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # without CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, GROUPS))
    except OSError:
        sock.close()
        raise
    return sock


class ConntrackReader:
    """Conntrack events -> `out` (bounded queue of lists of ConntrackEvent), on its own thread.

    The socket is opened in the constructor, in the calling thread's network
    namespace; OSError there means conntrack events are not available.
    """

    def __init__(self, out: queue.Queue, *, rcvbuf: int = RCVBUF):
        self.out = out
        self.sock = open_socket(rcvbuf=rcvbuf)
        self.sock.settimeout(0.2)  # how soon stop() is noticed
        self.events = 0  # events put on the queue
        self.dropped = 0  # events lost because the queue was full
        self.overruns = 0  # ENOBUFS: the kernel dropped events (how many is not told)
        self.heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flowwarden-conntrack", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            batch = self._read()
            if not batch:
                continue
            try:
                self.out.put_nowait(batch)
                self.events += len(batch)
            except queue.Full:
                self.dropped += len(batch)

    def _read(self) -> list[ConntrackEvent]:
        """Block up to the timeout for one datagram, then take what else is waiting, up to BATCH."""
        batch: list[ConntrackEvent] = []
        flags = 0
        while len(batch) < BATCH:
            try:
                data = self.sock.recv(65536, flags)
            except (socket.timeout, BlockingIOError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                if self._stop.is_set():
                    break
                log.exception("conntrack socket failed; no more conntrack events")
                self._stop.set()
                break
            batch.extend(parse_events(data, at=time.time()))
            flags = socket.MSG_DONTWAIT
        return batch


def probe_conntrack(log: logging.Logger | None = None) -> bool:
    """True when the conntrack table can be read here (needs CAP_NET_ADMIN and nf_conntrack)."""
    log = log or logging.getLogger("flowwarden.capture")
    try:
        from pyroute2 import NFCTSocket
        sock = NFCTSocket()
        try:
            next(iter(sock.dump()), None)
        finally:
            sock.close()
    except Exception as e:  # missing module, no permission, no netlink in this sandbox
        log.info("conntrack unavailable (%s); packet capture alone accounts for connections", e)
        return False
    log.info("conntrack available: events merged with packet flows (docs/capture.md)")
    return True
