"""Bad input gets one line naming the file and what is wrong, exit 2, no traceback."""
from __future__ import annotations

import gzip
import os
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
    _fails(capsys, ["replay", str(tmp_path / "nope.pcap"), "--cluster", CLUSTER], "nope.pcap", "No such file",
           "nothing in it was judged")


def test_a_corrupt_pcap_is_named(capsys):
    _fails(capsys, ["replay", str(CRAFTED / "corrupt-magic.pcap"), "--cluster", CLUSTER],
           "corrupt-magic.pcap", "not a pcap or pcapng file")


def test_an_unknown_link_type_is_named(capsys, tmp_path):
    bad = tmp_path / "usb.pcap"
    bad.write_bytes(_pcap_header(189))
    _fails(capsys, ["replay", str(bad), "--cluster", CLUSTER], "usb.pcap", "unsupported link type 189")


def test_a_gzip_pcap_cut_before_its_first_record_is_named(capsys, tmp_path):
    bad = tmp_path / "cut.pcap.gz"
    bad.write_bytes(gzip.compress(Path(PCAP).read_bytes())[:30])
    _fails(capsys, ["replay", str(bad), "--cluster", CLUSTER], "cut.pcap.gz", "nothing in it was judged")


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
           f"flowwarden: error: {flows}: flows line 2: dst_ip", address, "not an IPv4 or IPv6 address")
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


# --- damaged captures: judge what is readable, one line per damaged file, exit 0/1/2 --------------

