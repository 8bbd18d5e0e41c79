"""Micro-benchmark of the flow path's protocol decoders: µs per call.

parse_client_hello and classify run for every TCP connection the agent sees
(again on each new segment until the answer is complete), so their cost is
part of the 1,000,000 packets/s replay budget. Standalone:

    python bench/bench_classify.py [--number 20000]
"""
from __future__ import annotations

import argparse
import struct
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.decode.app import classify  # noqa: E402
from agent.decode.tls import parse_client_hello, parse_server_hello  # noqa: E402


def ext(ext_type: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def hello(ciphers: list[int], extensions: bytes, *, session_id: bytes = b"") -> bytes:
    body = b"\x03\x03" + bytes(32) + bytes([len(session_id)]) + session_id
    body += struct.pack("!H", 2 * len(ciphers)) + b"".join(struct.pack("!H", c) for c in ciphers)
    body += b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def sni(name: bytes) -> bytes:
    return ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)


def alpn(*names: bytes) -> bytes:
    raw = b"".join(bytes([len(n)]) + n for n in names)
    return ext(0x0010, struct.pack("!H", len(raw)) + raw)


# A TLS 1.3 hello as curl/Go clients send it (the replay benchmark's, 125 bytes).
TYPICAL = hello([0x1301, 0x1302, 0xC02F], sni(b"api.example") + alpn(b"h2", b"http/1.1")
                + ext(0x002B, b"\x04\x03\x04\x03\x03") + ext(0x000A, b"\x00\x02\x00\x1d")
                + ext(0x000D, b"\x00\x02\x04\x03"))

# A Chrome-like hello: GREASE cipher/extensions/group/version, 16 extensions, session id.
BROWSER = hello(
    [0x2A2A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
     0xC014, 0x009C, 0x009D, 0x002F, 0x0035],
    ext(0x2A2A) + sni(b"www.example.com") + ext(0x0017) + ext(0xFF01, b"\x00")
    + ext(0x000A, bytes.fromhex("000a 4a4a 001d 0017 0018")) + ext(0x000B, b"\x01\x00")
    + ext(0x0023) + alpn(b"h2", b"http/1.1") + ext(0x0005, bytes.fromhex("0100000000"))
    + ext(0x000D, bytes.fromhex("0010 0403 0804 0401 0503 0805 0501 0806 0601"))
    + ext(0x0012) + ext(0x0033, bytes.fromhex("002b 4a4a 0001 00 001d 0020") + bytes(32))
    + ext(0x002D, b"\x01\x01") + ext(0x002B, bytes.fromhex("06 7a7a 0304 0303"))
    + ext(0x001B, b"\x02\x00\x02") + ext(0x4469, bytes.fromhex("0003 02") + b"h2") + ext(0x1A1A, b"\x00"),
    session_id=bytes(range(32)),
)

SERVER_HELLO = (lambda body: b"\x16\x03\x03" + struct.pack("!H", len(body) + 4) + b"\x02"
                + len(body).to_bytes(3, "big") + body)(
    b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + struct.pack("!H", 6)
    + struct.pack("!HHH", 43, 2, 0x0304))

HTTP = b"GET /items HTTP/1.1\r\nHost: api\r\n\r\n"
REDIS = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
SSH = b"SSH-2.0-OpenSSH_9.6\r\n"

CASES = [
    ("parse_client_hello(typical, %d B)" % len(TYPICAL), lambda: parse_client_hello(TYPICAL)),
    ("parse_client_hello(browser, %d B)" % len(BROWSER), lambda: parse_client_hello(BROWSER)),
    ("parse_client_hello(browser) + ja4 + ja3", lambda: (lambda h: (h.ja4, h.ja3))(parse_client_hello(BROWSER))),
    ("parse_server_hello", lambda: parse_server_hello(SERVER_HELLO)),
    ("classify(tls hello, no answer)", lambda: classify(TYPICAL, b"", dst_port=443)),
    ("classify(tls hello + server hello)", lambda: classify(TYPICAL, SERVER_HELLO, dst_port=443)),
    ("classify(browser hello + server hello)", lambda: classify(BROWSER, SERVER_HELLO, dst_port=443)),
    ("classify(http)", lambda: classify(HTTP, b"", dst_port=8080)),
    ("classify(redis)", lambda: classify(REDIS, b"", dst_port=6379)),
    ("classify(ssh: unknown plaintext)", lambda: classify(SSH, b"", dst_port=22)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is shown")
    args = parser.parse_args()
    for name, fn in CASES:
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:45s} {best * 1e6:8.2f} µs")


if __name__ == "__main__":
    main()
