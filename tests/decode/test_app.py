"""classify(): TLS, in-protocol upgrades, tunnels and plaintext recognisers."""
from __future__ import annotations

import os
import struct

from hypothesis import given, settings, strategies as st

from agent.decode.app import Classification, classify, classify_answer

DEEP = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)

# Minimal TLS 1.2 ClientHello (no extensions) and its ServerHello.
HELLO = bytes.fromhex(
    "16 0301 002d"  # record: handshake, length 45
    "01 000029"  # ClientHello, length 41
    "0303" + "00" * 32 +  # legacy_version 1.2, random
    "00"  # session id: empty
    "0002 c02f"  # one cipher suite
    "01 00"  # compression: null
)
SERVER_HELLO = bytes.fromhex(
    "16 0303 002a"  # record: handshake, length 42
    "02 000026"  # ServerHello, length 38
    "0303" + "22" * 32 +  # version 1.2, random
    "00 c02f 00"  # session id empty, cipher, compression
)


def test_direct_tls_carries_both_hellos():
    got = classify(HELLO, SERVER_HELLO, dst_port=443)
    assert got.app == "tls" and got.tls and got.complete and got.upgraded is None
    assert got.client_hello.offered_versions == ("1.2",)
    assert got.server_hello.version == "1.2" and got.server_hello.cipher == 0xC02F


def test_partial_client_hello_is_tls_but_incomplete():
    got = classify(HELLO[:20], b"", dst_port=443)
    assert got.tls and not got.complete and got.client_hello is None


def test_client_hello_waits_for_the_server_answer_to_be_complete():
    got = classify(HELLO, b"", dst_port=443)
    assert got.tls and got.client_hello is not None and not got.complete
    for n in range(1, len(SERVER_HELLO)):
        got = classify(HELLO, SERVER_HELLO[:n], dst_port=443)
        assert got.tls and not got.complete and got.server_hello is None, n
    assert classify(HELLO, SERVER_HELLO, dst_port=443).complete


def test_answering_a_waiting_hello_is_classifying_the_whole_connection_again():
    waiting = classify(HELLO, b"", dst_port=443)
    alert = bytes.fromhex("15 0303 0002 02 28")
    for server in [SERVER_HELLO[:n] for n in range(len(SERVER_HELLO) + 1)] + [alert, b"HTTP/1.1 400\r\n\r\n"]:
        assert classify_answer(waiting, server) == classify(HELLO, server, dst_port=443), server


def test_server_answering_without_a_server_hello_completes_the_tls_connection():
    alert = bytes.fromhex("15 0303 0002 02 28")  # fatal handshake_failure (RFC 8446 §6)
    for server in (alert, b"HTTP/1.1 400 Bad Request\r\n\r\n"):
        got = classify(HELLO, server, dst_port=443)
        assert got.tls and got.complete and got.client_hello is not None and got.server_hello is None


def test_no_bytes_is_unknown():
    assert classify(b"", b"", dst_port=25) == Classification("unknown", complete=False)


def test_only_the_responder_speaking_is_plaintext_not_unknown():
    # A TLS client speaks first: an FTP data connection (the server sends the file) is not TLS.
    assert classify(b"", b"-rw-r--r-- 1 ftp ftp 12 f\r\n", dst_port=21008) == Classification(
        "unknown-plaintext", complete=False)
    # A greeting names the protocol; the client may still upgrade, so it waits.
    assert classify(b"", b"220 mail ESMTP\r\n", dst_port=25) == Classification("smtp", complete=False)
    assert classify(b"", b"220 (vsFTPd 3.0.5)\r\n", dst_port=21) == Classification("ftp", complete=False)
    assert classify(b"", MYSQL_GREETING, dst_port=3306) == Classification("mysql", complete=False)


def test_a_server_hello_alone_is_unknown_not_plaintext():
    # The client's bytes were lost (capture drop): the server's TLS records prove nothing is plaintext.
    assert classify(b"", SERVER_HELLO, dst_port=443) == Classification("unknown", complete=False)


# --- upgrades -------------------------------------------------------------------

