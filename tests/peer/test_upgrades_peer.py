"""Real STARTTLS, AUTH TLS, FTP data and TLS 1.3 draft sessions from Suricata's and Zeek's tests, through the table.

The captures are read in place from ../shared/peer-pcaps/suricata-peer/ (see its
README; never copied). Each flow is replayed through read_frames and FlowTable
as `replay` does, with the table's own deadlines: the client says EHLO (or
FEAT) and waits for the answer before STARTTLS (AUTH TLS), so a classification
on the first command would call these TLS sessions plaintext.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.flows.table import FlowTable

PEER = Path(__file__).resolve().parents[3] / "shared" / "peer-pcaps" / "suricata-peer"


def replay(capture: str, *, compiled: bool) -> dict[tuple, tuple]:
    """(client port, server port) -> (app, upgraded, TLS version, SNI) of each TCP flow."""
    got = {}

    def ended(flow, cls):
        if flow.protocol == "TCP":
            tls = flow.tls
            got[(flow.src_port, flow.dst_port)] = (flow.app, cls.upgraded if cls else None,
                                                   tls.version if tls else None, tls.sni if tls else None)
    table = FlowTable(on_end=ended, compiled=compiled)
    for batch in read_frames([PEER / capture]):
        table.ingest(batch)
    table.flush()
    return got


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
@pytest.mark.parametrize(("capture", "ports", "want"), [
    # Postfix: EHLO, 250 lines, STARTTLS, 220 Ready, then TLS 1.3
    ("smtp-startssl.pcap", (34634, 25), ("tls", "starttls", "1.3", None)),
    # Gmail's MX and openssl s_client -starttls smtp: TLS 1.2
    ("zeek-smtp-starttls.pcap", (54170, 25), ("tls", "starttls", "1.2", None)),
    # vsftpd: FEAT, AUTH TLS, 234, then TLS 1.3 with SNI 127.0.0.1
    ("zeek-ftp-auth-tls.pcap", (40284, 21), ("tls", "ftp-auth-tls", "1.3", "127.0.0.1")),
    # "220 FTP Sandbox Ready." then USER/PASS in the clear: ftp, not smtp
    ("ftp-download-passive.pcap", (41790, 21), ("ftp", None, None, None)),
    # passive data connections: the client sends nothing, the server a listing or a file
    ("ftp-download-passive.pcap", (41928, 21001), ("unknown-plaintext", None, None, None)),
    ("ftp-download-passive.pcap", (46274, 21008), ("unknown-plaintext", None, None, None)),
    # a control connection greeted "220 (vsFTPd 2.3.5)", then USER anonymous
    ("bug-4877.pcap", (55153, 21), ("ftp", None, None, None)),
    # a warning alert (unrecognized_name) before the ServerHello: TLS 1.2 is still read
    ("zeek-tls-early-alert.pcap", (50020, 64132), ("tls", None, "1.2", "jeffbryner.com")),
    # TLS 1.3 drafts: 14 (ServerHello version 0x0304), 18 (0x7f12), 23 (supported_versions 0x7f17), Chrome's 0x7e01
    ("tls13-draft14.pcap", (54049, 443), ("tls", None, "1.3-draft", "tls13.crypto.mozilla.org")),
    ("tls13-draft18.pcap", (36964, 443), ("tls", None, "1.3-draft", None)),
    ("tls13-draft23.pcap", (53748, 4433), ("tls", None, "1.3-draft", None)),
    ("zeek-chrome63-tls-experiment.pcap", (62873, 443), ("tls", None, "1.3-draft", "tls.ctf.network")),
    # UPnP eventing: a router NOTIFYs a Windows host, which SUBSCRIBEs back
    ("output-eve-ftp-data.pcap", (2330, 2869), ("http", None, None, None)),
    ("output-eve-ftp-data.pcap", (59888, 80), ("http", None, None, None)),
])
def test_upgradable_sessions_are_classified_after_their_upgrade(capture, ports, want, compiled):
    assert replay(capture, compiled=compiled)[ports] == want


RECORDED = Path(__file__).resolve().parents[2] / "pcaps" / "mail-starttls" / "capture.pcap"


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_recorded_smtp_imap_pop3_ftp_xmpp_and_ldap_sessions_are_tls_after_their_upgrade(compiled):
    """pcaps/mail-starttls (record.sh): curl to Exim, Dovecot and vsftpd, openssl to Prosody, ldapsearch to slapd."""
    got = []

    def ended(flow, cls):
        if flow.protocol == "TCP":
            port = "pasv" if 21100 <= flow.dst_port <= 21110 else flow.dst_port  # vsftpd's passive ports vary
            got.append((port, flow.app, cls.upgraded, flow.tls.version if flow.tls else None))
    table = FlowTable(on_end=ended, compiled=compiled)
    for batch in read_frames([RECORDED]):
        table.ingest(batch)
    table.flush()
    assert got == [
        (25, "tls", "starttls", "1.3"),  # EHLO, its answer, STARTTLS (curl to Exim)
        (143, "tls", "starttls", "1.3"),  # A001 CAPABILITY, A002 STARTTLS
        (110, "tls", "starttls", "1.3"),  # CAPA, STLS
        (143, "imap", None, None),  # A001 CAPABILITY, A002 AUTHENTICATE PLAIN in the clear
        (21, "tls", "ftp-auth-tls", "1.3"),  # AUTH SSL after the 220 greeting
        ("pasv", "tls", None, "1.3"),  # its passive data connection after PROT P
        (21, "ftp", None, None),  # USER anonymous in the clear
        ("pasv", "unknown-plaintext", None, None),  # its data connection: only the server sends
        (5222, "tls", "xmpp-starttls", "1.3"),  # stream, features, <starttls/>, <proceed/> (openssl s_client)
        (389, "tls", "ldap-starttls", "1.3"),  # ldapsearch -ZZ: the StartTLS extended request, then the search
        (389, "ldap", None, None),  # ldapsearch without -Z: a bind in the clear
    ]
