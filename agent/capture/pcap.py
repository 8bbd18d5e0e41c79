"""Recorded captures -> batches of frames (the entry of `replay`).

**capture** -> decode. Reads classic pcap (µs and ns, either byte order) and
pcapng (several interfaces, if_tsresol/if_tsoffset), gzip-compressed or not,
in fixed-size chunks so memory does not grow with the file. A frame is the
tuple `(timestamp, linktype, bytes)`; frames come in lists to keep the
per-frame cost down. Several files are merged in timestamp order.

With the compiled hot path, a classic pcap comes as `PcapRecords` instead: the
records of one chunk left in the chunk, folded into flows without a tuple or a
copy per frame. Iterating one gives its frames.
"""
from __future__ import annotations

import contextlib
import gzip
import heapq
import struct
import sys
import zlib
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from agent.decode.hotpath import HOTPATH, PcapRecords
from agent.decode.packet import SUPPORTED_LINKTYPES

CHUNK = 1 << 22
BATCH = 4096
MAX_RECORD = 1 << 18  # tcpdump's largest snaplen; a bigger record means a corrupt file

PCAP_MAGIC = {  # magic as read little-endian -> (byte order, fraction scale)
    0xA1B2C3D4: ("<", 1e-6), 0xD4C3B2A1: (">", 1e-6),
    0xA1B23C4D: ("<", 1e-9), 0x4D3CB2A1: (">", 1e-9),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
IDB, PB, SPB, EPB = 1, 2, 3, 6
IF_TSRESOL, IF_TSOFFSET = 9, 14

Frame = tuple[float, int, bytes]


class PcapError(ValueError):
    """A capture file that cannot be read; the message names the file and the problem."""


@dataclass(slots=True)
class Damage:
    """A file that could not be read to its end: what was judged from it and what was lost."""
    path: Path
    problem: str  # the PcapError message, which names the file
    records: int = 0  # records read (and so judged) before the damage
    offset: int = 0  # bytes of the (uncompressed) capture read before the damage
    size: int | None = None  # the file's size; None when it is compressed or a stream
    compressed: bool = False  # gzip: offsets count the uncompressed capture

    def describe(self) -> str:
        if self.records == 0:
            lost = "nothing in it was judged" + (f" ({self.size:,} bytes lost)" if self.size else "")
        elif self.size is not None:
            lost = f"{_records(self.records)} judged, the last {max(self.size - self.offset, 0):,} bytes lost"
        else:
            where = " (uncompressed)" if self.compressed else ""
            lost = f"{_records(self.records)} judged, everything after byte {self.offset:,}{where} lost"
        return f"{self.problem}; {lost}"


def capture_files(paths: Iterable[str]) -> list[str]:
    """The files to replay: a folder stands for every file in it (a tcpdump -C/-G rotation), sorted."""
    out: list[str] = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            out += sorted(str(f) for f in Path(path).iterdir() if f.is_file() and not f.name.startswith("."))
        else:
            out.append(path)
    return out


def file_size(path: str) -> int:
    """Bytes on disk, for the progress bar; 0 for standard input or what cannot be read."""
    try:
        return Path(path).stat().st_size if path != "-" else 0
    except OSError:
        return 0


def _records(n: int) -> str:
    return f"{n:,} record" + ("" if n == 1 else "s")


def read_frames(paths: Iterable[str | Path], *, damaged: list[Damage] | None = None) -> Iterator[list[Frame]]:
    """Batches of frames from all files, merged in timestamp order.

    Without `damaged`, the first unreadable or damaged file raises PcapError
    (after its complete records). With it, each such file is recorded there
    and the others are read to their end: one cut file of a rotation must not
    cost the rest.
    """
    sources = [_frames_of(Path(p)) if damaged is None else _tolerant(Path(p), damaged) for p in paths]
    if len(sources) == 1:
        yield from sources[0]
        return
    merged = heapq.merge(*((f for batch in s for f in batch) for s in sources), key=lambda f: f[0])
    while batch := list(islice(merged, BATCH)):
        yield batch


def _tolerant(path: Path, damaged: list[Damage]) -> Iterator[list[Frame]]:
    state = _Reading()
    records = 0
    try:
        for batch in _frames_of(path, state):
            records += len(batch)
            yield batch
    except PcapError as e:
        size = None
        with contextlib.suppress(OSError):
            if path.is_file() and not state.compressed:
                size = path.stat().st_size
        damaged.append(Damage(path, str(e), records=records, offset=state.offset, size=size,
                              compressed=state.compressed))


class _Reading:
    """How far one file has been read, for the report of what was lost."""
    __slots__ = ("offset", "compressed")

    def __init__(self) -> None:
        self.offset, self.compressed = 0, False


def _open(path: Path) -> BinaryIO:
    if str(path) == "-":  # `tcpdump -w - | flowwarden replay -`
        return open(sys.stdin.fileno(), "rb", closefd=False)
    try:
        return path.open("rb")
    except OSError as e:
        raise PcapError(f"{path}: cannot open: {e.strerror}") from e


def _frames_of(path: Path, state: _Reading | None = None) -> Iterator[list[Frame]]:
    state = state or _Reading()
    raw = _open(path)
    with raw:
        head = raw.peek(2)[:2]  # peek, not seek: a FIFO or a pipe cannot seek
        state.compressed = head == b"\x1f\x8b"
        stream: BinaryIO = gzip.GzipFile(fileobj=raw) if state.compressed else raw
        try:
            magic_bytes = stream.read(4)
            if len(magic_bytes) < 4:
                raise PcapError(f"{path}: not a capture file (empty or shorter than a header)")
            magic = struct.unpack("<I", magic_bytes)[0]
            if magic in PCAP_MAGIC:
                yield from _pcap(stream, path, magic_bytes, state)
            elif magic == PCAPNG_SHB:
                yield from _pcapng(stream, path, magic_bytes, state)
            else:
                raise PcapError(f"{path}: not a pcap or pcapng file (magic 0x{magic:08x})")
        except (OSError, EOFError, zlib.error) as e:
            raise PcapError(f"{path}: cannot read: {e}") from e
        except struct.error as e:  # a block body shorter than its fields
            raise PcapError(f"{path}: corrupt block ({e})") from e


def _chunks(stream: BinaryIO, first: bytes) -> Iterator[tuple[bytes, bool]]:
    """(bytes, at_eof) pieces of the stream, starting with the bytes already read."""
    pending = first
    while True:
        chunk = stream.read1(CHUNK)  # what is there: a pipe from tcpdump -w - is read as it comes
        if not chunk:
            yield pending, True
            return
        yield pending + chunk if pending else chunk, False
        pending = b""


def _pcap(stream: BinaryIO, path: Path, magic_bytes: bytes, state: _Reading) -> Iterator[list[Frame]]:
    header = magic_bytes + stream.read(20)
    if len(header) < 24:
        raise PcapError(f"{path}: truncated pcap header")
    order, scale = PCAP_MAGIC[struct.unpack("<I", magic_bytes)[0]]
    linktype = _supported(struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF, path)
    record = struct.Struct(order + "IIII").unpack_from
    big_endian, nanos = order == ">", scale == 1e-9
    rest, base = b"", 24  # base: file offset of buf[0], for error messages
    state.offset = base
    for chunk, eof in _chunks(stream, b""):
        buf = rest + chunk if rest else chunk
        n = len(buf)
        if HOTPATH is not None:
            pos, count = HOTPATH.scan_pcap(buf, 0, big_endian)
            if count:
                yield PcapRecords(buf, 0, pos, count=count, linktype=linktype, big_endian=big_endian, nanos=nanos)
        else:
            pos, batch = 0, []
            append = batch.append
            while pos + 16 <= n:
                sec, frac, incl, _orig = record(buf, pos)
                end = pos + 16 + incl
                if end > n:
                    break
                append((sec + frac * scale, linktype, buf[pos + 16:end]))
                pos = end
            if batch:
                yield batch
        state.offset = base + pos
        if pos + 16 <= n and (incl := record(buf, pos)[2]) > MAX_RECORD:
            raise PcapError(f"{path}: corrupt record at byte {base + pos} (length {incl})")
        rest, base = buf[pos:], base + pos
        if eof:
            if rest:
                raise PcapError(f"{path}: truncated: the last record is cut short ({len(rest)} bytes left)")
            return


def _pcapng(stream: BinaryIO, path: Path, magic_bytes: bytes, state: _Reading) -> Iterator[list[Frame]]:
    order = "<"
    interfaces: list[tuple[int, float, float]] = []  # (linktype, ts unit, offset)
    last_ts = 0.0
    rest, base = magic_bytes, 0  # base: file offset of buf[0], for error messages
    for chunk, eof in _chunks(stream, b""):
        buf = rest + chunk if rest else chunk
        pos, n, batch = 0, len(buf), []
        failure: Exception | None = None
        try:  # the frames before a damaged block are still judged
            while pos + 12 <= n:
                btype = struct.unpack_from(order + "I", buf, pos)[0]
                if btype == PCAPNG_SHB:  # a section may switch byte order
                    bom = buf[pos + 8:pos + 12]
                    if len(bom) < 4:
                        break
                    order = "<" if struct.unpack("<I", bom)[0] == PCAPNG_BYTE_ORDER else ">"
                    if struct.unpack(order + "I", bom)[0] != PCAPNG_BYTE_ORDER:
                        raise PcapError(f"{path}: corrupt pcapng section header at byte {base + pos}")
                    interfaces = []
                blen = struct.unpack_from(order + "I", buf, pos + 4)[0]
                if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
                    raise PcapError(f"{path}: corrupt pcapng block at byte {base + pos} (length {blen})")
                if pos + blen > n:
                    break
                body = buf[pos + 8:pos + blen - 4]
                if btype in (EPB, PB):
                    frame = _packet_block(body, order, interfaces, path, btype)
                    last_ts = frame[0]
                    batch.append(frame)
                elif btype == SPB and interfaces:
                    caplen = min(struct.unpack_from(order + "I", body)[0], len(body) - 4)
                    # A Simple Packet Block has no timestamp: it takes the one before it.
                    batch.append((last_ts, interfaces[0][0], body[4:4 + caplen]))
                elif btype == IDB:
                    interfaces.append(_interface(body, order))
                    _supported(interfaces[-1][0], path)
                pos += blen
        except (PcapError, struct.error) as e:
            failure = e
        if batch:
            yield batch
        state.offset = base + pos
        if isinstance(failure, struct.error):
            raise PcapError(f"{path}: corrupt block at byte {base + pos} ({failure})") from failure
        if failure is not None:
            raise failure
        rest, base = buf[pos:], base + pos
        if eof:
            if rest:
                raise PcapError(f"{path}: truncated: the last block is cut short ({len(rest)} bytes left)")
            return


def _packet_block(body: bytes, order: str, interfaces: list, path: Path, btype: int) -> Frame:
    if btype == EPB:
        iface, hi, lo, caplen = struct.unpack_from(order + "IIII", body)
    else:  # obsolete Packet Block: 16-bit interface id and drops count
        iface, _drops, hi, lo, caplen = struct.unpack_from(order + "HHIII", body)
    if iface >= len(interfaces):
        raise PcapError(f"{path}: packet for undeclared interface {iface}")
    linktype, unit, offset = interfaces[iface]
    return (((hi << 32) | lo) * unit + offset, linktype, body[20:20 + caplen])


def _interface(body: bytes, order: str) -> tuple[int, float, float]:
    linktype = struct.unpack_from(order + "H", body)[0]
    unit, offset, pos = 1e-6, 0.0, 8
    while pos + 4 <= len(body):
        code, olen = struct.unpack_from(order + "HH", body, pos)
        if code == 0:
            break
        value = body[pos + 4:pos + 4 + olen]
        if code == IF_TSRESOL and value:
            r = value[0]
            unit = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
        elif code == IF_TSOFFSET and olen == 8:
            offset = float(struct.unpack(order + "q", value)[0])
        pos += 4 + (olen + 3) // 4 * 4
    return linktype, unit, offset


def _supported(linktype: int, path: Path) -> int:
    if linktype not in SUPPORTED_LINKTYPES:
        names = "Ethernet, Linux cooked v1/v2, raw IP, BSD loopback"
        raise PcapError(f"{path}: unsupported link type {linktype} (flowwarden reads {names})")
    return linktype
