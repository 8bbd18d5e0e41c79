"""TLS ClientHello/ServerHello decoder (decode stage).

`decode.app.classify` hands us the reassembled first bytes of a TCP direction;
we say whether they are a TLS handshake and pull out the metadata flowwarden
reports (versions, SNI, ALPN, cipher suites) and fingerprints (JA4, JA3). Bytes
in, value out: `Incomplete(needed)` when the handshake is cut short, `None`
when the bytes are not a TLS hello. Malformed lengths never raise.

This runs on the flow path, once per new segment until a connection is
classified, so parsing is one pass of index arithmetic over the buffer: the
outer structure is checked, SNI, ALPN and supported_versions are decoded, and
everything only the fingerprints need (cipher, extension, signature algorithm,
group and point format lists; JA4; JA3) is decoded from kept raw bytes on
first access.

Public API: `parse_client_hello`, `parse_server_hello`, `ClientHello`,
`ServerHello`, `Incomplete`, `version_name`, `VERSIONS`, `VERSION_ORDER`. TLS 1.3 drafts
(0x7fNN, Chrome's 0x7e01/0x7e02) are all named `1.3-draft`, ranked with 1.3 for minimum versions.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.model import TLS_VERSIONS, highest_version

from agent.decode import ja4 as fingerprint
from agent.decode.ja4 import GREASE

RECORD_HEADER = struct.Struct("!BHH")  # RFC 8446 §5.1: type, legacy_record_version, length
EXT_HEADER = struct.Struct("!HH")  # RFC 8446 §4.2: extension_type, extension_data length
SSL2_HEADER = struct.Struct("!HHHH")  # RFC 6101 E.2: version, cipher_spec, session_id, challenge lengths

CONTENT_HANDSHAKE = 22  # RFC 8446 §5.1
HANDSHAKE_CLIENT_HELLO = 1  # RFC 8446 §4
HANDSHAKE_SERVER_HELLO = 2
MAX_RECORD = 1 << 14  # RFC 8446 §5.1: longer plaintext records are record_overflow
MAX_HANDSHAKE = 1 << 16  # flowwarden: a hello bigger than this is hostile, not TLS

EXT_SERVER_NAME = 0x0000  # RFC 6066 §3
EXT_ALPN = 0x0010  # RFC 7301 §3.1
EXT_SUPPORTED_VERSIONS = 0x002B  # RFC 8446 §4.2.1
SNI_HOST_NAME = 0  # RFC 6066 §3
_MALFORMED = object()  # an inner length lies: keep what an earlier copy of the extension said

VERSIONS = {  # RFC 6101, 2246, 4346, 5246, 8446; 0x0002 is SSL 2.0's version
    0x0002: "ssl2", 0x0300: "ssl3", 0x0301: "1.0", 0x0302: "1.1",
    0x0303: "1.2", 0x0304: "1.3",
}
VERSION_ORDER = TLS_VERSIONS
DRAFT_13 = "1.3-draft"  # draft-ietf-tls-tls13-NN (0x7fNN) and Chrome's experiments on them (0x7e01, 0x7e02)
DRAFT_NO_SESSION_ID = 22  # before draft 22 a ServerHello had no legacy_session_id_echo or compression
ALERT_WARNING = 1  # RFC 5246 §7.2: a warning alert does not end the connection


def version_name(value: int) -> str:
    if value >> 8 == 0x7F or 0x7E01 <= value <= 0x7E02:
        return DRAFT_13
    return VERSIONS.get(value) or f"0x{value:04x}"


def _u16s(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f"!{len(raw) >> 1}H", raw)


@dataclass(slots=True, frozen=True)
class Incomplete:
    """More bytes are needed: at least `needed` bytes from the start in total."""
    needed: int


class ClientHello:
    """A decoded ClientHello. Read-only by convention; lists are as sent, GREASE included.

    `ciphers`, `extensions`, `sig_algs`, `groups`, `point_formats`, `ja4` and
    `ja3` are computed from the kept raw bytes when first read.
    """

    __slots__ = ("legacy_version_code", "version_codes", "offered_versions", "sni", "alpn",
                 "alpn_first", "length", "_cipher_bytes", "_ext_block", "_ext_fields", "_ja4", "_ja3")

    def __init__(self, legacy_version_code: int, version_codes: tuple[int, ...], sni: str | None,
                 alpn_raw: list[bytes], length: int, cipher_bytes: bytes, ext_block: bytes) -> None:
        self.legacy_version_code = legacy_version_code
        self.version_codes = version_codes  # supported_versions as sent
        # supported_versions minus GREASE, else legacy_version
        self.offered_versions = tuple(version_name(v) for v in version_codes
                                      if v not in GREASE) or (version_name(legacy_version_code),)
        self.sni = sni
        self.alpn = tuple(v.decode("utf-8", "backslashreplace") for v in alpn_raw)
        self.alpn_first = alpn_raw[0] if alpn_raw else None  # raw: JA4 reads its bytes
        self.length = length  # bytes of the stream the hello's records occupy
        self._cipher_bytes = cipher_bytes  # cipher_suites, 2 bytes each
        self._ext_block = ext_block  # the extensions vector's content, outer lengths checked
        self._ext_fields: tuple | None = None
        self._ja4: str | None = None
        self._ja3: str | None = None

    @property
    def legacy_version(self) -> str:
        return version_name(self.legacy_version_code)

    @property
    def highest_version(self) -> str | None:
        return highest_version(self.offered_versions)

    @property
    def ciphers(self) -> tuple[int, ...]:
        return _u16s(self._cipher_bytes)

    @property
    def extensions(self) -> tuple[int, ...]:
        return (self._ext_fields or self._decode_extensions())[0]

    @property
    def sig_algs(self) -> tuple[int, ...]:
        return (self._ext_fields or self._decode_extensions())[1]

    @property
    def groups(self) -> tuple[int, ...]:
        return (self._ext_fields or self._decode_extensions())[2]

    @property
    def point_formats(self) -> tuple[int, ...]:
        return (self._ext_fields or self._decode_extensions())[3]

    @property
    def ja4(self) -> str:
        if self._ja4 is None:
            self._ja4 = fingerprint.ja4(self)
        return self._ja4

    @property
    def ja3(self) -> str:
        if self._ja3 is None:
            self._ja3 = fingerprint.ja3(self)
        return self._ja3

    def _decode_extensions(self) -> tuple:
        self._ext_fields = fingerprint.extension_fields(self._ext_block)
        return self._ext_fields

    def _key(self) -> tuple:
        return (self.legacy_version_code, self.version_codes, self.sni, self.alpn, self.alpn_first,
                self.length, self._cipher_bytes, self._ext_block)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientHello) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"ClientHello(offered_versions={self.offered_versions!r}, sni={self.sni!r}, "
                f"alpn={self.alpn!r}, length={self.length}, ja4={self.ja4!r})")


@dataclass(slots=True, frozen=True)
class ServerHello:
    version: str  # negotiated: supported_versions (TLS 1.3) else legacy_version
    cipher: int
    extensions: tuple[int, ...] = ()


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
    size = len(data)
    if size >= 3 and data[0] & 0x80 and data[2] == HANDSHAKE_CLIENT_HELLO:
        return _parse_sslv2(data)
    # Nearly every hello is one whole record: parse it in place, no copy.
    if size >= 9 and data[0] == CONTENT_HANDSHAKE and data[1] == 3 and data[5] == HANDSHAKE_CLIENT_HELLO:
        record = (data[3] << 8) | data[4]
        msg_end = 9 + ((data[6] << 16) | (data[7] << 8) | data[8])
        if msg_end <= 5 + record <= size and record <= MAX_RECORD:
            return _client_hello(data, 9, msg_end, 5 + record)
    got = _handshake(data, HANDSHAKE_CLIENT_HELLO)
    if not isinstance(got, tuple):
        return got
    body, consumed = got
    return _client_hello(body, 0, len(body), consumed)


def _client_hello(buf: bytes, pos: int, end: int, consumed: int) -> ClientHello | None:
    """The ClientHello body in buf[pos:end] (RFC 8446 §4.1.2); None when an outer length lies."""
    if pos + 35 > end:
        return None
    legacy = (buf[pos] << 8) | buf[pos + 1]
    pos += 35 + buf[pos + 34]  # legacy_version, random, legacy_session_id
    if pos + 2 > end:
        return None
    n = (buf[pos] << 8) | buf[pos + 1]
    cipher_bytes = buf[pos + 2:pos + 2 + n]
    pos += 2 + n
    if n & 1 or pos >= end:
        return None
    pos += 1 + buf[pos]  # legacy_compression_methods
    if pos > end:
        return None
    sni, alpn, versions = None, [], b""
    ext_start = ext_end = pos
    if pos < end:  # extensions are optional before TLS 1.2 (RFC 5246 §7.4.1.2)
        if pos + 2 > end:
            return None
        ext_start, ext_end = pos + 2, pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        if ext_end > end:
            return None
        pos = ext_start
        while pos < ext_end:
            if pos + 4 > ext_end:
                return None
            ext_type, n = EXT_HEADER.unpack_from(buf, pos)
            pos += 4
            stop = pos + n
            if stop > ext_end:
                return None
            # A lying inner length drops only that extension's value.
            if ext_type == EXT_SERVER_NAME:
                got = _server_name(buf, pos, stop)
                if got is not _MALFORMED:
                    sni = got
            elif ext_type == EXT_ALPN:
                got = _alpn(buf, pos, stop)
                if got is not _MALFORMED:
                    alpn = got
            elif ext_type == EXT_SUPPORTED_VERSIONS and n and not buf[pos] & 1 and buf[pos] < n:
                versions = buf[pos + 1:pos + 1 + buf[pos]]
            pos = stop
    return ClientHello(legacy, _u16s(versions), sni, alpn, consumed, cipher_bytes, buf[ext_start:ext_end])


def _server_name(buf: bytes, pos: int, end: int) -> str | None | object:
    """RFC 6066 §3 ServerNameList: the first host_name, None when it has none."""
    if pos + 2 > end:
        return _MALFORMED
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        return _MALFORMED
    pos += 2
    while pos < stop:
        if pos + 3 > stop:
            return _MALFORMED
        name_type, n = buf[pos], (buf[pos + 1] << 8) | buf[pos + 2]
        pos += 3
        if pos + n > stop:
            return _MALFORMED
        if name_type == SNI_HOST_NAME:
            return buf[pos:pos + n].decode("utf-8", "backslashreplace")
        pos += n
    return None


def _alpn(buf: bytes, pos: int, end: int) -> list[bytes] | object:
    """RFC 7301 §3.1 ProtocolNameList, raw names."""
    if pos + 2 > end:
        return _MALFORMED
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        return _MALFORMED
    pos += 2
    names = []
    while pos < stop:
        n = buf[pos]
        pos += 1
        if pos + n > stop:
            return _MALFORMED
        names.append(buf[pos:pos + n])
        pos += n
    return names


def _parse_sslv2(data: bytes) -> ClientHello | Incomplete | None:
    """SSL 2.0-compatible CLIENT-HELLO (RFC 6101 appendix E.2), sent by old clients."""
    length = ((data[0] & 0x7F) << 8) | data[1]
    if len(data) < 11:
        return Incomplete(11)
    version, spec_len, sid_len, chal_len = SSL2_HEADER.unpack_from(data, 3)
    if version >> 8 not in (0, 3) or spec_len % 3 or length != 9 + spec_len + sid_len + chal_len:
        return None
    if not 16 <= chal_len <= 32 or sid_len not in (0, 16):
        return None
    if len(data) < 2 + length:
        return Incomplete(2 + length)
    specs = data[11:11 + spec_len]
    ciphers = b"".join(specs[i + 1:i + 3] for i in range(0, spec_len, 3) if specs[i] == 0)
    return ClientHello(version, (), None, [], 2 + length, ciphers, b"")


def parse_server_hello(data: bytes) -> ServerHello | Incomplete | None:
    """The ServerHello opening a server stream; None when it is not TLS.

    A ServerHello is read as soon as its message is whole, even when the rest
    of its record (TLS 1.2 servers add Certificate etc.) is still on the way.
    """
    if data[:1] == b"\x15":  # alerts before the ServerHello: warnings are skipped, a fatal one ends
        skip = _warnings(data)
        if skip.__class__ is not int:
            return skip
        got = parse_server_hello(data[skip:]) if len(data) > skip else Incomplete(skip + 1)
        return Incomplete(got.needed + skip) if got.__class__ is Incomplete and len(data) > skip else got
    size = len(data)
    if size >= 9 and data[0] == CONTENT_HANDSHAKE and data[1] == 3 and data[5] == HANDSHAKE_SERVER_HELLO:
        record = (data[3] << 8) | data[4]
        msg_end = 9 + ((data[6] << 16) | (data[7] << 8) | data[8])
        if msg_end <= 5 + record and msg_end <= size and record <= MAX_RECORD:
            return _server_hello(data, 9, msg_end)
    got = _handshake(data, HANDSHAKE_SERVER_HELLO)
    if not isinstance(got, tuple):
        return got
    return _server_hello(got[0], 0, len(got[0]))


def _warnings(data: bytes) -> int | Incomplete | None:
    """Bytes of the warning alert records opening `data`; None at a fatal or malformed one."""
    pos = 0
    while data[pos:pos + 1] == b"\x15":
        if len(data) < pos + 7:
            return Incomplete(pos + 7) if data[pos + 1:pos + 2] in (b"", b"\x03") else None
        _, version, length = RECORD_HEADER.unpack_from(data, pos)
        if version >> 8 != 3 or length != 2 or data[pos + 5] != ALERT_WARNING:
            return None
        pos += 7
    return pos


def _server_hello(buf: bytes, pos: int, end: int) -> ServerHello | None:
    """The ServerHello body in buf[pos:end] (RFC 8446 §4.1.3); HelloRetryRequest and 1.3 drafts too."""
    if pos + 35 > end:
        return None
    version = (buf[pos] << 8) | buf[pos + 1]
    if version == 0x0304:  # drafts before 16 sent 1.3 here (1.3 itself sends 1.2 and supported_versions)
        version = 0x7F00
    draft = version >> 8 == 0x7F and version & 0xFF < DRAFT_NO_SESSION_ID  # no session id, no compression
    pos += 34 if draft else 35 + buf[pos + 34]  # legacy_version, random[, legacy_session_id_echo]
    if pos + 3 - draft > end:
        return None
    cipher = (buf[pos] << 8) | buf[pos + 1]
    pos += 3 - draft  # cipher_suite[, legacy_compression_method]
    ext_types = []
    if pos < end:
        if pos + 2 > end:
            return None
        ext_end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        if ext_end > end:
            return None
        pos += 2
        while pos < ext_end:
            if pos + 4 > ext_end:
                return None
            ext_type, n = EXT_HEADER.unpack_from(buf, pos)
            pos += 4
            if pos + n > ext_end:
                return None
            ext_types.append(ext_type)
            if ext_type == EXT_SUPPORTED_VERSIONS and n == 2:
                version = (buf[pos] << 8) | buf[pos + 1]
            pos += n
    return ServerHello(version_name(version), cipher, tuple(ext_types))
