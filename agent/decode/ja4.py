"""JA4 and JA3 TLS client fingerprints of a parsed ClientHello (decode stage).

JA4 follows FoxIO's specification of the TLS client fingerprint, which is
BSD-3-Clause (technical_details/JA4.md in FoxIO-LLC/ja4); the rest of JA4+ is
under the FoxIO License and deliberately absent. JA3 follows Salesforce's
definition (md5 of version,ciphers,extensions,groups,point formats). Both
ignore GREASE values. Pure functions over the ClientHello's fields.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Protocol

EXT_SERVER_NAME = 0x0000  # RFC 6066 §3
EXT_ALPN = 0x0010  # RFC 7301 §3.1
EXT_SUPPORTED_GROUPS = 0x000A  # RFC 8422 §5.1.1
EXT_EC_POINT_FORMATS = 0x000B  # RFC 8422 §5.1.2
EXT_SIGNATURE_ALGORITHMS = 0x000D  # RFC 8446 §4.2.3
EXT_HEADER = struct.Struct("!HH")  # RFC 8446 §4.2: extension_type, extension_data length
EMPTY_HASH = "000000000000"  # JA4: an empty list is shown as zeros, not sha256("")
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))  # RFC 8701 §2: 0x0A0A ... 0xFAFA

JA4_VERSIONS = {  # JA4.md "TLS and DTLS Version"
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
    0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}


class _Hello(Protocol):
    legacy_version_code: int
    version_codes: tuple[int, ...]
    sni: str | None
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    sig_algs: tuple[int, ...]
    groups: tuple[int, ...]
    point_formats: tuple[int, ...]
    alpn_first: bytes | None


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _alpn_chars(value: bytes | None) -> str:
    if not value:
        return "00"
    if value[0] > 0x7F:
        # The reference implementation we are checked against (FoxIO-LLC/ja4
        # 0e54bc8, python/ja4.py) prints "99" here; the newer spec text prints
        # hex nibbles. Matching the reference keeps fingerprints comparable.
        return "99"
    if _alnum(value[0]) and _alnum(value[-1]):
        return chr(value[0]) + chr(value[-1])
    text = value.hex()
    return text[0] + text[-1]


def _version(hello: _Hello) -> str:
    offered = [v for v in hello.version_codes if v not in GREASE]
    code = max(offered) if offered else hello.legacy_version_code
    return JA4_VERSIONS.get(code, "00")


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def ja4_parts(hello: _Hello, *, transport: str = "t") -> tuple[str, str, str]:
    """(JA4_a, raw sorted ciphers, raw sorted extensions_sigalgs): JA4_r's pieces."""
    ciphers = [c for c in hello.ciphers if c not in GREASE]
    exts = [e for e in hello.extensions if e not in GREASE]
    head = "%s%s%s%02d%02d%s" % (
        transport, _version(hello), "d" if EXT_SERVER_NAME in exts else "i",
        min(len(ciphers), 99), min(len(exts), 99), _alpn_chars(hello.alpn_first),
    )
    cipher_list = _hex_list(sorted(ciphers))
    ext_list = _hex_list(sorted([e for e in exts if e != EXT_SERVER_NAME and e != EXT_ALPN]))
    sigs = _hex_list([s for s in hello.sig_algs if s not in GREASE])
    return head, cipher_list, f"{ext_list}_{sigs}" if sigs else ext_list


def _hex_list(values: list[int]) -> str:
    """[0x1301, 0xc02f] -> "1301,c02f" (JA4's 4-digit lowercase hex, comma-separated)."""
    return struct.pack(f"!{len(values)}H", *values).hex(",", 2)


def ja4(hello: _Hello, *, transport: str = "t") -> str:
    """JA4 client fingerprint, e.g. t13d1516h2_8daaf6152771_e5627efa2ab1."""
    head, cipher_list, ext_list = ja4_parts(hello, transport=transport)
    b = _sha12(cipher_list) if cipher_list else EMPTY_HASH
    c = _sha12(ext_list) if ext_list and not ext_list.startswith("_") else EMPTY_HASH
    return f"{head}_{b}_{c}"


def ja3_string(hello: _Hello) -> str:
    return ",".join((
        str(hello.legacy_version_code), _dashed(hello.ciphers), _dashed(hello.extensions),
        _dashed(hello.groups), "-".join(map(str, hello.point_formats)),
    ))


def _dashed(values: tuple[int, ...]) -> str:
    return "-".join(map(str, [v for v in values if v not in GREASE]))


def ja3(hello: _Hello) -> str:
    """JA3: md5 hex of the ClientHello's version,ciphers,extensions,groups,formats."""
    return hashlib.md5(ja3_string(hello).encode("ascii"), usedforsecurity=False).hexdigest()


def extension_fields(block: bytes) -> tuple:
    """(extension types, sig_algs, groups, point_formats) of a ClientHello's extensions block, outer
    lengths already checked by decode.tls: only the fingerprints read these lists."""
    types, sig_algs, groups, formats = [], (), (), ()
    pos, end = 0, len(block)
    while pos < end:
        ext_type, n = EXT_HEADER.unpack_from(block, pos)
        pos += 4
        stop = pos + n
        types.append(ext_type)
        if ext_type == EXT_SIGNATURE_ALGORITHMS or ext_type == EXT_SUPPORTED_GROUPS:
            size = (block[pos] << 8) | block[pos + 1] if n >= 2 else 1
            if not size & 1 and pos + 2 + size <= stop:
                values = _u16s(block[pos + 2:pos + 2 + size])
                if ext_type == EXT_SIGNATURE_ALGORITHMS:
                    sig_algs = values
                else:
                    groups = values
        elif ext_type == EXT_EC_POINT_FORMATS and n and block[pos] < n:
            formats = tuple(block[pos + 1:pos + 1 + block[pos]])
        pos = stop
    return tuple(types), sig_algs, groups, formats


def _u16s(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f"!{len(raw) >> 1}H", raw)
