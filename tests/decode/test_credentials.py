"""classify() says when a plaintext stream's first bytes send a login in the clear (issue #13).

`Classification.credentials` names how, never the value: "http-basic", "ftp-login", "pop3-login",
"pop3-auth", "imap-login", "imap-auth", "smtp-auth" and "telnet". Each flag comes from bytes the
real programs send (curl -u, vsftpd and its clients, Dovecot, Postfix, telnetd and telnet); each
must-not is a look-alike that sends no password, or sends it only inside TLS.
"""
from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from agent.decode.app import Classification, classify
from tests.decode.test_app import HELLO, SERVER_HELLO
from tests.decode.test_textproto import steps

DEEP = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)
FLAGS = {None, "http-basic", "ftp-login", "pop3-login", "pop3-auth", "imap-login", "imap-auth", "smtp-auth", "telnet"}

# --- HTTP Basic (RFC 7617) ------------------------------------------------------------

# `curl -u alice:secret http://api:8080/v1/items`: "YWxpY2U6c2VjcmV0" is base64("alice:secret").
BASIC = (b"GET /v1/items HTTP/1.1\r\n"  # request line
         b"Host: api:8080\r\n"
         b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n"  # the password, readable by anyone on the path
         b"User-Agent: curl/8.5.0\r\n"
         b"Accept: */*\r\n"
         b"\r\n")  # the empty line: the head is whole
AUTH_LINE_END = BASIC.index(b"c2VjcmV0\r\n") + len(b"c2VjcmV0\r\n")


def test_a_basic_authorization_header_is_http_basic():
    assert classify(BASIC, b"", dst_port=8080) == Classification("http", credentials="http-basic")


def test_header_name_and_scheme_are_matched_in_any_case_and_proxy_authorization_counts():
    for line in (b"authorization: basic YWxpY2U6c2VjcmV0", b"AUTHORIZATION:BASIC YWxpY2U6c2VjcmV0",
                 b"Proxy-Authorization: Basic YWxpY2U6c2VjcmV0",  # RFC 9110 §11.7.2, to a forward proxy
                 b"proxy-authorization:\tbAsIc YWxpY2U6c2VjcmV0"):
        request = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n" + line + b"\r\n\r\n"
        assert classify(request, b"", dst_port=3128).credentials == "http-basic", line


def test_bare_lf_line_ends_are_read_too():
    request = b"GET / HTTP/1.0\nAuthorization: Basic YTpi\n\n"  # base64("a:b")
    assert classify(request, b"", dst_port=80) == Classification("http", credentials="http-basic")


def test_other_schemes_and_look_alikes_are_not_flagged():
    for line in (b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",  # a token, no password
                 b'Authorization: Digest username="alice", realm="api", nonce="dcd98b", response="6629fa"',
                 b"Authorization: Basically-not-basic x",  # another scheme that starts alike
                 b"X-Authorization: Basic YWxpY2U6c2VjcmV0",  # another field: the name starts the line
                 b"X-Forwarded-Authorization: Basic YWxpY2U6c2VjcmV0",
                 b"Referer: http://x/?Authorization: Basic YWxpY2U6c2VjcmV0"):
        request = b"GET / HTTP/1.1\r\nHost: api\r\n" + line + b"\r\n\r\n"
        assert classify(request, b"", dst_port=8080) == Classification("http"), line


def test_a_basic_header_in_the_body_is_not_flagged():
    body = b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: api\r\nContent-Length: %d\r\n\r\n\n%s" % (len(body) + 1, body)
    assert classify(request, b"", dst_port=8080) == Classification("http")


def test_a_header_in_the_second_segment_is_still_seen():
    first, second = BASIC[:BASIC.index(b"Authorization")], BASIC[BASIC.index(b"Authorization"):]
    assert classify(first, b"", dst_port=8080) == Classification("http", complete=False)
    assert classify(first + second, b"", dst_port=8080) == Classification("http", credentials="http-basic")


