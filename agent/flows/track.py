"""What a flow of the flow table carries besides its `Flow`, and the compiled fold's hooks (flows stage).

`Track` is a TCP flow's state until it is classified or closed; `FoldHooks` is the seam through
which agent/_hotpath.c calls back into `flows.table.FlowTable`, in packet order.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from agent.decode.app import Classification
from agent.flows.reassembly import StreamStart


class Track:
    """Per-flow state that only matters until the flow is classified or closed.

    A direction's buffer is made at its first byte (most flows of a scan or a flood have
    none); until then only its initial sequence number is kept (None: not seen)."""
    __slots__ = ("client", "server", "client_isn", "server_isn", "result", "fins", "hello", "due", "held")

    def __init__(self, client_isn: int | None, server_isn: int | None):
        self.client: StreamStart | None = None
        self.server: StreamStart | None = None
        self.client_isn, self.server_isn, self.result = client_isn, server_isn, None
        self.fins = 0  # bit 1: the initiator sent a FIN, bit 2: the responder did
        self.hello: Classification | None = None  # TLS with its ClientHello parsed: awaiting the answer
        self.due = 0.0  # when the first bytes must be decided (answer_timeout after they began)
        self.held = 0  # payload bytes buffered, counted in FlowTable.stream_bytes


class FoldHooks(NamedTuple):
    """What the compiled fold (agent/_hotpath.c) calls back, in packet order: the table's seam."""
    started: Callable  # (entry) after a new flow is stored
    answered: Callable  # (entry) at the responder's first packet
    payload: Callable  # (entry, forward, seq, payload) for a flow not yet classified
    server_start: Callable  # (track, isn) at the SYN-ACK
    end: Callable  # (entry) when a new SYN reuses a closed flow's 5-tuple
    ip_text: Callable  # (raw address) -> text, for addresses not in the table's cache
    evict: Callable  # (now) when a new compact flow makes the flows more than max_flows
    adopt: Callable  # (entry, outcome) a compact flow moved here after its answer was counted there
    datagram: Callable  # (entry, payload) the initiator's first UDP/53 datagram, when the table's dns_queries is on
