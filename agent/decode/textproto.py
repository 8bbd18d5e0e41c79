"""Text protocols that may upgrade to TLS in-protocol: SMTP, IMAP, POP3, FTP, XMPP (decode stage).

Real clients do not ask for TLS in their first bytes: an SMTP client sends
`EHLO`, reads the server's answer, then `STARTTLS` (RFC 3207); IMAP clients ask
`CAPABILITY` first (RFC 2595), FTP clients `FEAT` before `AUTH TLS` (RFC 4217),
XMPP clients open a stream and read its features before `<starttls/>`
(RFC 6120 §5). So such a connection is decided only once it has upgraded or
can no longer: the client sent a command that commits it to plaintext (a
login, a mail transaction), or `MAX_LINES` commands, or `MAX_BYTES`, without
asking. Until then `decode.app.classify` answers "not complete", and the flow
table's `answer_timeout` decides whatever is still pending. A committing
command that sends a login (FTP `USER` but anonymous, and `PASS`; POP3 `USER`,
`PASS`, `APOP` and `AUTH` with a mechanism; IMAP `LOGIN` and `AUTHENTICATE`;
SMTP `AUTH`) is named in `Text.credentials`: it went out before any TLS. A
bare `AUTH` only asks a POP3 server for its mechanisms, and a client may
still ask for `STLS` after it: it commits to nothing.

The server speaks first in all of these except XMPP, so a greeting names the
protocol even when the client sent nothing yet. `220` greets in both SMTP and
FTP: the client's first command tells them apart, else the greeting's text,
else the port. Bytes in, value out; malformed input never raises.

Public API: `text_protocol(client, server, *, dst_port) -> Text | None`,
`greeting_app(server, *, dst_port)` and the app and upgrade names (the credentials names are model's).
"""
from __future__ import annotations

import re
from typing import NamedTuple

from agent.model import FTP_LOGIN, IMAP_AUTH, IMAP_LOGIN, POP3_AUTH, POP3_LOGIN, SMTP_AUTH

SMTP, IMAP, POP3, FTP, XMPP = "smtp", "imap", "pop3", "ftp", "xmpp"
STARTTLS, FTP_AUTH_TLS, XMPP_STARTTLS = "starttls", "ftp-auth-tls", "xmpp-starttls"

MAX_LINES = 4  # commands before the upgrade: EHLO STARTTLS; CAPABILITY ID STARTTLS; FEAT AUTH TLS
MAX_LINE = 512  # RFC 5321 §4.5.3.1.4 command line; longer is not a command of these protocols
MAX_XML = 4096  # XMPP client bytes before <starttls/> (a stream header and a few stanzas)
# The first alternative that matches names the protocol, when the server has not greeted (yet).
CLIENT_FIRST = re.compile(rb"(EHLO |HELO |LHLO )"
                          rb"|([A-Za-z0-9.]{1,20} (?:CAPABILITY|LOGIN|STARTTLS|AUTHENTICATE|ID|NOOP)\b)"
                          rb"|(CAPA|STLS|USER |APOP |AUTH (?!TLS|SSL))"
                          rb"|(AUTH (?:TLS|SSL))", re.I)
FIRST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.<")
GREETING_FIRST = (b"2", b"*", b"+")  # "220 ", "* OK", "+OK"
# The upgrade request, a whole line: RFC 3207 STARTTLS, RFC 2595 STARTTLS (tagged) and STLS, RFC 4217 AUTH.
UPGRADE = re.compile(rb"(?:[A-Za-z0-9.]{1,20} )?(?:STARTTLS|STLS|AUTH +(?:TLS|SSL)(?:-[CP])?) *\r?\n", re.I)
# Commands after which the client stays in plaintext: it logs in or moves mail without TLS.
COMMIT = frozenset(b"MAIL RCPT DATA AUTH AUTHENTICATE LOGIN SELECT EXAMINE USER PASS APOP RETR STOR LIST".split())
# The committing commands that send a login: RFC 959 §4.1.1, RFC 1939 §7, RFC 5034, RFC 9051 §6.2, RFC 4954.
CREDENTIALS = {(FTP, b"USER"): FTP_LOGIN, (FTP, b"PASS"): FTP_LOGIN, (POP3, b"USER"): POP3_LOGIN,
               (POP3, b"PASS"): POP3_LOGIN, (POP3, b"APOP"): POP3_LOGIN, (POP3, b"AUTH"): POP3_AUTH,
               (IMAP, b"LOGIN"): IMAP_LOGIN, (IMAP, b"AUTHENTICATE"): IMAP_AUTH, (SMTP, b"AUTH"): SMTP_AUTH}
