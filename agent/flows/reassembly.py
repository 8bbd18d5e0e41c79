"""In-order start of one TCP direction, for classification (flows stage).

The flow table feeds every payload-carrying segment of a not-yet-classified
flow here; `data` is what `decode.app.classify` sees. Only the first `cap`
bytes matter (a ClientHello fits in 16 KiB), so the buffer stops growing there
and out-of-order segments wait in a small bounded map until the gap fills.
"""
from __future__ import annotations

SEQ_MOD = 1 << 32  # RFC 9293 §3.4: sequence numbers are modulo 2**32
SEQ_HALF = 1 << 31
MAX_PENDING = 64  # out-of-order segments kept while waiting for a gap


class StreamStart:
    """Contiguous bytes of one direction from `isn + 1`, up to `cap`.

    `isn` is the SYN's sequence number (data starts one later). With `isn=None`
    (start not seen) the first segment added defines the start; callers mark
    such flows mid-stream. For a SYN that carries data (TCP Fast Open) add the
    payload at `seq + 1`. Overlapping or retransmitted bytes keep the first copy.
    """

    __slots__ = ("_base", "_cap", "_buf", "_pending", "_pending_bytes")

    def __init__(self, isn: int | None, cap: int = 16384) -> None:
        self._base = None if isn is None else (isn + 1) % SEQ_MOD
        self._cap = cap
        self._buf = bytearray()
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0

    @property
    def data(self) -> bytes:
        return bytes(self._buf)

    @property
    def full(self) -> bool:
        return len(self._buf) >= self._cap

    def add(self, seq: int, payload: bytes) -> None:
        if not payload or self.full:
            return
        if self._base is None:
            self._base = seq % SEQ_MOD
        rel = (seq - self._base) % SEQ_MOD
        if rel >= SEQ_HALF:  # starts before the stream start: keep the tail
            rel -= SEQ_MOD
            payload = payload[-rel:] if -rel < len(payload) else b""
            rel = 0
        end = min(rel + len(payload), self._cap)
        if end <= len(self._buf):
            return  # retransmission of bytes we already have
        payload = payload[: end - rel]
        if rel > len(self._buf):
            self._hold(rel, payload)
            return
        self._buf += payload[len(self._buf) - rel:]
        self._drain()

    def _hold(self, rel: int, payload: bytes) -> None:
        old = self._pending.get(rel, b"")
        if len(payload) <= len(old) or len(self._pending) >= MAX_PENDING:
            return
        if self._pending_bytes - len(old) + len(payload) > self._cap:
            return
        self._pending[rel] = payload
        self._pending_bytes += len(payload) - len(old)

    def _drain(self) -> None:
        while self._pending:
            have = len(self._buf)
            ready = [rel for rel in self._pending if rel <= have]
            if not ready:
                return
            for rel in ready:
                payload = self._pending.pop(rel)
                self._pending_bytes -= len(payload)
                if rel + len(payload) > len(self._buf):
                    self._buf += payload[len(self._buf) - rel:]
            if self.full:
                self._pending.clear()
                self._pending_bytes = 0
                return
