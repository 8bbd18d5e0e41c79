"""flowwarden's app protocol of every TCP flow equals Suricata's, on Suricata's and Zeek's own captures.

The 100 captures of ../shared/peer-pcaps/suricata-peer/ are read in place (never
copied) and replayed through read_frames and FlowTable as `replay` does.
Suricata 7's answers were recorded once by tests/peer/record_suricata.py into
suricata_answers.json (how to refresh them is in that script). For each TCP flow
Suricata reports, flowwarden must give the same app: TLS with the same version
and SNI, or the same plaintext protocol. Where Suricata is wrong or says less,
`SURICATA_DIFFERS` names the flow, what flowwarden says and why, with the bytes
that prove it.
"""
from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path

import pytest

from agent.capture.pcap import read_frames
from agent.flows.table import FlowTable

HERE = Path(__file__).resolve().parent
PEER = HERE.parents[2] / "shared" / "peer-pcaps" / "suricata-peer"
ANSWERS = json.loads((HERE / "suricata_answers.json").read_text())

# Suricata's names -> flowwarden's. "failed": Suricata saw bytes but named no protocol.
APPS = {"pgsql": "postgresql", "ftp-data": "unknown-plaintext", "failed": "unknown-plaintext", None: "unknown"}
VERSIONS = {"SSLv2": "ssl2", "SSLv3": "ssl3", "TLSv1": "1.0", "TLS 1.1": "1.1", "TLS 1.2": "1.2",
            "TLS 1.3": "1.3", "UNDETERMINED": None, "0x7e01": "1.3-draft", "0x7e02": "1.3-draft"}

FTP_DATA = ("unknown-plaintext",), (
    "an FTP data connection Suricata did not tie to its control connection: plain file or listing bytes, no TLS "
    "(flowwarden has no control-channel state; it judges what the bytes are)")
HTTP = ("http",), "a whole HTTP/1.x request line; Suricata names no protocol for this flow"
ALERT = ("tls", None, "tls13.crypto.mozilla.org"), (
    "the server's only answer is a fatal alert record 15 03 01 00 02 02 46 (protocol_version): nothing was "
    "negotiated; Suricata reports the alert record's version")

# (capture, initiator port, responder port) -> (flowwarden's answer, why it is right), with the bytes.
SURICATA_DIFFERS: dict[tuple[str, int, int], tuple[tuple, str]] = {
    **{("ftp-all-data-ipv6.pcap", c, s): FTP_DATA for c, s in (  # "APPE payload for FTP dat", "-rw-rw-r--   1 root"
        (48224, 21003), (54998, 21006), (52214, 21008), (55932, 21002), (35958, 21009),
        (20, 40547), (20, 36713), (20, 42219), (20, 39099), (20, 46525))},
    **{(capture, c, s): FTP_DATA for capture, c, s in (  # "index.html\r\nwelcome.txt\r\n", "temp.txt\r\n"
        ("ftp-download-active.pcap", 20, 44671), ("ftp-download-active.pcap", 20, 43439),
        ("ftp-download-passive.pcap", 41928, 21001), ("ftp-download-passive.pcap", 46280, 21008),
        ("ftp-upload-active.pcap", 20, 35627), ("ftp-upload-active.pcap", 20, 40173),
        ("ftp-upload-passive.pcap", 49330, 21003), ("ftp-upload-passive.pcap", 37978, 21001),
        ("output-eve-ftp-data.pcap", 20, 59914))},
    # "NOTIFY /upnp/eventing/xcmmwtqlwc HTTP/1.1\r\nNT: upnp:event", answered "HTTP/1.1 200 OK"
    **{("output-eve-ftp-data.pcap", c, 2869): HTTP for c in (2330, 2332, 2333, 2348, 2349, 2356, 2357)},
    # "GET /bad.html\r\n" (an HTTP/0.9 request in IPv6 atomic fragments), answered "<html>"
    ("zeek-ipv6-http-atomic-frag.pcap", 36951, 80): HTTP,
    # Suricata splits that connection and reports its server side as a second flow: flowwarden has one.
    ("zeek-ipv6-http-atomic-frag.pcap", 80, 36951): (None, "the same connection as 36951 -> 80"),
    ("http2-range.pcap", 57226, 8080): (("http",), "GET /eicar HTTP/1.1 ... Upgrade: h2c: the connection starts in "
                                        "HTTP/1.1 (101 Switching Protocols comes after); plaintext either way"),
    ("http2-range.pcap", 57228, 8080): (("http",), "as 57226: HTTP/1.1 upgraded to h2c"),
    ("http2-range.pcap", 57230, 8080): (("http",), "as 57226: HTTP/1.1 upgraded to h2c"),
    ("pop3-bug-7709.pcap", 35692, 110): (("pop3",), "greeting +OK ... CMailServer, then USER/PASS on port 110: "
                                         "POP3 (RFC 1939 §4), not FTP"),
    ("pop3-bug-7709.pcap", 35693, 110): (("pop3",), "as 35692: +OK greeting, USER test, PASS"),
    ("http-connect-tls.pcap", 60472, 8002): (("unknown-plaintext",), (
        "inside CONNECT abc:443, the client sends 0a 16 03 00 00 00 00 ...: a newline, then a record header of "
        "length 0 (RFC 8446 §5.1 forbids empty handshake fragments); no handshake was sent and Suricata logs "
        "no TLS record, its tls comes from the 3-byte pattern")),
    ("smtp-errors.pcap", 50649, 465): (("tls", None, None), (
        "the client sends a ClientHello 16 03 01 02 00 01 00 01 fc 03 03 ... to port 465; the server answers "
        "220 v02.kerne.org ESMTP in plaintext: the client did speak TLS, no version was negotiated")),
    ("zeek-ssl-to-http-server.pcap", 62561, 80): (("tls", None, "vk.com"), (
        "ClientHello 16 03 01 00 72 01 ... 03 01 (TLS 1.0, not SSLv2) answered HTTP/1.1 400 Bad Request: "
        "nothing negotiated; Suricata's ssl2 is wrong either way")),
    ("zeek-tls-1.2-handshake-failure.pcap", 53525, 443): (("tls", None, None), (
        "the server answers only the fatal alert 15 03 03 00 02 02 28 (handshake_failure): nothing was "
        "negotiated; Suricata reports the alert record's version")),
    ("zeek-tls13draft16-chrome55-aborted.pcap", 53226, 443): ALERT,
    ("zeek-tls13draft16-chrome55-aborted.pcap", 53227, 443): ALERT,
}

