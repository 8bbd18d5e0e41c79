"""TLS ClientHello/ServerHello decoder (decode stage).

`decode.app.classify` hands us the reassembled first bytes of a TCP direction;
we say whether they are a TLS handshake and pull out the metadata flowwarden
reports (versions, SNI, ALPN, cipher suites) and fingerprints (JA4, JA3). Bytes
in, value out: `Incomplete(needed)` when the handshake is cut short, `None`
when the bytes are not a TLS hello. Malformed lengths never raise.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from agent.decode.ja4 import is_grease, ja3, ja4

RECORD_HEADER = struct.Struct("!BHH")  # RFC 8446 §5.1: type, legacy_record_version, length
U16 = struct.Struct("!H")

CONTENT_HANDSHAKE = 22  # RFC 8446 §5.1
HANDSHAKE_CLIENT_HELLO = 1  # RFC 8446 §4
HANDSHAKE_SERVER_HELLO = 2
MAX_RECORD = 1 << 14  # RFC 8446 §5.1: longer plaintext records are record_overflow
MAX_HANDSHAKE = 1 << 16  # flowwarden: a hello bigger than this is hostile, not TLS

EXT_SERVER_NAME = 0x0000  # RFC 6066 §3
EXT_SUPPORTED_GROUPS = 0x000A  # RFC 8422 §5.1.1
EXT_EC_POINT_FORMATS = 0x000B  # RFC 8422 §5.1.2
EXT_SIGNATURE_ALGORITHMS = 0x000D  # RFC 8446 §4.2.3
EXT_ALPN = 0x0010  # RFC 7301 §3.1
EXT_SUPPORTED_VERSIONS = 0x002B  # RFC 8446 §4.2.1
SNI_HOST_NAME = 0  # RFC 6066 §3

VERSIONS = {  # RFC 6101, 2246, 4346, 5246, 8446; 0x0002 is SSL 2.0's version
    0x0002: "ssl2", 0x0300: "ssl3", 0x0301: "1.0", 0x0302: "1.1",
    0x0303: "1.2", 0x0304: "1.3",
}
VERSION_ORDER = ("ssl2", "ssl3", "1.0", "1.1", "1.2", "1.3")


def version_name(value: int) -> str:
    return VERSIONS.get(value) or f"0x{value:04x}"


@dataclass(slots=True, frozen=True)
class Incomplete:
    """More bytes are needed: at least `needed` bytes from the start in total."""
    needed: int


@dataclass(slots=True, frozen=True)
class ClientHello:
    legacy_version: str
    offered_versions: tuple[str, ...]  # supported_versions minus GREASE, else legacy_version
    sni: str | None
    alpn: tuple[str, ...]
    ciphers: tuple[int, ...]  # as sent, GREASE included
    extensions: tuple[int, ...]  # as sent, GREASE included
    sig_algs: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    legacy_version_code: int = 0
    version_codes: tuple[int, ...] = ()  # supported_versions as sent
    alpn_first: bytes | None = None  # first ALPN value, raw (JA4 reads its bytes)
    length: int = 0  # bytes of the stream the hello's records occupy
    ja4: str = ""
    ja3: str = ""

    @property
    def highest_version(self) -> str | None:
        known = [v for v in self.offered_versions if v in VERSION_ORDER]
        return max(known, key=VERSION_ORDER.index) if known else None


@dataclass(slots=True, frozen=True)
class ServerHello:
    version: str  # negotiated: supported_versions (TLS 1.3) else legacy_version
    cipher: int
    extensions: tuple[int, ...] = ()


class _Malformed(Exception):
    """A length that lies inside a hello: the bytes are not a valid handshake."""


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf, self.pos = buf, pos
        self.end = len(buf) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Malformed
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return U16.unpack(self.take(2))[0]

    def vector(self, width: int) -> "_Reader":
        n = self.u8() if width == 1 else self.u16()
        start = self.pos
        self.take(n)
        return _Reader(self.buf, start, start + n)

    def left(self) -> int:
        return self.end - self.pos

    def take_all(self) -> bytes:
        return self.take(self.left())

    def u16s(self) -> tuple[int, ...]:
        if self.left() % 2:
            raise _Malformed
        raw = self.take(self.left())
        return struct.unpack(f"!{len(raw) // 2}H", raw)


def _handshake(data: bytes, msg_type: int) -> tuple[bytes, int] | Incomplete | None:
    """Join handshake records until the first message is whole.

    Returns (message body, stream bytes consumed). A hello may span several
    records (RFC 8446 §5.1 allows fragmenting handshake messages).
    """
    body = bytearray()
    pos = 0
    while True:
        if len(data) < pos + RECORD_HEADER.size:
            return _need(data, pos, pos + RECORD_HEADER.size)
        ctype, version, length = RECORD_HEADER.unpack_from(data, pos)
        if ctype != CONTENT_HANDSHAKE or version >> 8 != 3 or length > MAX_RECORD:
            return None
        if length == 0:
            return None  # RFC 8446 §5.1: zero-length handshake fragments are forbidden
        end = pos + RECORD_HEADER.size + length
        if len(data) < end:
            first = data[pos + RECORD_HEADER.size:pos + RECORD_HEADER.size + 1]
            if not body and first and first[0] != msg_type:
                return None
            return Incomplete(end)
        body += data[pos + RECORD_HEADER.size:end]
        pos = end
        if len(body) >= 4:
            if body[0] != msg_type:
                return None
            msg_len = int.from_bytes(body[1:4], "big")
            if msg_len > MAX_HANDSHAKE:
                return None
            if len(body) >= 4 + msg_len:
                return bytes(body[4:4 + msg_len]), pos


def _need(data: bytes, pos: int, needed: int) -> Incomplete | None:
    # A partial record header is judged on what it shows so far.
    head = data[pos:needed]
    if head[:1] not in (b"", bytes([CONTENT_HANDSHAKE])) or (len(head) > 1 and head[1] != 3):
        return None
    return Incomplete(needed)


def parse_client_hello(data: bytes) -> ClientHello | Incomplete | None:
    """The first ClientHello of a client stream; None when it is not TLS."""
    if data[:1] and data[0] & 0x80 and len(data) >= 3 and data[2] == HANDSHAKE_CLIENT_HELLO:
        return _parse_sslv2(data)
    got = _handshake(data, HANDSHAKE_CLIENT_HELLO)
    if not isinstance(got, tuple):
        return got
    body, consumed = got
    try:
        return _client_hello(_Reader(body), consumed)
    except _Malformed:
        return None


def _client_hello(r: _Reader, consumed: int) -> ClientHello:
    legacy = r.u16()
    r.take(32)  # random
    r.vector(1)  # legacy_session_id
    ciphers = r.vector(2).u16s()
    r.vector(1)  # legacy_compression_methods
    fields: dict = {"extensions": []}
    if r.left():  # extensions are optional before TLS 1.2 (RFC 5246 §7.4.1.2)
        exts = r.vector(2)
        while exts.left():
            ext_type = exts.u16()
            _client_extension(ext_type, exts.vector(2), fields)
            fields["extensions"].append(ext_type)
    codes = fields.get("versions", ())
    offered = tuple(version_name(v) for v in codes if not is_grease(v))
    if not offered:
        offered = (version_name(legacy),)
    alpn_raw = fields.get("alpn", ())
    hello = ClientHello(
        legacy_version=version_name(legacy),
        offered_versions=offered,
        sni=fields.get("sni"),
        alpn=tuple(v.decode("utf-8", "backslashreplace") for v in alpn_raw),
        ciphers=ciphers,
        extensions=tuple(fields["extensions"]),
        sig_algs=fields.get("sig_algs", ()),
        groups=fields.get("groups", ()),
        point_formats=fields.get("point_formats", ()),
        legacy_version_code=legacy,
        version_codes=codes,
        alpn_first=alpn_raw[0] if alpn_raw else None,
        length=consumed,
    )
    return _with_fingerprints(hello)


def _with_fingerprints(hello: ClientHello) -> ClientHello:
    return replace(hello, ja4=ja4(hello), ja3=ja3(hello))


def _client_extension(ext_type: int, r: _Reader, fields: dict) -> None:
    """Decode the extensions we report; a lying inner length drops only that value."""
    try:
        if ext_type == EXT_SERVER_NAME:
            fields["sni"] = _server_name(r.vector(2))
        elif ext_type == EXT_ALPN:
            names = r.vector(2)
            values = []
            while names.left():
                values.append(names.vector(1).take_all())
            fields["alpn"] = tuple(values)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            fields["versions"] = r.vector(1).u16s()
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            fields["sig_algs"] = r.vector(2).u16s()
        elif ext_type == EXT_SUPPORTED_GROUPS:
            fields["groups"] = r.vector(2).u16s()
        elif ext_type == EXT_EC_POINT_FORMATS:
            fields["point_formats"] = tuple(r.vector(1).take_all())
    except _Malformed:
        pass


def _server_name(names: _Reader) -> str | None:
    while names.left():
        name_type = names.u8()
        value = names.vector(2).take_all()
        if name_type == SNI_HOST_NAME:
            return value.decode("utf-8", "backslashreplace")
    return None


def _parse_sslv2(data: bytes) -> ClientHello | Incomplete | None:
    """SSL 2.0-compatible CLIENT-HELLO (RFC 6101 appendix E.2), sent by old clients."""
    length = ((data[0] & 0x7F) << 8) | data[1]
    if len(data) < 11:
        return Incomplete(11)
    version, spec_len, sid_len, chal_len = struct.unpack_from("!HHHH", data, 3)
    if version >> 8 not in (0, 3) or spec_len % 3 or length != 9 + spec_len + sid_len + chal_len:
        return None
    if not 16 <= chal_len <= 32 or sid_len not in (0, 16):
        return None
    if len(data) < 2 + length:
        return Incomplete(2 + length)
    specs = data[11:11 + spec_len]
    ciphers = tuple(
        int.from_bytes(specs[i + 1:i + 3], "big") for i in range(0, spec_len, 3) if specs[i] == 0
    )
    name = version_name(version)
    hello = ClientHello(
        legacy_version=name, offered_versions=(name,), sni=None, alpn=(),
        ciphers=ciphers, extensions=(), legacy_version_code=version, length=2 + length,
    )
    return _with_fingerprints(hello)


def parse_server_hello(data: bytes) -> ServerHello | Incomplete | None:
    """The ServerHello opening a server stream; None when it is not TLS."""
    got = _handshake(data, HANDSHAKE_SERVER_HELLO)
    if not isinstance(got, tuple):
        return got
    r = _Reader(got[0])
    try:
        legacy = r.u16()
        r.take(32)  # random (HelloRetryRequest too: its version is still 1.3)
        r.vector(1)  # legacy_session_id_echo
        cipher = r.u16()
        r.u8()  # legacy_compression_method
        version, ext_types = legacy, []
        if r.left():
            exts = r.vector(2)
            while exts.left():
                ext_type = exts.u16()
                value = exts.vector(2)
                ext_types.append(ext_type)
                if ext_type == EXT_SUPPORTED_VERSIONS and value.left() == 2:
                    version = value.u16()
    except _Malformed:
        return None
    return ServerHello(version=version_name(version), cipher=cipher, extensions=tuple(ext_types))
