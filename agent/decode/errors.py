"""Outcomes of decoding other than a value (STYLE §4).

`DecodeError(reason)` is a malformed packet: counted by its slug in
`flowwarden_packets_dropped_total{stage="decode",reason}` and skipped.
A `Skip` is a well-formed packet we do not judge (ARP, ICMP ...): counted, not an error.
"""


class DecodeError(Exception):
    """A malformed packet; `reason` is a stable slug such as `ipv4-bad-ihl`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Skip(Exception):
    """A packet that is fine but not ours to judge; `reason` is a slug such as `non-ip`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