PG_SSL = bytes.fromhex("00000008 04d2162f")  # length 8, SSLRequest code 80877103
PG_STARTUP = bytes.fromhex("00000011 00030000") + b"user\x00pg\x00\x00"  # length 17, protocol 3.0


def test_postgresql_ssl_request_accepted_is_tls():
    got = classify(PG_SSL + HELLO, b"S" + SERVER_HELLO, dst_port=5432)
    assert got.tls and got.upgraded == "postgresql-ssl" and got.server_hello.cipher == 0xC02F


def test_postgresql_ssl_request_declined_then_startup_is_plaintext():
    got = classify(PG_SSL + PG_STARTUP, b"N", dst_port=5432)
    assert got.app == "postgresql" and not got.tls


def test_postgresql_ssl_request_alone_waits_for_more():
    got = classify(PG_SSL, b"S", dst_port=5432)
    assert got.app == "postgresql" and not got.complete
    assert not classify(PG_SSL, b"", dst_port=5432).complete


def test_postgresql_ssl_request_declined_is_decided_by_the_server_answer():
    assert classify(PG_SSL, b"N", dst_port=5432) == Classification("postgresql")


def test_postgresql_ssl_accepted_waits_for_the_server_hello():
    got = classify(PG_SSL + HELLO, b"S", dst_port=5432)
    assert got.tls and got.upgraded == "postgresql-ssl" and not got.complete
    assert classify(PG_SSL + HELLO, b"S" + SERVER_HELLO, dst_port=5432).complete


def test_postgresql_startup_without_ssl_is_plaintext():
    assert classify(PG_STARTUP, b"", dst_port=5432).app == "postgresql"


def _smtp(after: bytes) -> bytes:
    return b"EHLO client\r\nSTARTTLS\r\n" + after


def test_smtp_starttls_followed_by_a_handshake_is_tls():
    server = b"220 mx ESMTP\r\n250-mx\r\n250 STARTTLS\r\n220 2.0.0 Ready\r\n" + SERVER_HELLO
    got = classify(_smtp(HELLO), server, dst_port=25)
    assert got.tls and got.upgraded == "starttls" and got.server_hello.version == "1.2"


def test_smtp_starttls_waits_for_the_server_hello_after_the_ready_line():
    server = b"220 mx ESMTP\r\n250-mx\r\n250 STARTTLS\r\n"
    got = classify(_smtp(HELLO), server, dst_port=25)
    assert got.tls and got.upgraded == "starttls" and not got.complete
    got = classify(_smtp(HELLO), server + b"220 2.0.0 Ready\r\n" + SERVER_HELLO, dst_port=25)
    assert got.tls and got.complete and got.server_hello is not None


def test_smtp_starttls_declined_then_plaintext_is_smtp():
    got = classify(_smtp(b"MAIL FROM:<a@b>\r\n"), b"220 mx\r\n454 TLS not available\r\n", dst_port=25)
    assert got.app == "smtp" and not got.tls


def test_smtp_without_starttls_is_smtp():
    assert classify(b"HELO x\r\nMAIL FROM:<a@b>\r\n", b"220 mx\r\n", dst_port=25).app == "smtp"


def test_imap_and_pop3_starttls_are_tls():
    imap = classify(b"a1 STARTTLS\r\n" + HELLO, b"* OK ready\r\na1 OK go\r\n" + SERVER_HELLO, dst_port=143)
    pop3 = classify(b"STLS\r\n" + HELLO, b"+OK ready\r\n+OK go\r\n", dst_port=110)
    assert (imap.app, imap.upgraded, imap.server_hello is not None) == ("tls", "starttls", True)
    assert (pop3.app, pop3.upgraded) == ("tls", "starttls")


def test_imap_and_pop3_greetings_name_the_protocol():
    assert classify(b"a1 LOGIN u p\r\n", b"* OK IMAP4rev1\r\n", dst_port=143).app == "imap"
    assert classify(b"USER u\r\n", b"+OK POP3\r\n", dst_port=110).app == "pop3"


# LDAPMessage { messageID 1, extendedRequest [APPLICATION 23] { requestName [0] StartTLS OID } }
LDAP_STARTTLS = bytes.fromhex("301d 020101 7718 8016") + b"1.3.6.1.4.1.1466.20037"
LDAP_OK = bytes.fromhex("300c 020101 7807 0a0100 0400 0400")  # extendedResponse success
LDAP_BIND = bytes.fromhex("300c 020101 6007 020103 0400 8000")  # simple anonymous bind


