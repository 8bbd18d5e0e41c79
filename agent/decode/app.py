"""Application protocol of a TCP connection from its first bytes (decode stage).

The flow table keeps the first client and server bytes of each connection
(`flows.reassembly.StreamStart`) and asks `classify` what they are: a TLS
handshake (directly, after an in-protocol upgrade such as STARTTLS or
PostgreSQL SSLRequest, or inside a SOCKS/HTTP CONNECT tunnel) or one of the
plaintext protocols people run in clusters. The TLS judge turns "not TLS where
TLS is required" into a finding, so a recogniser must never call TLS plaintext;
an unrecognised stream is `unknown-plaintext`, an empty one `unknown`.
A plaintext stream whose first bytes send a login in the clear says how in
`credentials` (presence only, never the value): an HTTP request with a Basic
`Authorization` header (`decode.http`), the login or AUTH command that kept a
mail or FTP session plaintext (`decode.textproto`), or any Telnet session (RFC
854: option negotiation, then a login typed in the clear).
Bytes in, value out; malformed input never raises.

`complete` tells the flow table it may stop feeding bytes: for TLS only once
the server's first answer is read (its ServerHello, or bytes that clearly are
not one), for an upgrade once the answer to it decided the outcome, for a
text protocol that may still upgrade (SMTP, IMAP, POP3, FTP, XMPP: see
`decode.textproto`) only once it has upgraded or can no longer, and for an
HTTP/1.x request once its head is whole (a Basic header may come in a later
segment). A connection where only the responder spoke is no TLS (TLS clients
speak first): a greeting or Telnet negotiation names its protocol, anything
else is `unknown-plaintext`. The table
classifies again when a connection ends, so an unanswered hello is still
reported. classify runs on every new segment until then, so it dispatches on
the first bytes before any regex or recogniser loop.

Public API: `classify(client, server, *, dst_port) -> Classification`, the
app name constants (TLS, HTTP, ... UNKNOWN_PLAINTEXT, UNKNOWN) and the
credentials values (HTTP_BASIC, FTP_LOGIN, ... TELNET_LOGIN).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from agent.decode.http import is_request, request_head
from agent.decode.tls import ClientHello, Incomplete, ServerHello, parse_client_hello, parse_server_hello
from agent.decode.textproto import (  # noqa: F401
    FIRST_BYTES, FTP, FTP_AUTH_TLS, GREETING_FIRST, IMAP, POP3, SMTP, STARTTLS, XMPP, XMPP_STARTTLS, greeting_app,
    text_protocol)
from agent.decode.tunnels import HTTP_CONNECT, SOCKS4, SOCKS5, http_connect, socks4, socks5  # noqa: F401
from agent.model import (  # noqa: F401  (the credentials values are part of this module's API)
    APP_TLS, APP_UNKNOWN, FTP_LOGIN, HTTP_BASIC, IMAP_AUTH, IMAP_LOGIN, POP3_AUTH, POP3_LOGIN, SMTP_AUTH, TELNET_LOGIN,
    TlsInfo)

LE_U32 = struct.Struct("<I")
MONGO_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
KAFKA_HEADER = struct.Struct("!ihhih")  # size, api_key, api_version, correlation_id, client_id len
PG_HEADER = struct.Struct("!II")  # PostgreSQL protocol §55.7: length, protocol or request code
DNS_HEADER = struct.Struct("!HHHHHHH")  # RFC 1035 §4.2.2 length + §4.1.1 header

TLS, HTTP, HTTP2, REDIS, POSTGRESQL, MYSQL, DNS = APP_TLS, "http", "http2", "redis", "postgresql", "mysql", "dns"
AMQP, KAFKA, MONGODB, LDAP, MQTT, RFB, TELNET = "amqp", "kafka", "mongodb", "ldap", "mqtt", "rfb", "telnet"
UNKNOWN_PLAINTEXT, UNKNOWN = "unknown-plaintext", APP_UNKNOWN
POSTGRESQL_SSL, MYSQL_SSL, LDAP_STARTTLS = "postgresql-ssl", "mysql-ssl", "ldap-starttls"

TLS_RECORD_TYPES = frozenset((20, 21, 22, 23))  # RFC 8446 §5.1 ChangeCipherSpec .. application_data
MIN_DECIDE = 8  # fewer unrecognised bytes than this may still become a known protocol
MAX_TUNNELS = 1  # tunnels unwrapped; a tunnel inside one is unknown-plaintext (bounds the recursion)
PG_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # PostgreSQL protocol §55.2.10, code 80877103
PG_PROTOCOL_3 = 0x00030000  # StartupMessage protocol 3.0
PG_CANCEL = 80877102
PG_GSSENC = 80877104
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
MYSQL_CLIENT_SSL = 0x0800  # MySQL capability flag CLIENT_SSL
MYSQL_PROTOCOL_41 = 0x0200
MQTT_CONNECT = re.compile(rb"\x10[\x80-\xff]{0,3}[\x00-\x7f]\x00(?:\x04MQTT|\x06MQIsdp)", re.S)  # MQTT 3.1.1 §3.1, 3.1
RFB_VERSION = b"RFB 00"  # RFC 6143 §7.1.1 ProtocolVersion "RFB 003.008\n", sent by both sides
MONGO_OPCODES = frozenset((2004, 2010, 2012, 2013))  # OP_QUERY, OP_COMMAND, OP_COMPRESSED, OP_MSG
LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"  # RFC 4511 §4.14.1
RESP_ARRAY = re.compile(rb"\*[0-9]{1,6}\r\n\$[0-9]{1,9}\r\n")  # Redis RESP command array
RESP_INLINE = re.compile(rb"[A-Za-z]{2,16}( [^\r\n]*)?\r?\n")
# RFC 854 commands: IAC, then SB (RFC 855 subnegotiation) or WILL, WONT, DO, DONT (0xFB..0xFE), then an option.
IAC, TELNET_SB, TELNET_DONT = 0xFF, 0xFA, 0xFE


@dataclass(slots=True, frozen=True)
class Classification:
    app: str
    tls: bool = False
    upgraded: str | None = None  # in-protocol upgrade before TLS: "starttls", "postgresql-ssl", ...
    complete: bool = True  # False: more bytes could change the answer
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    tunnel: str | None = None  # TLS found inside "socks4", "socks5" or "http-connect"
    credentials: str | None = None  # plaintext that sends a login in the clear: "http-basic", "smtp-auth", ...


# Answers without a hello are immutable and few: share them instead of building one per call.
_DECIDED = {app: Classification(app) for app in (
    HTTP, HTTP2, REDIS, POSTGRESQL, MYSQL, DNS, SMTP, IMAP, POP3, FTP, XMPP, AMQP, KAFKA, MONGODB, LDAP,
    MQTT, RFB, UNKNOWN_PLAINTEXT)}
_WAITING = {app: Classification(app, complete=False) for app in (
    UNKNOWN, UNKNOWN_PLAINTEXT, POSTGRESQL, MYSQL, LDAP, SMTP, IMAP, POP3, FTP, XMPP, RFB, HTTP)}
_FLAGGED = {credentials: Classification(app, credentials=credentials) for credentials, app in (
    (HTTP_BASIC, HTTP), (FTP_LOGIN, FTP), (POP3_LOGIN, POP3), (POP3_AUTH, POP3), (IMAP_LOGIN, IMAP),
    (IMAP_AUTH, IMAP), (SMTP_AUTH, SMTP), (TELNET_LOGIN, TELNET))}
_BASIC_WAITING = Classification(HTTP, complete=False, credentials=HTTP_BASIC)  # a head still arriving


def tls_info(cls: Classification) -> TlsInfo | None:
    """The handshake metadata of a TLS connection, as the model carries it (metadata only)."""
    if not cls.tls:
        return None
    hello, answer = cls.client_hello, cls.server_hello
    return TlsInfo(
        version=answer.version if answer else None,
        offered_versions=tuple(hello.offered_versions) if hello else (),
        sni=hello.sni if hello else None, alpn=tuple(hello.alpn) if hello else (),
        cipher=f"0x{answer.cipher:04x}" if answer else None,
        hello=hello)


def classify(client: bytes, server: bytes, *, dst_port: int) -> Classification:
    """Classify a connection from the first bytes each side sent."""
    return _classify(client, server, dst_port=dst_port, depth=0)


def _classify(client: bytes, server: bytes, *, dst_port: int, depth: int) -> Classification:
    """`classify` inside `depth` tunnels already unwrapped."""
    if not client:
        return _server_only(server, dst_port=dst_port) if server else _WAITING[UNKNOWN]
    first, got = client[0], None
    if first == IAC and _is_telnet(client):  # before TLS: an SSLv2 hello opening 0xFF is 32 KiB, never whole here
        return _FLAGGED[TELNET_LOGIN]
    if _looks_tls(client):
        got = _tls_at(client, server, upgraded=None)
        if got is not None:
            return got
    # Each recogniser runs only when the first bytes allow it to match; the
    # order below (upgrades, tunnels, plaintext) decides overlaps.
    if first == 0:
        got = _postgresql(client, server)
    if got is None and client[3:4] == b"\x01":
        got = _mysql(client, server, dst_port=dst_port)
    if got is None and first == 0x30:
        got = _ldap(client, server)
    if got is None and (first in FIRST_BYTES or server[:1] in GREETING_FIRST):
        got = _text(client, server, dst_port=dst_port)
    if got is not None:
        return got
    found = (socks4(client, server) if first == 4 else socks5(client, server) if first == 5 else
             http_connect(client, server) if first == 0x43 else None)
    if found is not None:
        if depth >= MAX_TUNNELS:  # e.g. SOCKS headers nested hundreds deep
            return _DECIDED[UNKNOWN_PLAINTEXT]
        return _inner(found, client, server, dst_port=dst_port, depth=depth)
    app = _plaintext(client, dst_port=dst_port)
    if app is not None:
        return _http(client) if app == HTTP else _DECIDED[app]
    if server[:1] == b"\xff" and _is_telnet(server):  # the responder negotiated first, the client typed
        return _FLAGGED[TELNET_LOGIN]
    return _DECIDED[UNKNOWN_PLAINTEXT] if len(client) >= MIN_DECIDE else _WAITING[UNKNOWN_PLAINTEXT]


def _server_only(server: bytes, *, dst_port: int) -> Classification:
    """Only the responder spoke. TLS clients speak first, so this is no TLS: a greeting names a
    protocol the client may still upgrade (answer_timeout or the end decides), Telnet negotiation
    decides Telnet, anything else is plaintext."""
    if server[0] in TLS_RECORD_TYPES and server[1:2] == b"\x03":  # a TLS server: the client's bytes were lost
        return _WAITING[UNKNOWN]
    if len(server) >= 5 and server[3] == 0 and server[4] == 0x0A:  # MySQL handshake v10
        return _WAITING[MYSQL]
    if server.startswith(RFB_VERSION):
        return _WAITING[RFB]
    if server[0] == IAC and _is_telnet(server):  # Telnet: no upgrade to wait for, the login comes in the clear
        return _FLAGGED[TELNET_LOGIN]
    return _WAITING[greeting_app(server, dst_port=dst_port) or UNKNOWN_PLAINTEXT]


def _looks_tls(data: bytes) -> bool:
    return data[0] == 0x16 or (data[0] & 0x80 != 0 and data[2:3] == b"\x01")


def _tls_at(client: bytes, server: bytes, *, upgraded: str | None) -> Classification | None:
    """TLS if `client` starts with a ClientHello; None when it does not."""
    hello = parse_client_hello(client)
    if hello is None:
        return None
    if hello.__class__ is Incomplete:
        return Classification(TLS, tls=True, upgraded=upgraded, complete=False)
    return _tls_answered(hello, server, upgraded=upgraded)


def classify_answer(waiting: Classification, server: bytes) -> Classification:
    """`classify(client, server)` for a plain TLS connection (no upgrade, no tunnel) whose
    ClientHello `waiting` already holds: the client's bytes only grew, so only the
    server's are read again."""
    assert waiting.client_hello is not None and waiting.upgraded is None and waiting.tunnel is None
    return _tls_answered(waiting.client_hello, server, upgraded=None)


