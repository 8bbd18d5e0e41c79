"""Bad input gets one line naming the file and what is wrong, exit 2, no traceback."""
from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "pcaps" / "http-allowed-and-denied"
CRAFTED = ROOT / "pcaps" / "crafted"
CLUSTER = str(SCENARIO / "cluster.json")
PCAP = str(SCENARIO / "capture.pcap")


def _pcap_header(linktype: int) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)


def _fails(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, err
    return err


def test_a_missing_pcap_is_named(capsys, tmp_path):
    _fails(capsys, ["replay", str(tmp_path / "nope.pcap"), "--cluster", CLUSTER], "nope.pcap", "no such file")


def test_a_corrupt_pcap_is_named(capsys):
    _fails(capsys, ["replay", str(CRAFTED / "corrupt-magic.pcap"), "--cluster", CLUSTER],
           "corrupt-magic.pcap", "not a pcap or pcapng file")


def test_a_truncated_pcap_is_named_after_its_complete_records_are_judged(capsys, tmp_path):
    events = tmp_path / "events.jsonl"
    _fails(capsys, ["replay", str(CRAFTED / "truncated-file.pcap"), "--cluster", CLUSTER,
                    "--events", str(events)], "truncated-file.pcap", "truncated")
    assert events.exists()  # the sinks were flushed before the error was reported


def test_an_unknown_link_type_is_named(capsys, tmp_path):
    bad = tmp_path / "usb.pcap"
    bad.write_bytes(_pcap_header(189))
    _fails(capsys, ["replay", str(bad), "--cluster", CLUSTER], "usb.pcap", "unsupported link type 189")


def test_a_gzip_pcap_that_is_cut_short_is_named(capsys, tmp_path):
    bad = tmp_path / "cut.pcap.gz"
    bad.write_bytes(gzip.compress(Path(PCAP).read_bytes())[:200])
    _fails(capsys, ["replay", str(bad), "--cluster", CLUSTER], "cut.pcap.gz")


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "invalid JSON"),
    (b"items: [a, b", "invalid YAML"),
    (b'{"kind": "List", "items": [{"kind": "Pod", "metadata": {"namespace": "x"}}]}', "malformed"),
    (b'{"kind": "List", "items": 3}', "without an items list"),
])
def test_a_malformed_cluster_file_is_named(capsys, tmp_path, content, problem):
    bad = tmp_path / "cluster.json"
    bad.write_bytes(content)
    _fails(capsys, ["replay", PCAP, "--cluster", str(bad)], str(bad), problem)


def test_a_policy_the_api_server_would_reject_names_object_and_field(capsys, tmp_path):
    cluster = orjson.loads(Path(CLUSTER).read_bytes())
    policy = next(i for i in cluster["items"] if i["kind"] == "NetworkPolicy")
    policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"] = [
        {"key": "app", "operator": "Maybe", "values": ["x"]}]
    bad = tmp_path / "cluster.json"
    bad.write_bytes(orjson.dumps(cluster))
    _fails(capsys, ["replay", PCAP, "--cluster", str(bad)], "api/api-allow-frontend", "operator", "Maybe")


def test_a_bad_config_is_named_with_its_field(capsys, tmp_path):
    config = tmp_path / "flowwarden.yaml"
    config.write_text("flows:\n  tcp_timeout: soon\n")
    _fails(capsys, ["replay", PCAP, "--cluster", CLUSTER, "--config", str(config)],
           "flowwarden.yaml", "flows.tcp_timeout")


def test_a_bad_tls_rule_is_rejected_at_start_up(capsys, tmp_path):
    config = tmp_path / "flowwarden.yaml"
    config.write_text("tls:\n  rules:\n    - ports: [443]\n      minVersion: '0.9'\n")
    _fails(capsys, ["replay", PCAP, "--cluster", CLUSTER, "--config", str(config)],
           "flowwarden.yaml", "tls.rules[0]")


