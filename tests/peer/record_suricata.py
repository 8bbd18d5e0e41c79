"""Record Suricata's answer for every TCP flow of the suricata-peer captures, once.

    python -m tests.peer.record_suricata   # needs `suricata` 7 on PATH

Writes tests/peer/suricata_answers.json, which test_app_protocols.py compares
flowwarden with. The captures are read in place from ../shared/peer-pcaps/
(never copied). Suricata came from Debian bookworm-backports (7.0.10):

    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list
    apt-get update && apt-get install -t bookworm-backports suricata

To refresh: install it, run this, review `git diff tests/peer/suricata_answers.json`.
The stock suricata.yaml is used with the parsers it leaves off switched on (PostgreSQL,
IMAP) and checksums ignored (`-k none`: many captures were taken with offloading).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = HERE.parents[2] / "shared" / "peer-pcaps" / "suricata-peer"
ANSWERS = HERE / "suricata_answers.json"
SETTINGS = ("app-layer.protocols.pgsql.enabled=yes", "app-layer.protocols.imap.enabled=yes")


def suricata_flows(capture: Path) -> list[dict]:
    """Suricata's TCP flows of one capture, each with its app protocol and TLS version/SNI."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["suricata", "-r", str(capture), "-l", out, "-k", "none", "--runmode", "single"]
        for setting in SETTINGS:
            cmd += ["--set", setting]
        subprocess.run(cmd, check=True, capture_output=True)
        events = [json.loads(line) for line in Path(out, "eve.json").read_text().splitlines()]
    tls: dict[int, dict] = {}
    for event in events:
        if event["event_type"] == "tls":
            tls.setdefault(event["flow_id"], event["tls"])  # the first handshake of the flow
    flows = []
    for event in events:
        if event["event_type"] != "flow" or event["proto"] != "TCP":
            continue
        hello = tls.get(event["flow_id"], {})
        flows.append({
            "start": event["flow"]["start"], "end": event["flow"]["end"],
            "src": event["src_ip"], "sport": event["src_port"],
            "dst": event["dest_ip"], "dport": event["dest_port"],
            "bytes_toserver": event["flow"]["bytes_toserver"], "bytes_toclient": event["flow"]["bytes_toclient"],
            "app_proto": event.get("app_proto"), "app_proto_orig": event.get("app_proto_orig"),
            "tls_version": hello.get("version"), "sni": hello.get("sni"),
        })
    return sorted(flows, key=lambda f: (f["start"], f["src"], f["sport"], f["dst"], f["dport"]))


def _dump(answers: dict) -> str:
    """JSON with one flow per line: small, and a refresh diffs flow by flow."""
    lines = [f'{{"suricata": {json.dumps(answers["suricata"])}, "settings": {json.dumps(answers["settings"])},',
             ' "captures": {']
    names = sorted(answers["captures"])
    for i, name in enumerate(names):
        flows = [json.dumps(f, sort_keys=True, separators=(",", ":")) for f in answers["captures"][name]]
        body = ",\n   ".join(flows)
        lines.append(f'  {json.dumps(name)}: [\n   {body}]' if flows else f'  {json.dumps(name)}: []')
        lines[-1] += "," if i < len(names) - 1 else ""
    return "\n".join(lines + [" }}"]) + "\n"


def main() -> int:
    version = subprocess.run(["suricata", "-V"], check=True, capture_output=True, text=True).stdout.strip()
    answers = {"suricata": version, "settings": list(SETTINGS), "captures": {}}
    for capture in sorted(PEER.glob("*.pcap")):
        answers["captures"][capture.name] = suricata_flows(capture)
    ANSWERS.write_text(_dump(answers))
    total = sum(len(v) for v in answers["captures"].values())
    print(f"{version}: {total} TCP flows in {len(answers['captures'])} captures -> {ANSWERS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
