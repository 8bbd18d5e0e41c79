"""Text protocols upgrading to TLS: classified only once they have or have not upgraded.

Each conversation is replayed as the flow table sees it, one message at a time
(client and server bytes so far), and `classify` must not decide before the
client asked for TLS or committed to plaintext. The exchanges are those of the
real sessions in ../shared/peer-pcaps/suricata-peer/ (smtp-startssl.pcap,
zeek-ftp-auth-tls.pcap), shortened.
"""
from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from agent.decode.app import Classification, classify
from agent.decode.textproto import MAX_LINES, MAX_XML, text_protocol
from tests.decode.test_app import HELLO, SERVER_HELLO

DEEP = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)


def steps(conversation: list[tuple[str, bytes]], *, dst_port: int) -> list[Classification]:
    """classify() after each message of a conversation of ("c"|"s", bytes)."""
    client = server = b""
    out = []
    for side, data in conversation:
        if side == "c":
            client += data
        else:
            server += data
        out.append(classify(client, server, dst_port=dst_port))
    return out


SMTP_STARTTLS = [  # smtp-startssl.pcap: Postfix and a client saying EHLO first
    ("s", b"220 firewall.unx.ca ESMTP Postfix\r\n"),
    ("c", b"EHLO desktop.unx.ca\r\n"),
    ("s", b"250-firewall.unx.ca\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"),
    ("c", b"STARTTLS\r\n"),
    ("s", b"220 2.0.0 Ready to start TLS\r\n"),
    ("c", HELLO),
    ("s", SERVER_HELLO),
]


def test_smtp_starttls_after_ehlo_is_tls_and_undecided_until_the_server_hello():
    got = steps(SMTP_STARTTLS, dst_port=25)
    assert [g.complete for g in got] == [False] * 6 + [True]
    assert [g.app for g in got] == ["smtp"] * 5 + ["tls", "tls"]
    assert got[-1].upgraded == "starttls" and got[-1].server_hello.version == "1.2"


def test_smtp_ending_after_ehlo_is_smtp():
    # The flow table classifies again at the end (or answer_timeout): the waiting answer is smtp.
    got = steps(SMTP_STARTTLS[:3], dst_port=25)[-1]
    assert (got.app, got.tls, got.complete) == ("smtp", False, False)


def test_smtp_mail_transaction_without_starttls_decides_plaintext():
    got = steps(SMTP_STARTTLS[:3] + [("c", b"MAIL FROM:<a@b.example>\r\n")], dst_port=25)
    assert got[-1] == Classification("smtp")


def test_smtp_starttls_refused_then_plaintext_is_smtp():
    convo = SMTP_STARTTLS[:5] + [("s", b"454 4.7.0 TLS not available\r\n"), ("c", b"MAIL FROM:<a@b>\r\n")]
    convo[4] = ("s", b"454 4.7.0 TLS not available\r\n")
    assert steps(convo, dst_port=25)[-1] == Classification("smtp")


def test_many_commands_without_starttls_decide_plaintext():
    client = b"EHLO x\r\n" + b"NOOP\r\n" * (MAX_LINES - 1)
    assert classify(client, b"220 mx ESMTP\r\n", dst_port=25) == Classification("smtp")
    assert not classify(client[:-6], b"220 mx ESMTP\r\n", dst_port=25).complete


def test_a_line_longer_than_any_command_decides_plaintext():
    assert classify(b"EHLO " + b"x" * 600, b"220 mx ESMTP\r\n", dst_port=25) == Classification("smtp")