def test_replay_exits_zero_with_violations_and_prints_a_summary(capsys, tmp_path):
    assert main(["replay", PCAP, "--cluster", CLUSTER, "--events", str(tmp_path / "e.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "47 packets" in err and "policy-violation" in err and "packets/s" in err


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(tmp_path / "x.pcap"), "--cluster",
                          CLUSTER], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert "x.pcap" in run.stderr


def test_sigterm_during_replay_still_writes_the_events_of_what_was_read(tmp_path):
    """A replay of a stream that never ends (a FIFO) is stopped by SIGTERM; the events are flushed."""
    import os
    import signal
    import time
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "replay", str(fifo), "--cluster", CLUSTER,
                             "--events", str(events)], stderr=subprocess.PIPE, text=True)
    data = Path(PCAP).read_bytes()
    with open(fifo, "wb") as writer:
        writer.write(data)  # the whole capture, but the writer stays open: the replay waits for more
        writer.flush()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    kinds = [orjson.loads(line)["kind"] for line in events.read_bytes().splitlines()]
    assert kinds == ["policy-violation", "policy-violation"]
    assert "interrupted" in err


# --- evaluate: an address that is not one is a line error ----------------------------------------

@pytest.mark.parametrize("address", ["10.244.1.300", "not-an-ip", "::gg"])
def test_evaluate_rejects_an_invalid_address_naming_the_line(capsys, tmp_path, address):
    flows = tmp_path / "flows.jsonl"
    flows.write_bytes(b'{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 80}\n'
                      + orjson.dumps({"src_ip": "10.0.0.1", "dst_ip": address, "dst_port": 80}) + b"\n")
    before = flows.read_bytes()
    _fails(capsys, ["evaluate", "--cluster", CLUSTER, "--flows", str(flows)],
           "flows line 2", "dst_ip", address, "not an IPv4 or IPv6 address")
    assert flows.read_bytes() == before


# --- an output never overwrites an input or another output ---------------------------------------

def _copy(src: str, dst: Path) -> Path:
    dst.write_bytes(Path(src).read_bytes())
    return dst


@pytest.mark.parametrize("flag", ["--events", "--flows", "--metrics"])
def test_an_output_naming_the_capture_is_refused_before_anything_is_written(capsys, tmp_path, flag):
    victim = _copy(PCAP, tmp_path / "victim.pcap")
    before = victim.read_bytes()
    _fails(capsys, ["replay", str(victim), "--cluster", CLUSTER, flag, str(victim)],
           f"{flag} {victim} is an input (PCAP {victim})", "refusing to overwrite")
    assert victim.read_bytes() == before


def test_an_output_naming_the_cluster_file_through_another_name_is_refused(capsys, tmp_path):
    cluster = _copy(CLUSTER, tmp_path / "cluster.json")
    (tmp_path / "link.json").hardlink_to(cluster)
    before = cluster.read_bytes()
    _fails(capsys, ["replay", PCAP, "--cluster", str(cluster), "--flows", str(tmp_path / "link.json")],
           "--flows", "is an input (--cluster", "refusing to overwrite")
    assert cluster.read_bytes() == before


def test_an_output_naming_a_candidate_policy_in_a_folder_is_refused(capsys, tmp_path):
    (tmp_path / "policies").mkdir()
    policy = tmp_path / "policies" / "lock.yaml"
    policy.write_text("kind: NetworkPolicy\n")
    _fails(capsys, ["replay", PCAP, "--cluster", CLUSTER, "--with-policies", str(tmp_path / "policies"),
                    "--events", str(policy)], "is an input (--with-policies")
    assert policy.read_text() == "kind: NetworkPolicy\n"


def test_events_and_flows_on_one_path_are_refused_and_nothing_is_created(capsys, tmp_path):
    out = tmp_path / "out.jsonl"
    _fails(capsys, ["replay", PCAP, "--cluster", CLUSTER, "--events", str(out), "--flows", str(out)],
           f"--flows {out} is another output (--events {out})")
    assert not out.exists()


def test_run_refuses_events_onto_its_config(capsys, tmp_path):
    config = tmp_path / "flowwarden.yaml"
    config.write_text("flows:\n  tcp_timeout: 30\n")
    _fails(capsys, ["run", "--cluster", CLUSTER, "--config", str(config), "--events", str(config)],
           "is an input (--config")
    assert config.read_text() == "flows:\n  tcp_timeout: 30\n"