def _replay(capsys, argv: list[str]) -> tuple[int, list[str]]:
    status = main(["replay", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err.splitlines()


def _events(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_exit_statuses_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 complete" in out and "1 completed with damaged or skipped input" in out
    assert "2 nothing usable" in out


def test_a_cut_last_file_of_a_rotation_costs_only_its_last_record(capsys, tmp_path):
    whole = Path(PCAP).read_bytes()
    cut = tmp_path / "capture.pcap1"
    cut.write_bytes(whole[:-10])
    events = tmp_path / "events.jsonl"
    status, err = _replay(capsys, [PCAP, str(cut), "--cluster", CLUSTER, "--events", str(events)])
    assert status == 1
    size = len(whole) - 10
    damaged = [line for line in err if line.startswith("flowwarden: damaged input:")]
    assert len(damaged) == 1, err
    assert damaged[0].startswith(f"flowwarden: damaged input: {cut}: truncated: the last record is cut short")
    assert "46 records judged, the last" in damaged[0] and "bytes lost" in damaged[0]
    assert any(line.startswith("flowwarden: 93 packets") for line in err), err  # 47 + 46: everything readable was judged
    assert [e["kind"] for e in _events(events)] == ["policy-violation", "policy-violation"]
    assert cut.read_bytes() == whole[:size]


def test_a_file_with_a_bad_magic_among_good_ones_is_skipped_and_named(capsys, tmp_path):
    bad = CRAFTED / "corrupt-magic.pcap"
    before = bad.read_bytes()
    events = tmp_path / "events.jsonl"
    status, err = _replay(capsys, [str(bad), PCAP, "--cluster", CLUSTER, "--events", str(events)])
    assert status == 1
    assert err[0] == (f"flowwarden: damaged input: {bad}: not a pcap or pcapng file (magic 0xefbeadde); "
                      f"nothing in it was judged ({len(before):,} bytes lost)")
    assert err[1].startswith("flowwarden: 47 packets")
    assert len(_events(events)) == 2
    assert bad.read_bytes() == before


def test_a_missing_file_among_good_ones_is_named_and_the_rest_judged(capsys, tmp_path):
    status, err = _replay(capsys, [PCAP, str(tmp_path / "gone.pcap"), "--cluster", CLUSTER,
                                   "--events", str(tmp_path / "e.jsonl")])
    assert status == 1
    assert err[0] == (f"flowwarden: damaged input: {tmp_path / 'gone.pcap'}: cannot open: "
                      "No such file or directory; nothing in it was judged")


def test_no_readable_capture_at_all_is_exit_2_with_one_line_per_file(capsys, tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    status, err = _replay(capsys, [str(CRAFTED / "corrupt-magic.pcap"), str(empty), "--cluster", CLUSTER])
    assert status == 2
    assert len(err) == 2 and all(line.startswith("flowwarden: error: ") for line in err)
    assert "corrupt-magic.pcap" in err[0] and "empty.pcap: not a capture file" in err[1]


def test_a_truncated_single_file_is_judged_up_to_the_cut_and_exits_1(capsys, tmp_path):
    events = tmp_path / "events.jsonl"
    status, err = _replay(capsys, [str(CRAFTED / "truncated-file.pcap"), "--cluster", CLUSTER,
                                   "--events", str(events)])
    assert status == 1
    assert "truncated-file.pcap: truncated" in err[0] and "1 record judged" in err[0]
    assert events.exists()


def test_a_folder_replays_every_file_in_it(capsys, tmp_path):
    (tmp_path / "rot").mkdir()
    _copy(PCAP, tmp_path / "rot" / "a.pcap")
    _copy(PCAP, tmp_path / "rot" / "b.pcap")
    status, err = _replay(capsys, [str(tmp_path / "rot"), "--cluster", CLUSTER, "--events", str(tmp_path / "e")])
    assert status == 0
    assert any(line.startswith("flowwarden: 94 packets") for line in err), err


def test_a_dash_reads_the_capture_from_standard_input(tmp_path):
    run = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "-", "--cluster", CLUSTER],
                         input=Path(PCAP).read_bytes(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    kinds = [orjson.loads(line)["kind"] for line in run.stdout.splitlines()]
    assert kinds == ["policy-violation", "policy-violation"]


# --- cluster state: empty or useless is an error, unused kinds are said ---------------------------

@pytest.mark.parametrize("content, found", [
    (b"", "found nothing flowwarden uses"),
    (b"{}", "found 1 object without a kind"),
    (b'{"kind": "List", "items": []}', "found nothing flowwarden uses"),
    (b"kind: ConfigMap\nmetadata: {name: x}\ndata: {}\n", "found 1 ConfigMap"),
    (b'{"kind": "DeploymentList", "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}',
     "found 2 Deployment"),
])
@pytest.mark.parametrize("command", ["replay", "evaluate", "run"])
def test_a_cluster_state_without_pods_or_namespaces_is_an_error(capsys, tmp_path, content, found, command):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_bytes(content)
    argv = {"replay": ["replay", PCAP], "evaluate": ["evaluate", "--flows", os.devnull], "run": ["run"]}[command]
    _fails(capsys, [*argv, "--cluster", str(cluster)],
           f"flowwarden: error: {cluster}: no Pods and no Namespaces ({found})", "--allow-empty-cluster")
    assert cluster.read_bytes() == content


def test_allow_empty_cluster_accepts_it_and_says_what_was_ignored(capsys, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_bytes(b"kind: ConfigMap\nmetadata: {name: x}\n---\nkind: ConfigMap\nmetadata: {name: y}\n")
    assert main(["replay", PCAP, "--cluster", str(cluster), "--allow-empty-cluster",
                 "--events", str(tmp_path / "e.jsonl")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"flowwarden: warning: {cluster}: ignored 2 objects of kinds flowwarden does not use "
                      "(2 ConfigMap)")


def test_unused_kinds_next_to_pods_are_counted_in_one_warning(capsys, tmp_path):
    state = orjson.loads(Path(CLUSTER).read_bytes())
    state["items"] += [{"kind": "Deployment", "metadata": {"name": "a"}}, {"kind": "ConfigMap"},
                       {"kind": "Deployment", "metadata": {"name": "b"}}]
    cluster = tmp_path / "cluster.json"
    cluster.write_bytes(orjson.dumps(state))
    assert main(["replay", PCAP, "--cluster", str(cluster), "--events", str(tmp_path / "e.jsonl")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("ignored 3 objects of kinds flowwarden does not use (2 Deployment, 1 ConfigMap)")


# --- the summary: events vs occurrences, what "not judged" is, by namespace, no pod at either end ---

def _summary(err: str) -> list[str]:
    import re
    return [re.sub(r"[\d,]+ packets/s", "N packets/s", line) for line in err.splitlines()]


def test_the_summary_is_golden(capsys, tmp_path):
    broken = {"corrupt-magic.pcap", "truncated-file.pcap"}  # as in tests/scenarios
    crafted = sorted(str(p) for p in CRAFTED.glob("*.pcap*") if p.name not in broken)
    assert main(["replay", *crafted, "--cluster", str(CRAFTED / "cluster.json"),
                 "--events", str(tmp_path / "e.jsonl")]) == 0
    assert _summary(capsys.readouterr().err) == [
        "flowwarden: 123 packets (14 malformed, 9 not judged), 11 flows (3 allow, 8 deny; "
        "0 with no pod at either end), 6 events (8 occurrences: 8 policy-violation), N packets/s",
        "flowwarden: not judged: 4 icmp, 2 ip-fragment, 3 non-ip (packets that start no TCP, UDP or SCTP flow: "
        "ARP and other non-IP, ICMP, later IP fragments, other IP protocols)",
        "flowwarden: violations by namespace (either end): api 8, web 8",
    ]


def test_the_summary_counts_flows_with_no_pod_at_either_end_and_says_one_flow(capsys, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_bytes(b"kind: Namespace\nmetadata: {name: elsewhere}\n")
    assert main(["replay", PCAP, "--cluster", str(cluster), "--events", str(tmp_path / "e.jsonl"),
                 "--with-policies", str(ROOT / "tests" / "scenarios" / "what-if" / "candidates.yaml")]) == 0
    lines = _summary(capsys.readouterr().err)
    assert lines[0] == ("flowwarden: 47 packets (0 malformed, 7 not judged), 5 flows (5 allow; "
                        "5 with no pod at either end), 0 events (no violations), N packets/s")
    assert lines[-1] == "flowwarden: what-if: the candidate policies change the verdict of 0 flows"


def test_metrics_into_a_missing_directory_fails_at_start_naming_the_path_given(capsys, tmp_path):
    target = tmp_path / "nodir" / "m.prom"
    events = tmp_path / "events.jsonl"
    _fails(capsys, ["replay", PCAP, "--cluster", CLUSTER, "--metrics", str(target), "--events", str(events)],
           f"flowwarden: error: --metrics {target}: no such directory: {tmp_path / 'nodir'}")
    assert not events.exists()  # failed before the replay


def test_a_stream_cut_short_on_stdin_names_what_was_judged(tmp_path):
    data = Path(PCAP).read_bytes()[:-10]
    run = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "-", "--cluster", CLUSTER, "-o", "json"],
                         input=data, capture_output=True, timeout=60)
    assert run.returncode == 1
    first = run.stderr.decode().splitlines()[0]
    assert first.startswith("flowwarden: damaged input: -: truncated: the last record is cut short")
    assert "; 46 records judged, everything after byte " in first and first.endswith(" lost")
    assert "uncompressed" not in first


def test_an_empty_folder_is_nothing_to_replay(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["replay", str(tmp_path / "empty"), "--cluster", CLUSTER], "empty: no capture files in it")


def test_run_with_interfaces_that_match_nothing_on_this_node_is_one_line(capsys):
    err = _fails(capsys, ["run", "--cluster", CLUSTER, "--interfaces", "fwnothing*", "--listen", "127.0.0.1:0"],
                 "--interfaces fwnothing*: no interface of this node matches (it has: ")
    assert "lo" in err


def test_run_logs_the_port_it_bound_not_the_one_asked_for(tmp_path):
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--cluster", CLUSTER, "--interfaces", "lo",
                              "--listen", "127.0.0.1:0", "--events", str(tmp_path / "e")],
                             stderr=subprocess.PIPE, cwd=str(ROOT))
    try:
        started = next(orjson.loads(line) for line in agent.stderr if b"started" in line)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    assert started["msg"].startswith("started: 1 interface(s) matching lo to capture on; metrics on 127.0.0.1:")
    assert not started["msg"].endswith(":0")
