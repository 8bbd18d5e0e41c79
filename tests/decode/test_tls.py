"""TLS ClientHello/ServerHello decoding, JA4 and JA3, hostile input."""
from __future__ import annotations

import hashlib
import os
import struct

from hypothesis import given, settings, strategies as st

from agent.decode.ja4 import ja3_string, ja4_parts
from agent.decode.tls import ClientHello, Incomplete, ServerHello, parse_client_hello, parse_server_hello

DEEP = settings(max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "300")), deadline=None)

# A TLS 1.3 ClientHello, one record.
HELLO = bytes.fromhex(
    "16 0301 005d"  # record: handshake, legacy_record_version 1.0, length 93
    "01 000059"  # handshake: ClientHello, length 89
    "0303"  # legacy_version 1.2
    + "00" * 32 +  # random
    "00"  # legacy_session_id: empty
    "0004 1301 c02f"  # cipher_suites: TLS_AES_128_GCM_SHA256, ECDHE-RSA-AES128-GCM-SHA256
    "01 00"  # compression: null
    "002c"  # extensions, 44 bytes
    "0000 000e 000c 00 0009 612e6578616d706c65"  # server_name: host_name "a.example"
    "0010 0005 0003 02 6832"  # ALPN: "h2"
    "002b 0005 04 0304 0303"  # supported_versions: 1.3, 1.2
    "000d 0004 0002 0403"  # signature_algorithms: ecdsa_secp256r1_sha256
)

# A TLS 1.3 ServerHello answering it.
SERVER_HELLO = bytes.fromhex(
    "16 0303 0032"  # record: handshake, 1.2, length 50
    "02 00002e"  # handshake: ServerHello, length 46
    "0303" + "11" * 32 +  # legacy_version 1.2, random
    "00"  # legacy_session_id_echo: empty
    "1301 00"  # cipher_suite TLS_AES_128_GCM_SHA256, compression null
    "0006 002b 0002 0304"  # extensions: supported_versions selects 1.3
)


