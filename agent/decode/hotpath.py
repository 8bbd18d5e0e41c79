"""The compiled per-packet path (`agent/_hotpath.c`), when it is built and not switched off.

capture -> decode -> flows, compiled: the pcap reader hands whole record blocks
to it and the flow table lets it fold frames into flows; both keep their Python
loop as the reference (tests compare the two) and as what runs without a C
compiler. `FLOWWARDEN_PURE_PYTHON=1` forces the Python path.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Iterator

from agent.decode.errors import DecodeError, Skip


def _load() -> ModuleType | None:
    if os.environ.get("FLOWWARDEN_PURE_PYTHON"):
        return None
    try:
        from agent import _hotpath
    except ImportError:  # built without a C compiler: the Python path gives the same results
        return None
    _hotpath.setup(DecodeError, Skip)
    return _hotpath


HOTPATH = _load()


class PcapRecords:
    """`count` complete classic pcap records, `buf[start:end]` (compiled hot path only)."""
    __slots__ = ("buf", "start", "end", "count", "linktype", "big_endian", "nanos")

    def __init__(self, buf: bytes, start: int, end: int, *, count: int, linktype: int, big_endian: bool,
                 nanos: bool):
        self.buf, self.start, self.end, self.count = buf, start, end, count
        self.linktype, self.big_endian, self.nanos = linktype, big_endian, nanos

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        return iter(HOTPATH.records(self.buf, self.start, self.end, self.linktype, self.big_endian, self.nanos))

    @property
    def nbytes(self) -> int:
        return self.end - self.start