def _tls_answered(hello: ClientHello, server: bytes, *, upgraded: str | None) -> Classification:
    answer = parse_server_hello(server) if server else None
    if answer.__class__ is ServerHello:
        return Classification(TLS, tls=True, upgraded=upgraded, client_hello=hello, server_hello=answer)
    # No or partial answer: wait. Anything else (an alert, text) decided the connection.
    return Classification(TLS, tls=True, upgraded=upgraded, complete=bool(server) and answer is None,
                          client_hello=hello)


def _after_upgrade(rest: bytes, server: bytes, *, app: str, upgraded: str) -> Classification:
    """What follows an accepted-or-declined upgrade request: TLS, or plaintext `app`."""
    if not rest:
        return _WAITING[app]
    if _looks_tls(rest):
        got = _tls_at(rest, server, upgraded=upgraded)
        if got is not None:
            return got
    return _DECIDED[app]  # declined upgrade, client went on in plaintext


# --- tunnels: the real conversation starts at an offset -------------------------

def _inner(found: tuple[str, int | None, int], client: bytes, server: bytes, *, dst_port: int,
           depth: int) -> Classification:
    tunnel, c_off, s_off = found
    if c_off is None or c_off >= len(client):
        return Classification(UNKNOWN, complete=False, tunnel=tunnel)
    inner = _classify(client[c_off:], server[s_off:], dst_port=dst_port, depth=depth + 1)
    return Classification(
        inner.app, tls=inner.tls, upgraded=inner.upgraded, complete=inner.complete,
        client_hello=inner.client_hello, server_hello=inner.server_hello, tunnel=tunnel,
        credentials=inner.credentials,
    )