def test_http_is_decided_only_once_its_head_is_whole():
    plain = b"GET /healthz HTTP/1.1\r\nHost: api\r\n"
    assert classify(plain, b"", dst_port=8080) == Classification("http", complete=False)
    assert classify(plain + b"\r\n", b"", dst_port=8080) == Classification("http")
    assert classify(plain + b"\n", b"", dst_port=8080) == Classification("http")  # a bare LF ends it too


def test_a_head_as_long_as_the_table_keeps_is_decided_as_it_is():
    # flows.table.CLASSIFY_BYTES: the table feeds no more client bytes; the whole field lines count.
    long_head = b"GET / HTTP/1.1\r\nAuthorization: Basic YTpi\r\nCookie: " + b"c" * 20000
    assert classify(long_head[:16384], b"", dst_port=80) == Classification("http", credentials="http-basic")
    assert classify(long_head[:16383], b"", dst_port=80).complete is False
    no_password = b"GET / HTTP/1.1\r\nCookie: " + b"c" * 16384
    assert classify(no_password[:16384], b"", dst_port=80) == Classification("http")


def test_every_truncated_prefix_of_a_basic_request_waits_and_never_flags_a_partial_header():
    for n in range(len(BASIC) + 1):
        got = classify(BASIC[:n], b"", dst_port=8080)
        assert got.complete == (n == len(BASIC)), n  # only the empty line ends the head
        # The Authorization line counts once whole: the connection may end before the head does.
        assert got.credentials == ("http-basic" if n >= AUTH_LINE_END else None), n
        assert got.app in ("http", "unknown-plaintext", "imap", "unknown") and not got.tls, n


def test_basic_credentials_inside_a_socks5_tunnel_are_flagged():
    client = bytes.fromhex("05 01 00"  # SOCKS5 greeting: no authentication
                           "05 01 00 01 0a000001 0050")  # CONNECT 10.0.0.1:80
    server = bytes.fromhex("05 00" "05 00 00 01 00000000 0000")
    got = classify(client + BASIC, server, dst_port=1080)
    assert (got.app, got.tunnel, got.credentials, got.complete) == ("http", "socks5", "http-basic", True)


# --- mail and FTP logins before any STARTTLS ----------------------------------------

VSFTPD = b"220 (vsFTPd 3.0.5)\r\n"
DOVECOT_POP3 = b"+OK Dovecot (Ubuntu) ready.\r\n"
DOVECOT_IMAP = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS] Dovecot ready.\r\n"
POSTFIX = b"220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n"
EHLO_ANSWER = b"250-mx.example.com\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"

