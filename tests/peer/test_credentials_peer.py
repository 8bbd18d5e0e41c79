"""Logins in the clear in real sessions from Suricata's and Zeek's test captures, through the flow table.

Read in place from ../shared/peer-pcaps/suricata-peer/ (see its README; never copied). What each capture
sends was read from its bytes: FTP `USER bob`/`PASS password`, POP3 `USER`/`PASS`, SMTP `AUTH LOGIN`;
anonymous FTP and SMTP sessions without AUTH send no one's password; the STARTTLS and AUTH TLS sessions
log in inside TLS. Both flow tables (compiled and Python) must agree.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.flows.table import FlowTable

PEER = Path(__file__).resolve().parents[3] / "shared" / "peer-pcaps" / "suricata-peer"


def credentials(capture: str, *, compiled: bool) -> list[tuple]:
    """(server port, app, credentials) of each TCP flow that was classified, in end order."""
    got = []

    def ended(flow, cls):
        if flow.protocol == "TCP" and flow.app not in (None, "unknown"):
            got.append((flow.dst_port, flow.app, flow.credentials))
    table = FlowTable(on_end=ended, compiled=compiled)
    for batch in read_frames([PEER / capture]):
        table.ingest(batch)
    table.flush()
    return sorted(got, key=repr)


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
@pytest.mark.parametrize(("capture", "flagged", "silent"), [
    ("ftp-download-active.pcap", [(21, "ftp", "ftp-login")], []),
    ("ftp-all-data-ipv6.pcap", [(21, "ftp", "ftp-login")] * 2, []),
    ("pop3-bug-7709.pcap", [(110, "pop3", "pop3-login")] * 2, []),
    ("bug-3616-smtp.pcap", [(25, "smtp", "smtp-auth")], []),
    ("bug-4877.pcap", [], [(21, "ftp", None)]),  # USER anonymous
    ("smtp-rset.pcap", [], [(25, "smtp", None)]),  # EHLO, MAIL FROM: no AUTH
    ("smtp-startssl.pcap", [], [(25, "tls", None)]),  # AUTH inside TLS
    ("zeek-ftp-auth-tls.pcap", [], [(21, "tls", None)]),
])
def test_real_sessions_flag_logins_in_the_clear_and_only_those(capture, flagged, silent, compiled):
    got = credentials(capture, compiled=compiled)
    assert [g for g in got if g[2]] == flagged
    assert all(s in got for s in silent), got