# --- in-protocol upgrades --------------------------------------------------------

def _postgresql(client: bytes, server: bytes) -> Classification | None:
    if client.startswith(PG_SSL_REQUEST):
        if len(client) == 8 and server[:1] not in (b"", b"S"):
            return _DECIDED[POSTGRESQL]  # "N" (or an error): the server declined TLS
        return _after_upgrade(client[8:], server[1:], app=POSTGRESQL, upgraded=POSTGRESQL_SSL)
    if len(client) >= 4 and PG_SSL_REQUEST.startswith(client):
        return _WAITING[POSTGRESQL]
    if len(client) >= 8:
        length, code = PG_HEADER.unpack_from(client)
        if code == PG_GSSENC and length == 8:
            return Classification(POSTGRESQL, upgraded="postgresql-gssenc")
        if (code == PG_PROTOCOL_3 and 8 < length < 10000) or (code == PG_CANCEL and length == 16):
            return _DECIDED[POSTGRESQL]
    return None


def _mysql(client: bytes, server: bytes, *, dst_port: int) -> Classification | None:
    """MySQL: the server greets (protocol 10), the client answers at sequence id 1."""
    greeted = len(server) >= 5 and server[3] == 0 and server[4] == 0x0A
    if len(client) < 8 or client[3] != 1:
        return None
    length = int.from_bytes(client[:3], "little")
    caps = LE_U32.unpack_from(client, 4)[0]
    filler_ok = len(client) < 36 or client[13:36] == bytes(23)
    if not (caps & MYSQL_PROTOCOL_41 and filler_ok and (greeted or dst_port == 3306 or len(client) >= 36)):
        return None
    if caps & MYSQL_CLIENT_SSL and length == 32:  # SSLRequest: capabilities only, then TLS
        s_off = 4 + int.from_bytes(server[:3], "little") if greeted else len(server)
        return _after_upgrade(client[36:], server[s_off:], app=MYSQL, upgraded=MYSQL_SSL)
    return _DECIDED[MYSQL]