# Where flowwarden is short, not Suricata: known and tracked, outside the decode stage.
FLOWWARDEN_GAPS: dict[tuple[str, int, int], str] = {
    ("pppoe-session-http.pcap", 57013, 80): "PPPoE session frames (ethertype 0x8864) are not decoded: no flow",
    ("tcp-fastopen-10.pcap", 51615, 443): (
        "a second connection on the same 5-tuple (a new SYN while the first, a Fast Open attempt, is not "
        "closed) is folded into the first flow by the flow table, which has already classified it"),
}
# Captures read_frames reports damaged (the rest of the file is still read): issue #15.
DAMAGED = {"bug-1450-04.pcap", "bug-1450-05.pcap"}


def suricata_answer(flow: dict) -> tuple:
    """Suricata's answer in flowwarden's terms: ("tls", version, sni) or (app,)."""
    app = flow["app_proto"]
    if app != "tls":
        return (APPS.get(app, app),)
    version = flow["tls_version"]
    if version is not None and version.startswith("TLS 1.3 draft"):
        version = "1.3-draft"
    return ("tls", VERSIONS.get(version, version), flow["sni"])


def flowwarden_answer(flow) -> tuple:
    if flow.app != "tls":
        return (flow.app,)
    return ("tls", flow.tls.version, flow.tls.sni)


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def replay(capture: str) -> tuple[list, list]:
    """flowwarden's TCP flows of a capture, and the damage read_frames reported."""
    ended, damaged = [], []
    table = FlowTable(on_end=lambda flow, cls: ended.append(flow), compiled=False)
    for batch in read_frames([PEER / capture], damaged=damaged):
        table.ingest(batch)
    table.flush()
    return [flow for flow in ended if flow.protocol == "TCP"], damaged


def _same_flow(candidates: list, start: float, end: float):
    """The flow Suricata means among ours on its 5-tuple: the busiest one overlapping its lifetime.

    Suricata folds a stray segment before a connection (a lone ACK and the RST answering it) into
    the connection; flowwarden keeps it as a separate record without bytes."""
    if not candidates:
        return None
    overlapping = [f for f in candidates if f.first_seen <= end + 1e-3 and f.last_seen >= start - 1e-3]
    best = max(overlapping or candidates, key=lambda f: f.packets_src + f.packets_dst)
    candidates.remove(best)
    return best


def compare(capture: str) -> list[tuple]:
    """(client port, server port, Suricata's answer, flowwarden's) for each flow where they differ."""
    ours: dict[tuple, list] = {}
    flows, damaged = replay(capture)
    assert bool(damaged) == (capture in DAMAGED)
    for flow in flows:
        ours.setdefault((flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port), []).append(flow)
    differ = []
    for flow in ANSWERS["captures"][capture]:
        key = (_ip(flow["src"]), flow["sport"], _ip(flow["dst"]), flow["dport"])
        mine = ours.get(key) or ours.get((key[2], key[3], key[0], key[1])) or []
        theirs = suricata_answer(flow)
        same = _same_flow(mine, _time(flow["start"]), _time(flow["end"]))
        got = None if same is None else flowwarden_answer(same)
        if not _agree(theirs, got):
            differ.append((flow["sport"], flow["dport"], theirs, got))
    return differ


def _agree(theirs: tuple, ours: tuple | None) -> bool:
    if ours is None:
        return False
    if theirs[0] == "tls" and ours[0] == "tls":
        version, sni = theirs[1:]
        # Suricata logs no TLS record when it saw no whole ClientHello: it then names no version or SNI.
        return (version is None or version == ours[1]) and (sni is None or sni == ours[2])
    return theirs == ours


def test_the_recorded_answers_cover_every_capture():
    assert sorted(ANSWERS["captures"]) == sorted(p.name for p in PEER.glob("*.pcap"))
    assert ANSWERS["suricata"].startswith("This is Suricata version 7.")


@pytest.mark.parametrize("capture", sorted(ANSWERS["captures"]))
def test_each_flow_has_suricatas_app_protocol(capture):
    differ = compare(capture)
    unexplained = [(c, s, theirs, ours) for c, s, theirs, ours in differ
                   if (capture, c, s) not in FLOWWARDEN_GAPS
                   and SURICATA_DIFFERS.get((capture, c, s), ("?",))[0] != ours]
    assert unexplained == []
    explained = {key for key in (*SURICATA_DIFFERS, *FLOWWARDEN_GAPS) if key[0] == capture}
    assert explained == {(capture, c, s) for c, s, _, _ in differ}, "an explanation no longer needed"


def test_agreement_with_suricata_is_measured():
    """Of every TCP flow Suricata reports, how many flowwarden names the same (the rest are in the tables)."""
    total = sum(len(flows) for flows in ANSWERS["captures"].values())
    differ = sum(len(compare(capture)) for capture in ANSWERS["captures"])
    assert total == 386
    assert differ == len(SURICATA_DIFFERS) + len(FLOWWARDEN_GAPS) == 41