LOGINS = [  # (server greeting, client bytes, port, app, credentials)
    (VSFTPD, b"USER alice\r\n", 21, "ftp", "ftp-login"),
    (VSFTPD, b"FEAT\r\nUSER alice\r\n", 21, "ftp", "ftp-login"),
    (VSFTPD, b"PASS secret\r\n", 21, "ftp", "ftp-login"),  # a client resuming without USER
    (DOVECOT_POP3, b"USER alice\r\n", 110, "pop3", "pop3-login"),
    (DOVECOT_POP3, b"CAPA\r\nPASS secret\r\n", 110, "pop3", "pop3-login"),
    (DOVECOT_POP3, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n", 110, "pop3", "pop3-login"),  # RFC 1939 §7
    (DOVECOT_POP3, b"AUTH PLAIN\r\n", 110, "pop3", "pop3-auth"),  # RFC 5034
    (DOVECOT_POP3, b"AUTH\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", 110, "pop3", "pop3-auth"),
    (DOVECOT_IMAP, b"a001 LOGIN alice secret\r\n", 143, "imap", "imap-login"),  # RFC 9051 §6.2.3
    (DOVECOT_IMAP, b"a1 CAPABILITY\r\na2 login alice secret\r\n", 143, "imap", "imap-login"),
    (DOVECOT_IMAP, b"a001 AUTHENTICATE PLAIN\r\n", 143, "imap", "imap-auth"),  # RFC 9051 §6.2.2
    (POSTFIX, b"EHLO client.example.com\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", 25, "smtp", "smtp-auth"),  # RFC 4954
    (POSTFIX, b"EHLO client\r\nauth login\r\n", 587, "smtp", "smtp-auth"),
]


def test_each_login_command_before_tls_is_named():
    for greeting, client, port, app, credentials in LOGINS:
        got = classify(client, greeting, dst_port=port)
        assert got == Classification(app, credentials=credentials), client


def test_a_login_is_named_whichever_side_spoke_last():
    convo = [("s", POSTFIX), ("c", b"EHLO client\r\n"), ("s", EHLO_ANSWER),
             ("c", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")]
    got = steps(convo, dst_port=25)
    assert [g.credentials for g in got] == [None, None, None, "smtp-auth"]
    assert [g.complete for g in got] == [False, False, False, True]


def test_commands_that_commit_without_a_password_are_not_flagged():
    for greeting, client, port, app in (
            (POSTFIX, b"EHLO client\r\nMAIL FROM:<a@example.com>\r\n", 25, "smtp"),
            (POSTFIX, b"HELO client\r\nRCPT TO:<b@example.com>\r\n", 25, "smtp"),
            (b"* PREAUTH IMAP4rev1 ready\r\n", b"a1 SELECT INBOX\r\n", 143, "imap"),
            (VSFTPD, b"USER anonymous\r\n", 21, "ftp"),  # RFC 1635: the public login
            (VSFTPD, b"USER ftp\r\nPASS guest@\r\n", 21, "ftp"),
            (VSFTPD, b"USER Anonymous\r\n", 21, "ftp"),
            (VSFTPD, b"FEAT\r\nSYST\r\nPWD\r\nTYPE I\r\n", 21, "ftp")):  # MAX_LINES commands, no login
        assert classify(client, greeting, dst_port=port) == Classification(app), client


def test_a_bare_pop3_auth_lists_mechanisms_and_commits_to_nothing():
    got = classify(b"AUTH\r\n", DOVECOT_POP3, dst_port=110)
    assert got == Classification("pop3", complete=False)
    # ... so the client may still upgrade after it
    got = classify(b"AUTH\r\nCAPA\r\nSTLS\r\n" + HELLO, DOVECOT_POP3 + b"+OK\r\n+OK\r\n+OK Begin TLS\r\n" + SERVER_HELLO,
                   dst_port=110)
    assert (got.app, got.upgraded, got.credentials) == ("tls", "starttls", None)


def test_a_login_after_starttls_is_inside_tls_and_never_flagged():
    convo = [("s", POSTFIX), ("c", b"EHLO client\r\n"), ("s", EHLO_ANSWER), ("c", b"STARTTLS\r\n"),
             ("s", b"220 2.0.0 Ready to start TLS\r\n"), ("c", HELLO), ("s", SERVER_HELLO),
             ("c", bytes.fromhex("17 0303 0020") + bytes(32))]  # AUTH PLAIN, encrypted
    got = steps(convo, dst_port=25)
    assert all(g.credentials is None for g in got)
    assert (got[-1].app, got[-1].upgraded, got[-1].tls) == ("tls", "starttls", True)
    for greeting, upgrade, port in ((DOVECOT_POP3, b"STLS\r\n", 110), (DOVECOT_IMAP, b"a1 STARTTLS\r\n", 143),
                                    (VSFTPD, b"AUTH TLS\r\n", 21)):
        got = classify(upgrade + HELLO, greeting + b"+OK Begin TLS\r\n" + SERVER_HELLO, dst_port=port)
        assert got.tls and got.credentials is None, upgrade


# --- Telnet (RFC 854, 855) ----------------------------------------------------------

# telnetd opens (server first): IAC DO TERMINAL-TYPE, IAC DO TERMINAL-SPEED, IAC DO X-DISPLAY-LOCATION,
# IAC DO NEW-ENVIRON.
TELNETD = bytes.fromhex("fffd18 fffd20 fffd23 fffd27")
# The telnet client answers: IAC WILL TERMINAL-TYPE, IAC WILL TERMINAL-SPEED, ..., and later types its login.
TELNET_ANSWER = bytes.fromhex("fffb18 fffb20 fffb23 fffb27")
# A client that negotiates first (inetutils telnet): IAC DO SUPPRESS-GO-AHEAD, IAC WILL TERMINAL-TYPE,
# IAC WILL NAWS, IAC WILL TERMINAL-SPEED, IAC WILL TOGGLE-FLOW-CONTROL, IAC WILL LINEMODE,
# IAC WILL NEW-ENVIRON, IAC DO STATUS.
TELNET_CLIENT_FIRST = bytes.fromhex("fffd03 fffb18 fffb1f fffb20 fffb21 fffb22 fffb27 fffd05")
TELNET = Classification("telnet", credentials="telnet")


def test_telnet_negotiation_from_the_server_first_is_telnet():
    assert classify(b"", TELNETD, dst_port=23) == TELNET
    assert classify(TELNET_ANSWER, TELNETD, dst_port=23) == TELNET
    assert classify(b"root\r\n", TELNETD, dst_port=23) == TELNET  # a client that types before it negotiates


def test_telnet_negotiation_from_the_client_first_is_telnet():
    assert classify(TELNET_CLIENT_FIRST, b"", dst_port=23) == TELNET
    assert classify(TELNET_CLIENT_FIRST, TELNETD, dst_port=2323) == TELNET
    assert classify(bytes.fromhex("fffa1800 fff0"), b"", dst_port=23) == TELNET  # IAC SB TERMINAL-TYPE IS .. SE
    # IAC WILL ECHO alone: not the start of an SSLv2 hello (one opening 0xFF would be 32 KiB long)
    assert classify(bytes.fromhex("fffb01"), b"", dst_port=23) == TELNET


def test_a_lone_iac_waits_and_other_bytes_after_it_are_not_telnet():
    for start in (b"\xff", b"\xff\xfb"):  # the option byte is still to come
        assert classify(start, b"", dst_port=23) == Classification("unknown-plaintext", complete=False)
        assert classify(b"", start, dst_port=23) == Classification("unknown-plaintext", complete=False)
    for data in (bytes.fromhex("fff1 fff1 fff1 fff1"), bytes.fromhex("ff00 0203 0405 0607")):  # IAC NOP; no command
        assert classify(data, b"", dst_port=23) == Classification("unknown-plaintext"), data
        assert classify(b"", data, dst_port=23) == Classification("unknown-plaintext", complete=False), data


def test_tls_is_still_tls_next_to_telnet_bytes():
    assert classify(HELLO, TELNETD, dst_port=443).tls  # a client hello wins over an odd server
    # An SSLv2-compatible CLIENT-HELLO (RFC 6101 E.2): length 46, version, 7 cipher specs, no session id,
    # a 16-byte challenge. Its first byte has the high bit set, as 0xFF has: it still is TLS.
    sslv2 = bytes.fromhex("802e 01 0301 0015 0000 0010" "0000ff 010080 050080" + "000000" * 4) + bytes(16)
    got = classify(sslv2, b"", dst_port=443)
    assert got.tls and got.credentials is None


# --- whatever the bytes ---------------------------------------------------------------

@DEEP
@given(st.sampled_from([BASIC[:AUTH_LINE_END], b"a1 LOGIN x y\r\n", b"USER bob\r\n", b"AUTH PLAIN\r\n",
                        TELNET_CLIENT_FIRST, b"GET / HTTP/1.1\r\n", b""]),
       st.binary(max_size=300), st.sampled_from([b"", VSFTPD, DOVECOT_POP3, DOVECOT_IMAP, POSTFIX, TELNETD]),
       st.integers(0, 65535))
def test_credentials_are_one_of_the_contract_values_and_only_on_plaintext(prefix, rest, server, port):
    got = classify(prefix + rest, server, dst_port=port)
    assert got.credentials in FLAGS
    assert got.credentials is None or not got.tls