def _ldap(client: bytes, server: bytes) -> Classification | None:
    """LDAPMessage (RFC 4511 §4.1.1): SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n] }."""
    size = _ber_size(client)
    if size is None or len(client) < 5:
        return None
    head = client[1:]
    skip = 1 if head[0] < 0x80 else 1 + (head[0] & 0x7F)
    if client[1 + skip:2 + skip] != b"\x02" or len(client) < 4 + skip:
        return None
    op_at = 1 + skip + 2 + client[2 + skip]
    if op_at >= len(client) or not 0x60 <= client[op_at] <= 0x7F:
        return None
    if LDAP_STARTTLS_OID not in client[:size]:
        return _DECIDED[LDAP]
    if len(client) < size:
        return _WAITING[LDAP]
    reply = _ber_size(server)
    return _after_upgrade(client[size:], server[reply or len(server):], app=LDAP, upgraded=LDAP_STARTTLS)


def _ber_size(data: bytes) -> int | None:
    """Total size of a BER SEQUENCE at the start of `data` (definite length)."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    if data[1] < 0x80:
        return 2 + data[1]
    n = data[1] & 0x7F
    if not 1 <= n <= 4 or len(data) < 2 + n:
        return None
    return 2 + n + int.from_bytes(data[2:2 + n], "big")


def _text(client: bytes, server: bytes, *, dst_port: int) -> Classification | None:
    """SMTP, IMAP, POP3, FTP, XMPP: plaintext until the client asks to upgrade (decode.textproto)."""
    got = text_protocol(client, server, dst_port=dst_port)
    if got is None:
        return None
    if got.upgraded is None:
        if got.credentials is not None:  # a login or AUTH committed it to plaintext
            return _FLAGGED[got.credentials]
        return (_DECIDED if got.decided else _WAITING)[got.app]
    return _after_upgrade(client[got.client_at:], server[got.server_at:], app=got.app, upgraded=got.upgraded)


# --- plaintext recognisers ------------------------------------------------------

def _plaintext(client: bytes, *, dst_port: int) -> str | None:
    first = client[0]
    if first == 0x50 and len(client) >= 4 and H2_PREFACE.startswith(client[:len(H2_PREFACE)]):
        return HTTP2
    if is_request(client):
        return HTTP
    if first == 0x41 and client.startswith(b"AMQP"):
        return AMQP
    if first == 0x10 and MQTT_CONNECT.match(client):
        return MQTT
    if first == 0x52 and client.startswith(RFB_VERSION):
        return RFB
    if (first == 0x2A and RESP_ARRAY.match(client)) or (dst_port == 6379 and RESP_INLINE.match(client)):
        return REDIS
    if _is_mongodb(client):
        return MONGODB
    if _is_kafka(client, dst_port=dst_port):
        return KAFKA
    if _is_dns(client, dst_port=dst_port):
        return DNS
    return None


def _http(client: bytes) -> Classification:
    """HTTP/1.x: decided once the request's head is whole (decode.http), flagged when it sends a Basic password."""
    whole, credentials = request_head(client)
    if credentials is None:
        return _DECIDED[HTTP] if whole else _WAITING[HTTP]
    return _FLAGGED[credentials] if whole else _BASIC_WAITING


