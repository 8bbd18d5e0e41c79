"""TPACKET_V3 rings: captured frames in memory shared with the kernel, read a block at a time (**capture**).

Each captured interface gets a memory-mapped ring of `capture.ring_blocks` blocks of
`capture.ring_block_size` bytes. The kernel fills a block with the frames its filter
passed and hands it over when it is full or `capture.ring_block_timeout` ms after its
first frame: one wake-up per block, no system call per frame. A filter reads the blocks
handed over, keeps what `prefilter.py` keeps and gives the block back:
`CompiledFilter` (agent/_capture.h, frames out as pcap records that the fold reads
like a pcap chunk) or `PythonFilter` (the reference, what runs without a compiler;
frames out as `(timestamp, linktype, bytes)` tuples). Both stamp a read's frames with
the same clock reading, rounded to the nanosecond alike.
"""
from __future__ import annotations

import mmap
import os
import socket
import struct
from dataclasses import dataclass

from agent.capture.interfaces import LINKTYPE_ETHERNET, Link
from agent.capture.prefilter import Dedup, FlowBudget, locate_ip
from agent.decode.hotpath import HOTPATH, PcapRecords

SOL_PACKET = 263
PACKET_RX_RING, PACKET_VERSION, PACKET_FANOUT = 5, 10, 18  # linux/if_packet.h
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0  # the flow's symmetric hash: both directions on one worker
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000  # the kernel picks an unused group id
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
FRAME_SIZE = 2048  # V3 frames have any length; the kernel only checks this nominal size
_REQ3 = struct.Struct("7I")  # struct tpacket_req3
_BLOCK = struct.Struct("=6I")  # struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
_FRAME = struct.Struct("=6IH")  # struct tpacket3_hdr: next, sec, nsec, snaplen, len, status, mac
BLOCK_HDR, FRAME_HDR = 48, 28  # what a block and a frame header take at least (as in _capture.h)


@dataclass(frozen=True)
class RingGeometry:
    """A ring's blocks. A block goes to user space when full or `timeout_ms` after its first
    frame, so a trickle uses a block per timeout: a reader held up longer than about
    blocks x timeout loses frames even when few bytes came (docs/capture.md)."""
    block_size: int = 1 << 18
    blocks: int = 8
    timeout_ms: int = 50

    @property
    def nbytes(self) -> int:
        return self.block_size * self.blocks


class Ring:
    """One interface's socket and its mapped ring; `index` is the next block to read."""
    __slots__ = ("sock", "link", "mem", "geometry", "index", "off")

    def __init__(self, sock: socket.socket, link: Link, mem: mmap.mmap, geometry: RingGeometry):
        self.sock, self.link, self.mem, self.geometry, self.index = sock, link, mem, geometry, 0
        self.off = 14 if link.linktype == LINKTYPE_ETHERNET else 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.mem.close()
        self.sock.close()


def map_ring(sock: socket.socket, geometry: RingGeometry) -> mmap.mmap:
    """Make `sock` (not bound yet) a TPACKET_V3 socket with a ring of `geometry`, mapped."""
    g = geometry
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
        g.block_size, g.blocks, FRAME_SIZE, g.block_size // FRAME_SIZE * g.blocks, g.timeout_ms, 0, 0))
    return mmap.mmap(sock.fileno(), g.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def join_fanout(sock: socket.socket, group: int | None) -> int:
    """Join `sock` (bound) to fanout `group` in hash mode, or a new group when None; its id."""
    if group is None:
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, PACKET_FANOUT_HASH << 16 | PACKET_FANOUT_FLAG_UNIQUEID << 16)
        return struct.unpack("I", sock.getsockopt(SOL_PACKET, PACKET_FANOUT, 4))[0] & 0xFFFF
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | PACKET_FANOUT_HASH << 16)
    return group


def stamp(now: float) -> float:
    """`now` as a pcap record with nanoseconds gives it back (what the compiled filter writes)."""
    sec = int(now)
    return sec + int((now - sec) * 1e9) * 1e-9