def test_ldap_starttls_followed_by_a_handshake_is_tls():
    got = classify(LDAP_STARTTLS + HELLO, LDAP_OK + SERVER_HELLO, dst_port=389)
    assert got.tls and got.upgraded == "ldap-starttls" and got.server_hello is not None


def test_ldap_bind_is_plaintext_ldap():
    assert classify(LDAP_BIND, b"", dst_port=389).app == "ldap"


# MySQL: server greeting (protocol 10), client SSLRequest / HandshakeResponse41.
MYSQL_GREETING = bytes.fromhex("0c0000 00 0a") + b"8.0.36\x00" + bytes(4)
MYSQL_SSL = bytes.fromhex("200000 01 058aaf01 00000001 21") + bytes(23)  # caps incl. CLIENT_SSL
MYSQL_LOGIN = bytes.fromhex("300000 01 0582af01 00000001 21") + bytes(23) + b"root\x00" + bytes(11)


def test_mysql_ssl_request_followed_by_a_handshake_is_tls():
    got = classify(MYSQL_SSL + HELLO, MYSQL_GREETING + SERVER_HELLO, dst_port=3306)
    assert got.tls and got.upgraded == "mysql-ssl" and got.server_hello is not None


def test_mysql_login_without_ssl_is_plaintext():
    assert classify(MYSQL_LOGIN, MYSQL_GREETING, dst_port=3306).app == "mysql"


# --- tunnels ---------------------------------------------------------------------

def test_tls_inside_socks4a_and_http_connect_is_found():
    socks4a = bytes.fromhex("04 01 01bb 00000001") + b"user\x00example.com\x00"
    got = classify(socks4a + HELLO, bytes.fromhex("005a 0000 00000000") + SERVER_HELLO, dst_port=1080)
    assert (got.app, got.tunnel, got.server_hello is not None) == ("tls", "socks4", True)
    connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    got = classify(connect + HELLO, b"HTTP/1.1 200 OK\r\n\r\n" + SERVER_HELLO, dst_port=3128)
    assert (got.app, got.tunnel, got.server_hello is not None) == ("tls", "http-connect", True)


def test_plaintext_inside_socks5_with_password_is_named():
    client = bytes.fromhex("05 01 02") + bytes.fromhex("01 01") + b"u" + b"\x01p"
    client += bytes.fromhex("05 01 00 03 0b") + b"example.com" + b"\x00\x50" + b"GET / HTTP/1.1\r\n"
    server = bytes.fromhex("0502 0100 05000001 00000000 0000")
    got = classify(client, server, dst_port=1080)
    assert (got.app, got.tunnel, got.tls) == ("http", "socks5", False)


def test_hundreds_of_nested_socks4_headers_are_unknown_plaintext_not_a_recursion_error():
    socks4 = bytes.fromhex("04 01 01bb 0a000001") + b"\x00"  # CONNECT 10.0.0.1:443, empty user id
    got = classify(socks4 * 500 + HELLO, bytes.fromhex("005a 0000 00000000"), dst_port=1080)
    assert got == Classification("unknown-plaintext", tunnel="socks4")


def test_a_tunnel_inside_a_tunnel_is_not_unwrapped():
    connect = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"
    socks5 = bytes.fromhex("05 01 00") + bytes.fromhex("05 01 00 01 0a000001 01bb")
    for outer, inner in ((connect, socks5), (socks5, connect), (socks5, socks5 + connect)):
        got = classify(outer + inner + HELLO, b"", dst_port=1080)
        assert (got.app, got.tls, got.complete) == ("unknown-plaintext", False, True), (outer, inner)


# --- plaintext -------------------------------------------------------------------

