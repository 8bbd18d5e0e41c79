"""HTTP/1.x requests in a client's first bytes: is it one, is its head whole, does it send a password (decode stage).

`decode.app.classify` asks `is_request` when nothing earlier claimed the
bytes, then `request_head` how far the request's head got. The bytes are
HTTP from the method on, but the answer is final only once the head (the
request line and header fields, up to the empty line: RFC 9112 §2.1) is whole
or the flow table will feed no more bytes (`MAX_HEAD`): a header in a later
segment must still be seen. What is looked for there is an `Authorization` or
`Proxy-Authorization` field whose scheme is `Basic` (RFC 9110 §11.6.2,
§11.7.2; RFC 7617): a user and password any observer can read. Other schemes
(Digest sends a hash, Bearer a token) send no user's password and are not
flagged. Only presence is reported, never the value.

agent/_compact.h's `http_request` is the compiled twin for one whole segment:
it keeps a flow out of Python only when `request_head` would call its head
whole and free of Basic credentials.

Public API: `is_request(client)`, `request_head(client) -> (whole, credentials)`,
`HTTP_BASIC`. Bytes in, value out; malformed input never raises.
"""
from __future__ import annotations

import re

from agent.model import HTTP_BASIC


HTTP_METHODS = frozenset(  # RFC 9110 §9 plus WebDAV/PATCH and UPnP eventing (GENA: UPnP Device Architecture §4)
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE "
    b"LOCK UNLOCK REPORT NOTIFY SUBSCRIBE UNSUBSCRIBE".split())
# Any other method: a whole HTTP/1.x request line (RFC 9112 §3: method SP request-target SP HTTP-version).
HTTP_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20} [^ \r\n]{1,2048} HTTP/1\.[01]\r?\n")
MAX_METHOD = max(map(len, HTTP_METHODS))
MAX_HEAD = 16384  # flows.table.CLASSIFY_BYTES: the client bytes the table keeps; a longer head is decided as is
# A whole field line (RFC 9112 §5: field-name ":" OWS field-value) whose auth-scheme is Basic, any case.
BASIC_FIELD = re.compile(rb"\n(?:proxy-)?authorization:[ \t]*basic(?:[ \t\r][^\n]*)?\n", re.I)


def is_request(client: bytes) -> bool:
    """Whether `client` starts an HTTP/1.x request: a known method and a space, or a whole request line."""
    space = client.find(b" ", 1, MAX_METHOD + 1)
    return space > 0 and client[:space] in HTTP_METHODS or HTTP_REQUEST_LINE.match(client) is not None


def request_head(client: bytes) -> tuple[bool, str | None]:
    """Whether the head of the request `client` starts is whole (or as long as it will get), and the
    credentials its whole field lines send in the clear (HTTP_BASIC or None)."""
    crlf, lf = client.find(b"\n\r\n", 0, MAX_HEAD), client.find(b"\n\n", 0, MAX_HEAD)
    end = min(crlf, lf) if crlf >= 0 and lf >= 0 else max(crlf, lf)  # the empty line ending the head
    whole = end >= 0 or len(client) >= MAX_HEAD
    stop = end + 1 if end >= 0 else min(len(client), MAX_HEAD)  # the body is not looked at
    return whole, HTTP_BASIC if BASIC_FIELD.search(client, 0, stop) is not None else None