def ext(ext_type: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def hello_body(ciphers, extensions: bytes, *, version: int = 0x0303) -> bytes:
    body = struct.pack("!H", version) + bytes(32) + b"\x00"
    body += struct.pack("!H", 2 * len(ciphers)) + b"".join(struct.pack("!H", c) for c in ciphers)
    return body + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions


def records(message: bytes, *, sizes=None, version: int = 0x0301) -> bytes:
    """Cut a handshake message into records of the given sizes (the rest in the last one)."""
    out, pos = b"", 0
    for size in list(sizes or []) + [len(message)]:
        chunk = message[pos:pos + size]
        if chunk:
            out += struct.pack("!BHH", 22, version, len(chunk)) + chunk
        pos += len(chunk)
    return out


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def test_client_hello_fields_are_decoded():
    ch = parse_client_hello(HELLO)
    assert isinstance(ch, ClientHello)
    assert ch.legacy_version == "1.2"
    assert ch.offered_versions == ("1.3", "1.2")
    assert ch.highest_version == "1.3"
    assert ch.sni == "a.example"
    assert ch.alpn == ("h2",)
    assert ch.ciphers == (0x1301, 0xC02F)
    assert ch.extensions == (0x0000, 0x0010, 0x002B, 0x000D)
    assert ch.sig_algs == (0x0403,)
    assert ch.length == len(HELLO)


def test_ja4_of_the_hello_follows_the_spec_construction():
    ch = parse_client_hello(HELLO)
    b = hashlib.sha256(b"1301,c02f").hexdigest()[:12]
    c = hashlib.sha256(b"000d,002b_0403").hexdigest()[:12]
    assert ch.ja4 == f"t13d0204h2_{b}_{c}"


def test_ja4_equals_the_worked_example_of_the_spec():
    # technical_details/JA4.md: ciphers, extensions and signature algorithms of its example.
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
               0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    sni = ext(0x0000, bytes.fromhex("000e 00 000b") + b"example.com")
    alpn = ext(0x0010, bytes.fromhex("0003 02") + b"h2")
    sigs = ext(0x000D, bytes.fromhex("0010 0403 0804 0401 0503 0805 0501 0806 0601"))
    versions = ext(0x002B, bytes.fromhex("04 0a0a 0304"))  # with a GREASE version
    body = {0x0000: sni, 0x0010: alpn, 0x000D: sigs, 0x002B: versions}
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023,
             0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    exts = ext(0x2A2A) + b"".join(body.get(t, ext(t)) for t in order)  # GREASE ext first
    ch = parse_client_hello(records(handshake(1, hello_body([0x3A3A] + ciphers, exts))))
    assert ch.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_parts(ch)[1].startswith("002f,0035,009c")


def test_ja3_string_drops_grease_and_uses_decimal():
    exts = ext(0x0A0A) + ext(0x000A, bytes.fromhex("0004 1a1a 001d")) + ext(0x000B, bytes.fromhex("01 00"))
    ch = parse_client_hello(records(handshake(1, hello_body([0x2A2A, 0xC02F], exts))))
    assert ja3_string(ch) == "771,49199,10-11,29,0"
    assert ch.ja3 == hashlib.md5(b"771,49199,10-11,29,0").hexdigest()


def test_hello_split_across_records_is_joined():
    message = HELLO[5:]
    split = records(message, sizes=[3, 40])
    ch = parse_client_hello(split)
    assert isinstance(ch, ClientHello) and ch.sni == "a.example" and ch.length == len(split)


FIELDS = ("legacy_version", "offered_versions", "sni", "alpn", "ciphers", "extensions", "sig_algs",
          "groups", "point_formats", "legacy_version_code", "version_codes", "alpn_first", "ja4", "ja3")


def _browser_like() -> bytes:
    """A hello with GREASE everywhere, a session id and a dozen extensions."""
    exts = (ext(0x1A1A) + ext(0x0000, bytes.fromhex("000e 00 000b") + b"example.com") + ext(0x0017)
            + ext(0x000A, bytes.fromhex("0006 4a4a 001d 0017")) + ext(0x000B, b"\x01\x00")
            + ext(0x0010, bytes.fromhex("000c 02") + b"h2" + b"\x08http/1.1")
            + ext(0x000D, bytes.fromhex("0006 0403 0804 0401"))
            + ext(0x0033, bytes.fromhex("0024 001d 0020") + bytes(32))
            + ext(0x002B, bytes.fromhex("06 7a7a 0304 0303")) + ext(0x2A2A, b"\x00"))
    body = hello_body([0x3A3A, 0x1301, 0x1302, 0xC02F], exts)
    return body[:34] + b"\x20" + bytes(range(32)) + body[35:]  # 32-byte legacy_session_id


def test_whole_and_fragmented_records_decode_the_same_hello():
    message = handshake(1, _browser_like())
    whole, split = parse_client_hello(records(message)), parse_client_hello(records(message, sizes=[1, 70, 9]))
    assert [getattr(whole, f) for f in FIELDS] == [getattr(split, f) for f in FIELDS]
    assert whole.sni == "example.com" and whole.alpn == ("h2", "http/1.1")
    assert whole.offered_versions == ("1.3", "1.2") and whole.version_codes == (0x7A7A, 0x0304, 0x0303)
    assert whole.extensions[0] == 0x1A1A and whole.groups == (0x4A4A, 0x001D, 0x0017)
    assert whole.point_formats == (0,) and whole.ja4.startswith("t13d0308h2_")


def test_bytes_after_the_hello_in_its_record_are_not_read_as_extensions():
    message = handshake(1, hello_body([0x1301], ext(0x0017)))
    padded = struct.pack("!BHH", 22, 0x0301, len(message) + 9) + message + ext(0x0000, b"\xff" * 5)
    ch = parse_client_hello(padded)
    assert ch.extensions == (0x0017,) and ch.sni is None and ch.length == len(padded)


def test_a_repeated_extension_with_a_lying_length_keeps_the_earlier_value():
    good = ext(0x0000, bytes.fromhex("000c 00 0009") + b"a.example")
    bad = ext(0x0000, bytes.fromhex("00ff 00 0009") + b"b.example")
    ch = parse_client_hello(records(handshake(1, hello_body([0x1301], good + bad))))
    assert ch.sni == "a.example" and ch.extensions == (0x0000, 0x0000)


def test_every_truncated_prefix_asks_for_more_bytes():
    for data in (HELLO, records(HELLO[5:], sizes=[3, 40])):
        for n in range(len(data)):
            got = parse_client_hello(data[:n])
            assert isinstance(got, Incomplete), n
            assert n < got.needed <= len(data)


def test_every_truncated_server_hello_prefix_asks_for_more_bytes():
    for n in range(len(SERVER_HELLO)):
        assert isinstance(parse_server_hello(SERVER_HELLO[:n]), Incomplete), n


def test_server_hello_is_read_before_the_rest_of_its_record_arrives():
    # TLS 1.2 servers put Certificate etc. in the ServerHello's record; the hello decides alone.
    body = struct.pack("!H", 0x0303) + bytes(32) + b"\x00" + b"\xc0\x2f\x00"
    certificate = handshake(11, bytes(3000))
    data = records(handshake(2, body) + certificate, version=0x0303)
    assert parse_server_hello(data[:200]) == ServerHello(version="1.2", cipher=0xC02F)
    assert parse_server_hello(data) == ServerHello(version="1.2", cipher=0xC02F)


def test_server_hello_reports_the_negotiated_version_and_cipher():
    assert parse_server_hello(SERVER_HELLO) == ServerHello(version="1.3", cipher=0x1301, extensions=(0x002B,))


def test_server_hello_without_supported_versions_uses_legacy_version():
    body = struct.pack("!H", 0x0301) + bytes(32) + b"\x00" + b"\x00\x2f\x00"
    assert parse_server_hello(records(handshake(2, body))) == ServerHello(version="1.0", cipher=0x002F)


def test_hello_without_extensions_offers_its_legacy_version():
    body = struct.pack("!H", 0x0300) + bytes(32) + b"\x00" + b"\x00\x02\x00\x0a" + b"\x01\x00"
    ch = parse_client_hello(records(handshake(1, body), version=0x0300))
    assert ch.offered_versions == ("ssl3",) and ch.sni is None and ch.ja4.startswith("ts3i0100")


def test_zero_length_extensions_are_kept_without_values():
    exts = ext(0x0000) + ext(0x0010) + ext(0x002B) + ext(0x000D) + ext(0x0017)
    ch = parse_client_hello(records(handshake(1, hello_body([0x1301], exts))))
    assert ch.extensions == (0x0000, 0x0010, 0x002B, 0x000D, 0x0017)
    assert ch.sni is None and ch.alpn == () and ch.offered_versions == ("1.2",)


def test_inner_lengths_that_lie_drop_only_that_value():
    bad_sni = ext(0x0000, bytes.fromhex("00ff 00 0009") + b"a.example")  # list claims 255 bytes
    ch = parse_client_hello(records(handshake(1, hello_body([0x1301], bad_sni + ext(0x0017)))))
    assert ch.sni is None and ch.extensions == (0x0000, 0x0017)


def test_outer_lengths_that_lie_are_not_tls():
    body = bytearray(hello_body([0x1301], ext(0x0017)))
    body[35:37] = b"\x7f\xff"  # cipher_suites length beyond the message
    assert parse_client_hello(records(handshake(1, bytes(body)))) is None
    body = hello_body([0x1301], ext(0x0017))[:-2] + b"\x00\x09"  # extension longer than its block
    assert parse_client_hello(records(handshake(1, body))) is None


def test_record_longer_than_two_to_the_14_is_not_tls():
    assert parse_client_hello(b"\x16\x03\x01\xff\xff" + bytes(65535)) is None
    assert parse_client_hello(b"\x16\x03\x01\xff\xff") is None


def test_handshake_claiming_sixteen_megabytes_is_not_tls():
    assert parse_client_hello(records(b"\x01\xff\xff\xff" + bytes(100))) is None


def test_zero_length_record_is_not_tls():
    assert parse_client_hello(b"\x16\x03\x01\x00\x00" + HELLO) is None


def test_other_bytes_are_not_tls():
    for data in (b"GET / HTTP/1.1\r\n", b"\x17\x03\x03\x00\x10", b"\x16\x02", b"\x16\x03\x03\x00\x05\x02"):
        assert parse_client_hello(data) is None, data
    assert parse_server_hello(HELLO) is None  # a ClientHello is not a ServerHello


def test_sslv2_compatible_hello_is_recognised():
    specs = bytes.fromhex("010080 00002f 000035")  # SSL2 RC4-MD5, TLS RSA-AES128, RSA-AES256
    body = b"\x01" + struct.pack("!HHHH", 0x0301, len(specs), 0, 16) + specs + bytes(16)
    data = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    ch = parse_client_hello(data)
    assert ch.legacy_version == "1.0" and ch.ciphers == (0x002F, 0x0035)
    for n in range(3, len(data)):
        assert isinstance(parse_client_hello(data[:n]), Incomplete), n


@DEEP
@given(st.binary(max_size=600))
def test_parsers_never_raise_on_arbitrary_bytes(data):
    for parse in (parse_client_hello, parse_server_hello):
        got = parse(data)
        assert got is None or isinstance(got, (Incomplete, ClientHello, ServerHello))


@DEEP
@given(st.binary(max_size=120), st.integers(0, 200))
def test_parsers_never_raise_on_a_mutated_hello(noise, at):
    data = HELLO[:at] + noise + HELLO[at + len(noise):]
    for parse in (parse_client_hello, parse_server_hello):
        parse(data)
        parse(b"\x16\x03\x01" + struct.pack("!H", len(noise)) + noise)


# --- alerts before the ServerHello, TLS 1.3 drafts -------------------------------

WARNING_ALERT = bytes.fromhex("15 0303 0002 01 70")  # warning unrecognized_name (RFC 6066 §3), as zeek-tls-early-alert
FATAL_ALERT = bytes.fromhex("15 0301 0002 02 46")  # fatal protocol_version


def test_a_warning_alert_before_the_server_hello_is_skipped():
    got = parse_server_hello(WARNING_ALERT + SERVER_HELLO)
    assert got == parse_server_hello(SERVER_HELLO) and got.version == "1.3"
    assert parse_server_hello(WARNING_ALERT * 3 + SERVER_HELLO) == got


def test_a_fatal_alert_is_no_server_hello():
    assert parse_server_hello(FATAL_ALERT) is None
    assert parse_server_hello(WARNING_ALERT + FATAL_ALERT + SERVER_HELLO) is None


def test_every_prefix_of_an_alert_then_a_server_hello_asks_for_more():
    data = WARNING_ALERT + SERVER_HELLO
    for n in range(1, len(data)):
        got = parse_server_hello(data[:n])
        assert isinstance(got, Incomplete) and n < got.needed <= len(data), n


def _draft_server_hello(version: int) -> bytes:
    """A draft-ietf-tls-tls13 ServerHello before draft 22: version, random, cipher_suite, extensions."""
    body = struct.pack("!H", version) + bytes(32) + bytes.fromhex("1301") + bytes.fromhex("0000")
    return records(handshake(2, body), version=0x0301)


def test_tls13_draft_server_hellos_are_named_1_3_draft():
    for version in (0x7F10, 0x7F12, 0x7F13, 0x0304):  # drafts 16, 18, 19; 0x0304 sent by drafts before 16
        got = parse_server_hello(_draft_server_hello(version))
        assert got == ServerHello("1.3-draft", 0x1301, ()), hex(version)
    # Draft 22 and later look like 1.3: legacy_version 1.2, supported_versions names the draft.
    later = SERVER_HELLO[:-2] + bytes.fromhex("7f17")  # draft 23
    assert parse_server_hello(later).version == "1.3-draft"
    chrome = SERVER_HELLO[:-2] + bytes.fromhex("7e01")  # Chrome 63's TLS 1.3 experiment
    assert parse_server_hello(chrome).version == "1.3-draft"


def test_a_client_offering_drafts_offers_1_3_draft():
    versions = ext(0x002B, bytes.fromhex("06 7f17 7f12 0303"))
    ch = parse_client_hello(records(handshake(1, hello_body([0x1301], versions))))
    assert ch.offered_versions == ("1.3-draft", "1.3-draft", "1.2")
    assert ch.highest_version == "1.3-draft"
