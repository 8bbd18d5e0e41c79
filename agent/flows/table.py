"""Frames -> flows: the bidirectional flow table (decode -> **flows** -> inventory).

Every frame of a batch is decoded and folded into its flow here, in one loop:
this is the per-packet path, so it touches only tuples, dict entries and slots
attributes. `agent/_hotpath.c` runs the same loop compiled when it is built and
calls back here through `FoldHooks`; with it, flows the pipeline's known outcomes
cover live in its compact table (`compact`, agent/outcomes.py) until they need
Python. Each flow is stored under both directions' keys: one lookup finds it.

A flow tells its owner about each point of its life as soon as it happens:
`on_start(flow)` at its first packet, `on_answer(flow)` at the first packet of
the responder (a reply, or a refusal: RST, SCTP ABORT) or, unanswered, once
`flows.answer_timeout` has passed, `on_classified(flow, classification)` once
its first bytes are decided (or `answer_timeout` after they began, whatever
they are then), `on_active(flow)` every `flows.active_timeout` while it lasts,
and `on_end(flow, classification)` once: idle timeout, a short linger after
FIN/RST, a new SYN on a closed key, table pressure (oldest first), or the end
of the run. An owner must accept a second `on_answer` (a late answer after the
timeout) and an `on_end` whose earlier points never came (a flow ended first).
"""
from __future__ import annotations

import math
import socket
from collections import deque
from itertools import islice
from typing import Callable

from agent.config import FlowConfig
from agent.decode.app import Classification, classify, classify_answer, tls_info
from agent.decode.dns import query_name
from agent.decode.errors import DecodeError, Skip
from agent.decode.hotpath import HOTPATH, PcapRecords
from agent.decode.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, decode_frame, reverse_key, split_key
from agent.flows.reassembly import StreamStart
from agent.flows.track import FoldHooks, Track
from agent.model import APP_UNKNOWN, PROTOCOLS, Flow

_SYN_ONLY = TCP_SYN
_SYN_ACK = TCP_SYN | TCP_ACK
_FIN_RST = TCP_FIN | TCP_RST
SCTP_ABORT = 6  # chunk type (RFC 9260)
STRAY = "tcp-stray"  # skipped: a bare ACK, FIN or RST of no known flow (a late segment, its RST answer)
CLASSIFY_BYTES = 16384  # first bytes of each direction kept until the connection is classified


def _finish(flow: Flow, result: Classification | None) -> None:
    """What the first bytes tell, on the flow. A flow whose start was missed may still show a
    handshake, but never gets a plaintext app: it could not be judged plaintext."""
    if result is not None and (result.tls or not flow.mid_stream):
        flow.app, flow.tls, flow.credentials = result.app, tls_info(result), result.credentials
    else:
        flow.app = APP_UNKNOWN


def _sender_is_server(sport: int, dport: int) -> bool:
    """For a flow whose start was not seen: is this packet's sender the server? The more server-like
    port is: well-known < registered < ephemeral (RFC 6335 ranges), then the lower."""
    rank = lambda port: 0 if port < 1024 else 1 if port < 32768 else 2  # noqa: E731
    return (rank(sport), sport) < (rank(dport), dport)


if HOTPATH is not None:
    # New flows are copies of this one (every field its dataclass default) with the packet's fields set.
    HOTPATH.flow_types(Flow, Track, Flow("", "", 0, "", 0, 0.0, 0.0), PROTOCOLS)