def _is_telnet(data: bytes) -> bool:
    """Telnet option negotiation (RFC 854, 855): IAC, then SB or WILL/WONT/DO/DONT, then an option code."""
    return len(data) >= 3 and data[0] == IAC and TELNET_SB <= data[1] <= TELNET_DONT


def _is_mongodb(client: bytes) -> bool:
    if len(client) < MONGO_HEADER.size:
        return False
    length, _, response_to, opcode = MONGO_HEADER.unpack_from(client)
    return opcode in MONGO_OPCODES and response_to == 0 and 16 < length <= 48 * 1024 * 1024


def _is_kafka(client: bytes, *, dst_port: int) -> bool:
    """Kafka request header v1+: size, api_key, api_version, correlation_id, client_id."""
    if len(client) < KAFKA_HEADER.size:
        return False
    size, api_key, api_version, _, id_len = KAFKA_HEADER.unpack_from(client)
    if not (10 <= size <= 100 * 1024 * 1024 and 0 <= api_key <= 100 and 0 <= api_version <= 30):
        return False
    if id_len == -1:
        return dst_port == 9092
    client_id = client[14:14 + id_len]
    return 0 < id_len <= 255 and (len(client_id) < id_len or client_id.isascii()) and (
        dst_port == 9092 or (client_id.isascii() and client_id.decode().isprintable()))


def _is_dns(client: bytes, *, dst_port: int) -> bool:
    """DNS over TCP (RFC 1035 §4.2.2): a 2-byte length, then a query header."""
    if len(client) < DNS_HEADER.size:
        return False
    length, _, flags, qd, an, ns, ar = DNS_HEADER.unpack_from(client)
    query = flags & 0x8000 == 0 and (flags >> 11) & 0xF in (0, 1, 2, 4, 5)
    plain = an == 0 and ns == 0 and ar <= 1
    return query and qd == 1 and length >= 17 and (dst_port == 53 or plain)