def test_imap_capability_then_starttls_is_tls():
    convo = [("s", b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n"),
             ("c", b"a1 CAPABILITY\r\n"),
             ("s", b"* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\n"),
             ("c", b"a2 STARTTLS\r\n"), ("s", b"a2 OK Begin TLS\r\n"), ("c", HELLO), ("s", SERVER_HELLO)]
    got = steps(convo, dst_port=143)
    assert [g.complete for g in got] == [False] * 6 + [True]
    assert (got[-1].app, got[-1].upgraded) == ("tls", "starttls")


def test_imap_login_in_plaintext_decides_imap():
    convo = [("s", b"* OK ready\r\n"), ("c", b"a1 CAPABILITY\r\n"), ("s", b"a1 OK\r\n"), ("c", b"a2 LOGIN u p\r\n")]
    assert steps(convo, dst_port=143)[-1] == Classification("imap", credentials="imap-login")


def test_pop3_capa_then_stls_is_tls():
    convo = [("s", b"+OK POP3 ready\r\n"), ("c", b"CAPA\r\n"), ("s", b"+OK\r\nSTLS\r\n.\r\n"),
             ("c", b"STLS\r\n"), ("s", b"+OK Begin TLS\r\n"), ("c", HELLO), ("s", SERVER_HELLO)]
    got = steps(convo, dst_port=110)
    assert [g.complete for g in got] == [False] * 6 + [True]
    assert (got[-1].app, got[-1].upgraded) == ("tls", "starttls")
    login = steps(convo[:3] + [("c", b"USER u\r\n")], dst_port=110)[-1]
    assert login == Classification("pop3", credentials="pop3-login")


FTP_AUTH = [  # zeek-ftp-auth-tls.pcap: vsftpd, FEAT then AUTH TLS
    ("s", b"220 (vsFTPd 3.0.5)\r\n"), ("c", b"FEAT\r\n"),
    ("s", b"211-Features:\r\n EPSV\r\n PBSZ\r\n PROT\r\n211 End\r\n"), ("c", b"AUTH TLS\r\n"),
    ("s", b"234 Proceed with negotiation.\r\n"), ("c", HELLO), ("s", SERVER_HELLO),
]


def test_ftp_control_connection_is_ftp_not_smtp():
    assert classify(b"USER anonymous\r\n", b"220 (vsFTPd 3.0.3)\r\n", dst_port=21) == Classification("ftp")
    assert classify(b"SYST\r\n", b"220 Welcome\r\n", dst_port=21).app == "ftp"  # the port decides
    assert classify(b"EHLO x\r\n", b"220 Welcome\r\n", dst_port=21).app == "smtp"  # the client decides


def test_ftp_auth_tls_after_feat_is_tls():
    got = steps(FTP_AUTH, dst_port=21)
    assert [g.complete for g in got] == [False] * 6 + [True]
    assert [g.app for g in got] == ["ftp"] * 5 + ["tls", "tls"]
    assert got[-1].upgraded == "ftp-auth-tls" and got[-1].server_hello is not None


def test_ftp_auth_ssl_and_a_refusal():
    assert classify(b"AUTH SSL\r\n" + HELLO, b"220 ftp\r\n234 AUTH SSL ok\r\n" + SERVER_HELLO,
                    dst_port=21).upgraded == "ftp-auth-tls"
    refused = classify(b"AUTH TLS\r\nUSER anonymous\r\n", b"220 ftp\r\n530 Please login\r\n", dst_port=21)
    assert refused == Classification("ftp")


XMPP_OPEN = (b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' "
             b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
XMPP_FEATURES = (b"<?xml version='1.0'?><stream:stream from='example.com' id='1' version='1.0' "
                 b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><stream:features>"
                 b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>")


def test_xmpp_starttls_is_tls():
    convo = [("c", XMPP_OPEN), ("s", XMPP_FEATURES), ("c", b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
             ("s", b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"), ("c", HELLO), ("s", SERVER_HELLO)]
    got = steps(convo, dst_port=5222)
    assert [g.complete for g in got] == [False] * 5 + [True]
    assert [g.app for g in got] == ["xmpp"] * 4 + ["tls", "tls"]
    assert got[-1].upgraded == "xmpp-starttls" and got[-1].server_hello.cipher == 0xC02F


def test_xmpp_authenticating_without_tls_is_xmpp():
    auth = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
    assert classify(XMPP_OPEN + auth, XMPP_FEATURES, dst_port=5222) == Classification("xmpp")
    assert classify(XMPP_OPEN + b" " * MAX_XML, b"", dst_port=5222) == Classification("xmpp")
    assert classify(XMPP_OPEN, b"", dst_port=5222) == Classification("xmpp", complete=False)


def test_every_prefix_of_each_conversation_classifies_without_deciding_early():
    for convo, port in ((SMTP_STARTTLS, 25), (FTP_AUTH, 21)):
        client = b"".join(d for s, d in convo if s == "c")
        server = b"".join(d for s, d in convo if s == "s")
        upgrade_end = client.index(HELLO)
        for n in range(upgrade_end + len(HELLO)):
            got = classify(client[:n], server, dst_port=port)
            assert not got.complete, (convo[0], n)


@DEEP
@given(st.sampled_from([b"EHLO x\r\n", b"a1 CAPABILITY\r\n", b"CAPA\r\n", b"FEAT\r\n", XMPP_OPEN, b"AUTH TLS\r\n"]),
       st.binary(max_size=300), st.sampled_from([b"", b"220 x\r\n", b"* OK\r\n", b"+OK\r\n", XMPP_FEATURES]),
       st.binary(max_size=80))
def test_text_protocols_never_raise(first, rest, greeting, server):
    for port in (21, 25, 5222):
        got = text_protocol(first + rest, greeting + server, dst_port=port)
        assert got is None or got.client_at <= len(first + rest)
        classify(first + rest, greeting + server, dst_port=port)