class FlowTable:
    def __init__(self, *, on_end: Callable[[Flow, object], None], settings: FlowConfig | None = None,
                 on_start: Callable[[Flow], None] | None = None, on_answer: Callable[[Flow], None] | None = None,
                 on_classified: Callable[[Flow, Classification], None] | None = None,
                 on_active: Callable[[Flow], None] | None = None, compiled: bool = HOTPATH is not None):
        self.on_end = on_end
        self.on_start, self.on_answer = on_start, on_answer or (lambda flow: None)
        self.on_classified, self.on_active = on_classified or (lambda flow, result: None), on_active
        self.compiled = compiled and HOTPATH is not None  # fold with agent/_hotpath.c (same results)
        self.settings = settings or FlowConfig()  # read at each use: a reload may replace it
        self.flows: dict[bytes, tuple] = {}  # key -> (flow, forward, track, other key)
        self.hooks = FoldHooks(self._started, self._answered, self._payload, self._server_start, self._end,
                               self._ip, self._evict, lambda entry, outcome: self.on_adopt(entry[0], outcome),
                               self._datagram)
        self.dns_queries = False  # keep UDP/53 flows' first query name (Flow.dns_query): a judge reads it
        self.packets = 0
        self.dropped: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.flows_started = 0
        self.evicted = 0
        self.cap_hits: dict[str, int] = {}  # cap name -> times it bit ("flows", "stream_bytes")
        self.last_shed = float("-inf")  # when a cap last bit
        self.stream_bytes = 0  # first bytes buffered over all flows being classified
        self.now = 0.0
        # (when, key, first_seen, answer or classification): a flow ended early is not kept alive by it.
        self._deadlines: deque[tuple[float, bytes, float, bool]] = deque()
        self._next_sweep = 0.0
        self._since_sweep = 0
        self._ip_cache: dict[bytes, str] = {}
        self.compact = None  # agent/_compact.h's table, when the pipeline's outcomes use it (compiled only)
        self.on_adopt: Callable[[Flow, int], None] | None = None  # ... and what its outcomes set on a flow
        self._evicting = False

    def __len__(self) -> int:
        return len(self.flows) // 2 + (len(self.compact) if self.compact is not None else 0)

    # --- the per-packet path -----------------------------------------------------
    def ingest(self, frames: list | PcapRecords) -> None:
        """Fold a batch into the flows: a list of `(timestamp, linktype, frame)`, or pcap records."""
        if not frames:
            return
        if self.compact is not None:
            s = self.settings
            self.compact.settings(s.answer_timeout, s.tcp_timeout, s.udp_timeout, s.closed_linger, s.max_flows,
                                  self.on_start is not None)
        if type(frames) is PcapRecords:  # only the compiled reader makes them
            last_ts = HOTPATH.ingest_pcap(self, frames.buf, frames.start, frames.end, frames.linktype,
                                          frames.big_endian, frames.nanos)
        elif self.compiled:
            last_ts = HOTPATH.ingest(self, frames)
        else:
            last_ts = self._fold(frames)
        self._batch_done(len(frames), last_ts)

    def _batch_done(self, count: int, last_ts: float) -> None:
        self.packets += count
        self._since_sweep += count
        self.now = last_ts
        self._expire(last_ts)
        # Sweep at most once a second of capture time, and only after as many packets
        # as an eighth of the table, so a sweep costs O(1) per packet.
        if self.now >= self._next_sweep and self._since_sweep >= len(self.flows) // 8:
            self.sweep(self.now)

    def tick(self, now: float) -> None:
        """Time passed, packets or not (the live agent's clock): deadlines, then the sweep when due."""
        self.now = max(self.now, now)
        self._expire(now)
        if now >= self._next_sweep:
            self.sweep(now)

    def _fold(self, frames: list) -> float:
        """The per-packet loop in Python; agent/_hotpath.c's `fold` is its compiled twin."""
        flows, dropped, skipped = self.flows, self.dropped, self.skipped
        get, dns = flows.get, self.dns_queries
        for ts, linktype, frame in frames:
            try:
                proto, key, flags, seq, start, end, size = decode_frame(linktype, frame)
            except DecodeError as e:
                dropped[e.reason] = dropped.get(e.reason, 0) + 1
                continue
            except Skip as e:
                skipped[e.reason] = skipped.get(e.reason, 0) + 1
                continue
            entry = get(key)
            if entry is None and proto == 6 and not flags & TCP_SYN and end <= start:  # tells nothing
                skipped[STRAY] = skipped.get(STRAY, 0) + 1
                continue
            if entry is None or (proto == 6 and flags & _SYN_ACK == _SYN_ONLY and entry[0].closed):
                if entry is not None:  # the 5-tuple is reused by a new connection
                    self._end(entry)
                entry = self._start(ts, proto, key, flags, seq)
            flow, forward, track, _ = entry
            flow.last_seen = ts
            if forward:
                flow.packets_src += 1
                flow.bytes_src += size
                if dns and proto == 17 and flow.packets_src == 1 and end > start and flow.dst_port == 53:
                    self._datagram(entry, frame[start:end])
            else:
                flow.packets_dst += 1
                flow.bytes_dst += size
                # An answer establishes the flow; a TCP RST or an SCTP ABORT is a refusal.
                if not flow.established and not (flags & TCP_RST if proto == 6 else
                                                 proto == 132 and flags == SCTP_ABORT):
                    flow.established = True
                if flow.packets_dst == 1:
                    self._answered(entry)
            if proto == 6:
                if flags & _FIN_RST:
                    self._close(flow, track, flags, forward)
                if track.result is None:  # every TCP flow has a Track
                    if end > start:  # data on a SYN (TCP Fast Open) starts one after its sequence number
                        self._payload(entry, forward, (seq + 1) & 0xFFFFFFFF if flags & TCP_SYN else seq,
                                      frame[start:end])
                    elif (flags & _SYN_ACK == _SYN_ACK and not forward and track.server is None
                          and track.server_isn is None):
                        self._server_start(track, seq)
        return frames[-1][0]

    def _start(self, ts: float, proto: int, key: bytes, flags: int, seq: int):
        """A new flow: decide who initiated it and whether its start was seen (compiled: `start_flow`)."""
        src, dst, sport, dport = split_key(key)
        forward, mid_stream, established = True, False, False
        if proto == 6:
            if flags & _SYN_ACK == _SYN_ACK:  # the SYN was missed but the handshake was not
                forward, established = False, True
            elif not flags & TCP_SYN:
                mid_stream = True
                forward = not _sender_is_server(sport, dport)
        rkey = reverse_key(key)
        name = PROTOCOLS.get(proto) or str(proto)
        ips = self._ip_cache
        src_ip, dst_ip = ips.get(src) or self._ip(src), ips.get(dst) or self._ip(dst)
        if forward:
            flow = Flow(name, src_ip, sport, dst_ip, dport, ts, ts)
        else:
            key, rkey = rkey, key
            flow = Flow(name, dst_ip, dport, src_ip, sport, ts, ts)
        flow.mid_stream, flow.established = mid_stream, established
        track = None
        if proto == 6:  # mid-stream flows are tracked too, but only a TLS handshake will count
            track = (Track(None, None) if mid_stream else Track(seq, None) if forward else
                     Track(None, seq))  # a SYN-ACK first: the client's ISN is unseen
        entry_fwd, entry_rev = (flow, True, track, rkey), (flow, False, track, key)
        # Reverse first: when both ends are one address and port, key == rkey and the forward entry must win.
        self.flows[rkey], self.flows[key] = entry_rev, entry_fwd
        entry = entry_fwd if forward else entry_rev
        self._started(entry)
        return entry

    def _started(self, entry: tuple) -> None:
        """A flow was stored (both paths): count it, arm its answer deadline, keep the table under its cap."""
        self.flows_started += 1
        flow = entry[0]
        self._deadlines.append((flow.first_seen + self.settings.answer_timeout, entry[3], flow.first_seen, True))
        if self.on_start is not None:
            self.on_start(flow)
        if len(self) > self.settings.max_flows:
            self._evict(flow.first_seen)

    def _answered(self, entry: tuple) -> None:
        """The responder's first packet: established, or refused (RST/ABORT)."""
        self.on_answer(entry[0])

    @staticmethod
    def _datagram(entry: tuple, payload: bytes) -> None:
        """The initiator's first UDP/53 datagram (`dns_queries`): its name, read before the ANSWER judges."""
        entry[0].dns_query = query_name(payload)

    def _evict(self, now: float) -> None:
        """Table pressure: end the oldest 1 % of flows (of both tables) at once, in batches because
        reaching the dict's oldest entry walks the slots deleted before it (one at a time: O(table))."""
        if self._evicting:  # ending a compact flow may move it here first: not a new pressure
            return
        self._evicting = True
        try:
            batch = max(1, self.settings.max_flows // 100)
            oldest = [e for e in islice(self.flows.values(), 2 * batch) if e[1]]
            if self.compact is not None and len(self.compact):  # the oldest of both in start order (it counts its own)
                older, i, j = self.compact.oldest(batch), 0, 0
                while i + j < batch and (i < len(oldest) or j < len(older)):
                    if j < len(older) and (i == len(oldest) or older[j] < oldest[i][0].first_seen):
                        HOTPATH.compact_evict(self, 1, now)
                        j += 1
                    else:
                        self._end(oldest[i])
                        i += 1
                del oldest[i:]
            else:
                for entry in oldest:
                    self._end(entry)
        finally:
            self._evicting = False
        self.evicted += len(oldest)
        self._shed("flows", now, len(oldest))

    def _shed(self, cap: str, now: float, n: int = 1) -> None:
        self.cap_hits[cap] = self.cap_hits.get(cap, 0) + n
        self.last_shed = now

    def _payload(self, entry: tuple, forward: bool, seq: int, payload: bytes) -> None:
        flow, track = entry[0], entry[2]
        if forward:
            stream = track.client
            if stream is None:  # without a SYN seen (None), the first segment starts the stream
                stream = track.client = StreamStart(track.client_isn, CLASSIFY_BYTES)
        else:
            stream = track.server
            if stream is None:
                stream = track.server = StreamStart(track.server_isn, CLASSIFY_BYTES)
        if not track.due:  # the first bytes: they must be decided within answer_timeout
            track.due = flow.last_seen + self.settings.answer_timeout
            self._deadlines.append((track.due, entry[3], flow.first_seen, False))
        if not stream.full:
            held = min(len(payload), CLASSIFY_BYTES)
            track.held += held
            self.stream_bytes += held
        stream.add(seq, payload)
        waiting = track.hello
        if waiting is not None and forward:  # more client bytes cannot change the answer; the server's will
            if self.stream_bytes > self.settings.max_stream_bytes:
                self._shed("stream_bytes", flow.last_seen)
                self._decided(flow, track, waiting)
            return
        if waiting is not None and waiting.upgraded is None and waiting.tunnel is None:
            result = classify_answer(waiting, track.server.data)  # the ClientHello is not parsed again
        else:
            result = self._final(flow, track)
        if result.complete or stream.full:
            self._decided(flow, track, result)
        elif self.stream_bytes > self.settings.max_stream_bytes:
            self._shed("stream_bytes", flow.last_seen)
            self._decided(flow, track, result)
        else:
            track.hello = result if result.client_hello is not None else None

    def _decided(self, flow: Flow, track: Track, result: Classification) -> None:
        """The first bytes are classified for good: free the buffers, tell the owner."""
        track.result = result
        self._release(track)
        _finish(flow, result)
        self.on_classified(flow, result)

    def _release(self, track: Track) -> None:
        track.client = track.server = track.hello = None
        self.stream_bytes -= track.held
        track.held = 0

    @staticmethod
    def _final(flow: Flow, track: Track) -> Classification:
        """What the first bytes are, with no more to come (the connection ended or waited too long)."""
        client = track.client.data if track.client else b""
        if track.client is not None and not client:  # it spoke but no byte could be placed: not silent
            return classify(b"", b"", dst_port=flow.dst_port)
        return classify(client, track.server.data if track.server else b"", dst_port=flow.dst_port)

    def _expire(self, now: float) -> None:
        """Deadlines passed: unanswered flows are judged so, undecided first bytes are decided as they are."""
        deadlines, flows = self._deadlines, self.flows
        while deadlines and deadlines[0][0] <= now:
            if self.compact is not None:  # the compact flows due first: both tables' deadlines in time order
                HOTPATH.compact_expire(self, math.nextafter(deadlines[0][0], -math.inf))
            _, key, first_seen, answer = deadlines.popleft()
            entry = flows.get(key)
            if entry is None or entry[0].first_seen != first_seen:  # ended since (the key may be reused)
                continue
            flow, track = entry[0], entry[2]
            if answer:
                if flow.packets_dst == 0:
                    self.on_answer(flow)
            elif track.result is None:
                self._decided(flow, track, self._final(flow, track))
        if self.compact is not None:
            HOTPATH.compact_expire(self, now)

    @staticmethod
    def _server_start(track: Track, isn: int) -> None:
        """The SYN-ACK: the server's stream starts after its sequence number."""
        track.server_isn = isn

    @staticmethod
    def _close(flow: Flow, track: Track, flags: int, forward: bool) -> None:
        """RST closes; FIN closes once each direction sent one (a retransmitted FIN is no answer).

        agent/_hotpath.c's `close_flow` is its compiled twin."""
        if flags & TCP_RST:
            flow.closed = True
        else:
            track.fins |= 1 if forward else 2
            flow.closed = track.fins == 3

    # --- ending flows ----------------------------------------------------------
    def _end(self, entry: tuple) -> None:
        flow, _forward, track, other = entry
        self.flows.pop(other, None)
        self.flows.pop(reverse_key(other), None)
        result = None
        if track is not None:
            result = track.result
            if result is None and track.held:  # no byte seen: nothing to classify
                result = self._final(flow, track)
                self._release(track)
            if flow.app is None:
                _finish(flow, result)
        self.on_end(flow, result)

    def end(self, key: bytes) -> bool:
        """End the flow stored under `key` (either direction) now; False when there is none."""
        entry = self.flows.get(key)
        if entry is None:
            return False
        self._end(entry)
        return True

    def sweep(self, now: float) -> int:
        """End idle and closed flows, report long ones (active timeout); amortised to O(1) per packet."""
        s = self.settings
        ended = [e for e in self.flows.values() if e[1] and (
            now - e[0].last_seen >= (s.closed_linger if e[0].closed else
                                     s.tcp_timeout if e[0].protocol == "TCP" else s.udp_timeout))]
        for entry in ended:
            self._end(entry)
        if self.compact is not None:
            HOTPATH.compact_sweep(self, now)
        if self.on_active is not None:
            due = now - s.active_timeout
            for flow in [e[0] for e in self.flows.values() if e[1] and max(e[0].reported, e[0].first_seen) <= due]:
                flow.reported = now
                self.on_active(flow)
        self._next_sweep = now + max(1.0, min(s.closed_linger, s.udp_timeout))
        self._since_sweep = 0
        return len(ended)

    def flush(self) -> None:
        """End every flow (end of a replay, or shutdown): the Python flows older than every compact flow
        first (a flow whose key had no known outcome yet), as the Python reference ends them, in start order."""
        python = [e for e in self.flows.values() if e[1]]
        if self.compact is not None:
            oldest = self.compact.oldest(1)
            cut = oldest[0] if oldest else math.inf
            for entry in [e for e in python if e[0].first_seen < cut]:
                self._end(entry)
            HOTPATH.compact_flush(self)
            python = [e for e in python if e[0].first_seen >= cut]
        for entry in python:
            self._end(entry)

    def _ip(self, raw: bytes) -> str:
        """The text of an address not in `_ip_cache` (callers look there first); cached while it is small."""
        text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        if len(self._ip_cache) < 65536:
            self._ip_cache[raw] = text
        return text