class PythonFilter:
    """Ring blocks through prefilter.py's Dedup and FlowBudget: the reference of `CompiledFilter`."""

    def __init__(self, *, udp: int, tcp: int, dedup: Dedup | None = None, budget: FlowBudget | None = None):
        self.dedup = dedup or Dedup()
        self.budget = budget or FlowBudget(udp=udp, tcp=tcp)
        self.frames: list = []
        self.linktype = LINKTYPE_ETHERNET
        self.malformed = self.read = 0

    udp = property(lambda self: self.budget.udp, lambda self, n: setattr(self.budget, "udp", n))
    tcp = property(lambda self: self.budget.tcp, lambda self, n: setattr(self.budget, "tcp", n))
    duplicates = property(lambda self: self.dedup.duplicates)
    limited = property(lambda self: dict(self.budget.limited))
    pending = property(lambda self: len(self.frames))

    def read_ring(self, mem, geometry: RingGeometry, index: int, *, off: int, linktype: int, now: float,
                  most: int) -> tuple[int, int, int, int]:
        """(next index, blocks read, frames read, blocks waiting at the start) = CaptureFilter.read_ring."""
        size, count = geometry.block_size, geometry.blocks
        ready = sum(_BLOCK.unpack_from(mem, i * size)[2] & TP_STATUS_USER for i in range(count))
        blocks = frames = 0
        self.linktype = linktype
        while blocks < count:
            base = index * size
            if not _BLOCK.unpack_from(mem, base)[2] & TP_STATUS_USER:
                break
            frames += self._block(mem, base, size, off, linktype, now)
            struct.pack_into("=I", mem, base + 8, TP_STATUS_KERNEL)  # the block goes back to the kernel
            index, blocks = (index + 1) % count, blocks + 1
            if len(self.frames) >= most:
                break
        self.read += frames
        return index, blocks, frames, ready

    def _block(self, mem, base: int, size: int, off: int, linktype: int, now: float) -> int:
        _v, _p, _status, count, pos, _len = _BLOCK.unpack_from(mem, base)
        seen, allow, append, ts = self.dedup.seen, self.budget.allow, self.frames.append, stamp(now)
        for k in range(count):
            if pos < BLOCK_HDR or pos > size - FRAME_HDR:
                self.malformed += 1
                return k
            nxt, _sec, _nsec, snap, _wire, _st, mac = _FRAME.unpack_from(mem, base + pos)
            if mac > size - pos or snap > size - pos - mac:
                self.malformed += 1
                return k
            if snap > off:
                frame = bytes(mem[base + pos + mac:base + pos + mac + snap])  # an mmap slice is already bytes
                ip = locate_ip(frame, off)
                if not seen(frame, ip, now) and allow(frame, ip, now):
                    append((ts, linktype, frame))
            if nxt == 0 and k + 1 < count:
                self.malformed += 1
                return k + 1
            pos += nxt
        return count

    def take(self) -> list:
        frames, self.frames = self.frames, []
        return frames


class CompiledFilter:
    """The same in C (agent/_capture.h), out as pcap records; the GIL is released while it reads."""

    def __init__(self, *, udp: int, tcp: int, **kwargs):
        self.c = HOTPATH.CaptureFilter(os.urandom(16), udp, tcp, **kwargs)
        self.linktype = LINKTYPE_ETHERNET

    udp = property(lambda self: self.c.udp, lambda self, n: setattr(self.c, "udp", n))
    tcp = property(lambda self: self.c.tcp, lambda self, n: setattr(self.c, "tcp", n))
    duplicates = property(lambda self: self.c.duplicates)
    limited = property(lambda self: {"udp": self.c.limited_udp, "tcp": self.c.limited_tcp})
    malformed = property(lambda self: self.c.malformed)
    read = property(lambda self: self.c.frames)
    pending = property(lambda self: self.c.pending)

    def read_ring(self, mem, geometry: RingGeometry, index: int, *, off: int, linktype: int, now: float,
                  most: int) -> tuple[int, int, int, int]:
        self.linktype = linktype
        return self.c.read_ring(mem, geometry.block_size, geometry.blocks, index, off, now, most)

    def take(self) -> PcapRecords:
        count = self.c.pending
        buf = self.c.take()
        return PcapRecords(buf, 0, len(buf), count=count, linktype=self.linktype, big_endian=False, nanos=True)


def make_filter(*, udp: int, tcp: int, compiled: bool = HOTPATH is not None) -> PythonFilter | CompiledFilter:
    return CompiledFilter(udp=udp, tcp=tcp) if compiled and HOTPATH is not None else PythonFilter(udp=udp, tcp=tcp)
