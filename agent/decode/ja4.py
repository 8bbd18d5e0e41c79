"""JA4 and JA3 TLS client fingerprints of a parsed ClientHello (decode stage).

JA4 follows FoxIO's specification of the TLS client fingerprint, which is
BSD-3-Clause (technical_details/JA4.md in FoxIO-LLC/ja4); the rest of JA4+ is
under the FoxIO License and deliberately absent. JA3 follows Salesforce's
definition (md5 of version,ciphers,extensions,groups,point formats). Both
ignore GREASE values. Pure functions over the ClientHello's fields.
"""
from __future__ import annotations

import hashlib
from typing import Protocol

EXT_SERVER_NAME = 0x0000  # RFC 6066 §3
EXT_ALPN = 0x0010  # RFC 7301 §3.1
EMPTY_HASH = "000000000000"  # JA4: an empty list is shown as zeros, not sha256("")

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


def is_grease(value: int) -> bool:
    """RFC 8701 §2: 0x0A0A, 0x1A1A, ..., 0xFAFA."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


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
    offered = [v for v in hello.version_codes if not is_grease(v)]
    code = max(offered) if offered else hello.legacy_version_code
    return JA4_VERSIONS.get(code, "00")


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def ja4_parts(hello: _Hello, *, transport: str = "t") -> tuple[str, str, str]:
    """(JA4_a, raw sorted ciphers, raw sorted extensions_sigalgs): JA4_r's pieces."""
    ciphers = [c for c in hello.ciphers if not is_grease(c)]
    exts = [e for e in hello.extensions if not is_grease(e)]
    head = "%s%s%s%02d%02d%s" % (
        transport, _version(hello), "d" if EXT_SERVER_NAME in exts else "i",
        min(len(ciphers), 99), min(len(exts), 99), _alpn_chars(hello.alpn_first),
    )
    cipher_list = ",".join(f"{c:04x}" for c in sorted(ciphers))
    ext_list = ",".join(
        f"{e:04x}" for e in sorted(exts) if e not in (EXT_SERVER_NAME, EXT_ALPN)
    )
    sigs = ",".join(f"{s:04x}" for s in hello.sig_algs if not is_grease(s))
    return head, cipher_list, f"{ext_list}_{sigs}" if sigs else ext_list


def ja4(hello: _Hello, *, transport: str = "t") -> str:
    """JA4 client fingerprint, e.g. t13d1516h2_8daaf6152771_e5627efa2ab1."""
    head, cipher_list, ext_list = ja4_parts(hello, transport=transport)
    b = _sha12(cipher_list) if cipher_list else EMPTY_HASH
    c = _sha12(ext_list) if ext_list and not ext_list.startswith("_") else EMPTY_HASH
    return f"{head}_{b}_{c}"


def ja3_string(hello: _Hello) -> str:
    def dashed(values: tuple[int, ...]) -> str:
        return "-".join(str(v) for v in values if not is_grease(v))

    return ",".join((
        str(hello.legacy_version_code), dashed(hello.ciphers), dashed(hello.extensions),
        dashed(hello.groups), "-".join(str(p) for p in hello.point_formats),
    ))


def ja3(hello: _Hello) -> str:
    """JA3: md5 hex of the ClientHello's version,ciphers,extensions,groups,formats."""
    return hashlib.md5(ja3_string(hello).encode("ascii"), usedforsecurity=False).hexdigest()
