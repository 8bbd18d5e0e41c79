"""Tunnels a TLS connection may run inside: where the real conversation starts (decode stage).

`decode.app.classify` asks these when a client's first bytes look like a proxy
request. Each returns None when the bytes are not that tunnel, else
`(tunnel, client offset, server offset)`: where the tunnelled conversation
starts in each direction (client offset None: the request is not whole yet).
Bytes in, value out; malformed input never raises.
"""
from __future__ import annotations

SOCKS4, SOCKS5, HTTP_CONNECT = "socks4", "socks5", "http-connect"


def socks4(client: bytes, server: bytes) -> tuple[str, int | None, int] | None:
    """SOCKS4/4a CONNECT: VN=4 CD=1 DSTPORT DSTIP USERID NUL [HOST NUL]; reply 8 bytes."""
    if client[0] != 4 or client[1:2] not in (b"\x01", b"\x02") or len(client) < 9:
        return None
    end = client.find(b"\x00", 8, 8 + 256)
    if end < 0:
        return None if len(client) >= 8 + 256 else (SOCKS4, None, 0)
    if client[4:7] == b"\x00\x00\x00" and client[7]:  # 4a: the host name follows
        end = client.find(b"\x00", end + 1, end + 1 + 256)
        if end < 0:
            return (SOCKS4, None, 0)
    return (SOCKS4, end + 1, 8 if server[:1] == b"\x00" else len(server))


def socks5(client: bytes, server: bytes) -> tuple[str, int | None, int] | None:
    """RFC 1928 greeting + optional RFC 1929 user/password + CONNECT request."""
    if client[0] != 5 or len(client) < 3 or not client[1]:
        return None
    pos = 2 + client[1]
    if any(m > 0x09 and m < 0x80 for m in client[2:pos]):
        return None
    s_off = 2 if server[:1] == b"\x05" else len(server)
    if client[pos:pos + 1] == b"\x01":  # RFC 1929: VER ULEN UNAME PLEN PASSWD
        if len(client) < pos + 2:
            return (SOCKS5, None, s_off)
        plen_at = pos + 2 + client[pos + 1]
        if len(client) <= plen_at:
            return (SOCKS5, None, s_off)
        pos = plen_at + 1 + client[plen_at]
        s_off = s_off + 2 if len(server) >= s_off + 2 else len(server)
    if len(client) < pos + 5:
        return (SOCKS5, None, s_off) if client[pos:pos + 1] in (b"", b"\x05") else None
    if client[pos] != 5 or client[pos + 2] != 0:
        return None
    size = socks5_addr(client, pos + 3)
    reply = socks5_addr(server, s_off + 3) if server[s_off:s_off + 1] == b"\x05" else None
    return (SOCKS5, None if size is None else pos + 3 + size, len(server) if reply is None else s_off + 3 + reply)


def socks5_addr(data: bytes, at: int) -> int | None:
    """Bytes of ATYP + address + port at `at` (RFC 1928 §5), None if unknown/short."""
    atyp = data[at:at + 1]
    size = {b"\x01": 7, b"\x04": 19}.get(atyp)
    if atyp == b"\x03" and len(data) > at + 1:
        size = 4 + data[at + 1]
    return size if size is not None and len(data) >= at + size else None


def http_connect(client: bytes, server: bytes) -> tuple[str, int | None, int] | None:
    if not client.startswith(b"CONNECT "):
        return None
    end = client.find(b"\r\n\r\n")
    s_end = server.find(b"\r\n\r\n")
    return (HTTP_CONNECT, None if end < 0 else end + 4, len(server) if s_end < 0 else s_end + 4)