PLAINTEXT = {
    "http": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 8080),
    "http2": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04", 8080),
    "redis": (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 6379),
    "amqp": (b"AMQP\x00\x00\x09\x01", 5672),
    "mqtt": (b"\x10+\x00\x04MQTT\x04\xc2\x00<\x00\x13myvoiceismypassp", 1883),  # mqtt311-pub-qos1.pcap
    "rfb": (b"RFB 003.007\n", 5900),
    "mongodb": (struct.pack("<iiii", 60, 7, 0, 2013) + bytes(44), 27017),
    "kafka": (struct.pack("!ihhih", 30, 18, 3, 1, 7) + b"console" + bytes(13), 9092),
    "dns": (struct.pack("!HHHHHHH", 29, 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01", 53),
}


def test_each_plaintext_protocol_is_named():
    for app, (data, port) in PLAINTEXT.items():
        assert classify(data, b"", dst_port=port) == Classification(app), app


def test_redis_inline_command_on_its_port_is_redis():
    assert classify(b"PING\r\n", b"+PONG\r\n", dst_port=6379).app == "redis"


def test_kafka_and_dns_are_recognised_off_their_ports():
    assert classify(PLAINTEXT["kafka"][0], b"", dst_port=19092).app == "kafka"
    assert classify(PLAINTEXT["dns"][0], b"", dst_port=5353).app == "dns"


def test_http_method_without_a_path_is_still_checked_against_mail_first():
    # "tag LOGIN" is an IMAP command whatever the tag; a path after the method is HTTP.
    assert classify(b"GET LOGIN x\r\n", b"", dst_port=143).app == "imap"
    assert classify(b"GET / HTTP/1.1\r\n", b"220 mx ESMTP\r\n", dst_port=25).app == "smtp"
    assert classify(b"PROPPATCH /d HTTP/1.1\r\n", b"", dst_port=80).app == "http"
    # An unknown method is HTTP only with the whole request line (RFC 9112 §3), version included.
    assert classify(b"GETX / HTTP/1.1\r\n", b"", dst_port=80).app == "http"
    assert classify(b"GETX /\r\n", b"", dst_port=80).app == "unknown-plaintext"


def test_upnp_eventing_and_other_request_lines_are_http():
    # output-eve-ftp-data.pcap: a router NOTIFYs a Windows host on 2869, which SUBSCRIBEs on 80
    for line in (b"NOTIFY /upnp/eventing/xcmmwtqlwc HTTP/1.1\r\nNT: upnp:event\r\n",
                 b"SUBSCRIBE /WANIPConnection HTTP/1.1\r\nCache-Control: no-cache\r\n",
                 b"UNSUBSCRIBE /evt HTTP/1.1\r\n", b"MKCALENDAR /cal/ HTTP/1.1\r\n", b"BREW /pot HTTP/1.0\n"):
        assert classify(line, b"", dst_port=2869) == Classification("http", complete=False), line  # head not whole
    assert classify(b"DESCRIBE rtsp://cam/ RTSP/1.0\r\n", b"", dst_port=554).app == "unknown-plaintext"


def test_unrecognised_bytes_are_unknown_plaintext():
    assert classify(b"SSH-2.0-OpenSSH_9.6\r\n", b"", dst_port=22) == Classification("unknown-plaintext")
    assert classify(b"\x01\x02", b"", dst_port=9) == Classification("unknown-plaintext", complete=False)


def test_tls_application_data_without_a_hello_is_not_called_tls():
    # Mid-stream bytes the flow layer should have marked; classify alone cannot prove TLS.
    assert not classify(b"\x17\x03\x03\x00\x20" + bytes(32), b"", dst_port=443).tls


@DEEP
@given(st.binary(min_size=0, max_size=300), st.binary(max_size=100), st.integers(0, 65535))
def test_classify_never_raises_on_arbitrary_bytes(client, server, port):
    got = classify(client, server, dst_port=port)
    assert isinstance(got, Classification) and got.tls == (got.app == "tls")
    assert got.server_hello is None or got.complete


@DEEP
@given(st.sampled_from([PG_SSL, b"a1 STARTTLS\r\n", LDAP_STARTTLS, MYSQL_SSL, bytes.fromhex("050100")]),
       st.binary(max_size=200), st.binary(max_size=60))
def test_upgrades_never_raise_on_arbitrary_continuations(prefix, rest, server):
    classify(prefix + rest, server, dst_port=1)
    classify(prefix + HELLO[: len(rest)], server, dst_port=1)