FTP_ANONYMOUS = frozenset((b"ANONYMOUS", b"FTP"))  # RFC 1635: the public login, no password of anyone's
SMTP_HELLO = frozenset((b"EHLO", b"HELO", b"LHLO"))
FTP_FIRST = frozenset(b"USER AUTH FEAT SYST OPTS CLNT HOST PBSZ".split())
XML_STARTTLS = re.compile(rb"<starttls\b[^>]*?(?:/>|>\s*</starttls>)")  # RFC 6120 §5.4.2.1
XML_PROCEED = re.compile(rb"<proceed\b[^>]*?(?:/>|>\s*</proceed>)")  # RFC 6120 §5.4.2.3
XML_PLAINTEXT = re.compile(rb"<(?:auth|iq|message|presence)\b")  # SASL or stanzas before TLS


class Text(NamedTuple):
    app: str
    upgraded: str | None = None  # the upgrade the client asked for
    client_at: int = 0  # where the client's TLS starts (after its request)
    server_at: int = 0  # where the server's TLS starts (after its go-ahead)
    decided: bool = False  # no upgrade can come any more: plaintext `app`
    credentials: str | None = None  # the login command that decided it (FTP_LOGIN, ...)


def text_protocol(client: bytes, server: bytes, *, dst_port: int) -> Text | None:
    """The text protocol of a connection whose client sent `client`, and where it upgrades."""
    if client[:1] == b"<":
        return _xmpp(client, server) if client.startswith((b"<?xml", b"<stream:stream")) else None
    app = _app(client, server, dst_port=dst_port)
    if app is None:
        return None
    pos = 0
    for _ in range(MAX_LINES):
        if pos == len(client):  # waiting for the next command
            return Text(app)
        nl = client.find(b"\n", pos, pos + MAX_LINE)
        if nl < 0:  # a command still arriving, or a line no command is
            return Text(app, decided=len(client) - pos >= MAX_LINE)
        if UPGRADE.fullmatch(client, pos, nl + 1):
            upgrade = FTP_AUTH_TLS if app == FTP else STARTTLS
            return Text(app, upgrade, nl + 1, _tls_start(server))
        words = client[pos:nl].split(None, 2)
        at = 1 if app == IMAP and len(words) > 1 else 0  # IMAP commands follow a tag
        verb = words[at].upper() if words else b""
        if verb in COMMIT and (verb != b"AUTH" or len(words) > at + 1):  # a bare AUTH lists mechanisms
            return Text(app, decided=True, credentials=_credentials(app, verb, words[at + 1:]))
        pos = nl + 1
    return Text(app, decided=True)


def _credentials(app: str, verb: bytes, args: list[bytes]) -> str | None:
    """The login a committing command sends in the clear, if any (not MAIL, SELECT, ... nor anonymous FTP)."""
    if app == FTP and verb == b"USER" and (not args or args[0].upper() in FTP_ANONYMOUS):
        return None
    return CREDENTIALS.get((app, verb))


def greeting_app(server: bytes, *, dst_port: int) -> str | None:
    """The protocol a server's greeting names, before the client said anything."""
    if server.startswith((b"220 ", b"220-")):
        return _smtp_or_ftp(b"", server, dst_port=dst_port)
    if server.startswith((b"* OK", b"* PREAUTH")):
        return IMAP
    if server.startswith(b"+OK"):
        return POP3
    return None


def _app(client: bytes, server: bytes, *, dst_port: int) -> str | None:
    if server.startswith((b"220 ", b"220-")):
        return _smtp_or_ftp(client, server, dst_port=dst_port)
    app = greeting_app(server, dst_port=dst_port)
    if app is not None:
        return app
    cmd = CLIENT_FIRST.match(client)
    return None if cmd is None else (SMTP, IMAP, POP3, FTP)[cmd.lastindex - 1]


def _smtp_or_ftp(client: bytes, server: bytes, *, dst_port: int) -> str:
    """A `220` greeting: SMTP (RFC 5321 §4.2) or FTP (RFC 959 §4.2)."""
    verb = client[:5].split(None, 1)[0].upper() if client[:1].isalpha() else b""
    if verb in SMTP_HELLO:
        return SMTP
    if verb in FTP_FIRST:
        return FTP
    greeting = server[:server.find(b"\n", 0, MAX_LINE)].upper()
    if b"FTP" in greeting:
        return FTP
    if b"SMTP" in greeting:
        return SMTP
    return FTP if dst_port in (21, 990) else SMTP


def _xmpp(client: bytes, server: bytes) -> Text:
    """XMPP STARTTLS (RFC 6120 §5.4): <starttls/> answered by <proceed/>, then TLS on both sides."""
    ask = XML_STARTTLS.search(client, 0, MAX_XML)
    if ask is None:
        decided = len(client) >= MAX_XML or XML_PLAINTEXT.search(client, 0, MAX_XML) is not None
        return Text(XMPP, decided=decided)
    go = XML_PROCEED.search(server)
    return Text(XMPP, XMPP_STARTTLS, ask.end(), len(server) if go is None else go.end())


def _tls_start(server: bytes) -> int:
    """Skip the server's text lines up to where its TLS records begin."""
    pos = 0
    while pos < len(server) and server[pos] != 0x16:
        nl = server.find(b"\n", pos)
        if nl < 0:
            return len(server)
        pos = nl + 1
    return pos
