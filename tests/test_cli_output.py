"""`-o text|json` and the event filters, through the CLI, against golden text and the scenario goldens."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
SCENARIOS = ROOT / "tests" / "scenarios"
HTTP = PCAPS / "http-allowed-and-denied"
FLOW_LINE = b'{"src_ip": "10.244.1.30", "dst_ip": "10.244.1.20", "dst_port": 8080, "protocol": "TCP"}\n'

HTTP_TEXT = """\
critical policy-violation other/batch-job-7b5d6c8f9-mn4zx → api/api-6d8f7b9c5-kx2lp:8080/TCP established \
ingress denied: api/api-allow-frontend selects api/api-6d8f7b9c5-kx2lp but no rule admits \
other/batch-job-7b5d6c8f9-mn4zx on 8080/TCP
warning policy-violation web/frontend-5f7c9d8b6-abcde → api/api-6d8f7b9c5-kx2lp:9090/TCP not-established \
ingress denied: api/api-allow-frontend selects api/api-6d8f7b9c5-kx2lp but no rule admits \
web/frontend-5f7c9d8b6-abcde on 9090/TCP
"""


def _replay(capsys, scenario: str, *extra: str) -> str:
    assert main(["replay", str(PCAPS / scenario / "capture.pcap"), "--cluster",
                 str(PCAPS / scenario / "cluster.json"), *extra]) == 0
    return capsys.readouterr().out


def _golden(scenario: str) -> list[dict]:
    return [orjson.loads(line) for line in (SCENARIOS / scenario / "expected-events.jsonl").read_bytes().splitlines()]


def _json(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines()]


def test_text_is_one_line_per_event_severity_first(capsys):
    assert _replay(capsys, "http-allowed-and-denied", "-o", "text") == HTTP_TEXT


def test_a_follow_up_says_how_many_more(capsys):
    crafted = sorted(str(p) for p in (PCAPS / "crafted").glob("*.pcap*")
                     if p.name not in {"corrupt-magic.pcap", "truncated-file.pcap"})
    assert main(["replay", *crafted, "--cluster", str(PCAPS / "crafted" / "cluster.json"), "-o", "text",
                 "--min-severity", "critical"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("critical policy-violation web/") for line in lines)
    assert lines[-1].endswith("443/TCP established ingress denied: api/api-allow-frontend selects "
                              "api/api-6d8f7b9c5-kx2lp but no rule admits web/frontend-5f7c9d8b6-abcde on 443/TCP "
                              "(+3 more)")


def test_json_is_the_default_when_stdout_is_not_a_terminal(capsys):
    assert _json(_replay(capsys, "http-allowed-and-denied")) == _golden("http-allowed-and-denied")


@pytest.mark.parametrize("no_color, coloured", [(None, True), ("1", False)])
def test_text_is_the_default_on_a_terminal_and_coloured_unless_no_color(no_color, coloured):
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = no_color
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "replay", str(HTTP / "capture.pcap"),
                             "--cluster", str(HTTP / "cluster.json")], stdout=follower,
                            stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = out.decode().replace("\r\n", "\n")
    if coloured:
        assert text.startswith("\033[1;31mcritical\033[0m policy-violation other/")
        assert "\n\033[33mwarning\033[0m policy-violation web/" in text
    else:
        assert text == HTTP_TEXT


@pytest.mark.parametrize("scenario, flag, value, kept", [
    ("tls-versions", "--kind", "tls-version", lambda e: e["kind"] == "tls-version"),
    ("tls-versions", "--kind", "plaintext,tls-version", lambda e: True),
    ("http-allowed-and-denied", "--namespace", "other",
     lambda e: "other" in (e["src"]["namespace"], e["dst"]["namespace"])),
    ("http-allowed-and-denied", "--verdict", "allow", lambda e: False),
    ("http-allowed-and-denied", "--verdict", "deny", lambda e: True),
    ("tls-versions", "--min-severity", "critical", lambda e: e["severity"] == "critical"),
    ("tls-versions", "--min-severity", "warning", lambda e: True),
])
def test_a_filter_keeps_exactly_the_events_it_names(capsys, scenario, flag, value, kept):
    produced = _json(_replay(capsys, scenario, "-o", "json", flag, value))
    assert produced == [e for e in _golden(scenario) if kept(e)]


def test_filters_leave_the_metrics_and_summary_whole(capsys, tmp_path):
    _replay(capsys, "http-allowed-and-denied", "--namespace", "nowhere", "--metrics", str(tmp_path / "m.prom"))
    # flowwarden_compact_flows_total tells how, not what: the golden was made with --flows (no compact table).
    how = lambda text: re.sub(r"(?m)^flowwarden_compact_flows_total .*$", "", text)  # noqa: E731
    assert how((tmp_path / "m.prom").read_text()) == how(
        (SCENARIOS / "http-allowed-and-denied" / "expected-metrics.prom").read_text())


def _evaluate(argv: list[str], data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "evaluate", "--cluster", str(HTTP / "cluster.json"),
                           *argv], input=data, capture_output=True, timeout=60)


def test_evaluate_text_is_one_line_per_verdict():
    lines = FLOW_LINE + b'{"src_ip": "10.244.1.10", "dst_ip": "10.244.2.20", "dst_port": 8080}\n'
    run = _evaluate(["-o", "text"], lines)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines()[0] == (
        "deny other/batch-job-7b5d6c8f9-mn4zx → api/api-6d8f7b9c5-kx2lp:8080/TCP "
        "ingress denied: api/api-allow-frontend selects api/api-6d8f7b9c5-kx2lp but no rule admits "
        "other/batch-job-7b5d6c8f9-mn4zx on 8080/TCP")
    assert run.stdout.decode().splitlines()[1].startswith("allow web/frontend-5f7c9d8b6-abcde → ")


def test_evaluate_filters_by_verdict_and_namespace():
    lines = FLOW_LINE + b'{"src_ip": "10.244.1.10", "dst_ip": "10.244.2.20", "dst_port": 8080}\n'
    denies = _evaluate(["-o", "json", "--verdict", "deny"], lines)
    assert [r["verdict"] for r in _json(denies.stdout.decode())] == ["deny"]
    web = _evaluate(["-o", "json", "--namespace", "web"], lines)
    assert [r["src"]["namespace"] for r in _json(web.stdout.decode())] == ["web"]
    critical = _evaluate(["-o", "json", "--min-severity", "critical"], lines)
    assert [r["verdict"] for r in _json(critical.stdout.decode())] == ["deny"]


# --- help, --version, evaluate's --check, flow records and before → after ----------------------

def test_version_prints_the_installed_version(capsys):
    import importlib.metadata
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"flowwarden {importlib.metadata.version('flowwarden')}\n"


def test_every_subcommand_has_a_description_and_every_argument_help():
    import argparse
    from agent.cli import _parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_evaluate_help_shows_the_input_format(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert '{"src_ip": "10.244.1.30", "dst_ip": "10.244.1.20", "dst_port": 8080, "protocol": "TCP"' in out
    assert "--check" in out and "flow records" in out


@pytest.mark.parametrize("lines, status", [(FLOW_LINE, 1), (b'{"src_ip": "10.244.1.10", "dst_ip": "10.244.2.20", '
                                                            b'"dst_port": 8080}\n', 0)])
def test_evaluate_check_exits_1_when_any_verdict_is_deny(lines, status):
    run = _evaluate(["--check", "-o", "json"], lines)
    assert run.returncode == status, run.stderr
    assert run.stderr == b""


def test_evaluate_reads_its_own_flow_records(tmp_path, capsys):
    flows = tmp_path / "flows.jsonl"
    _replay(capsys, "http-allowed-and-denied", "--flows", str(flows), "--events", str(tmp_path / "e.jsonl"))
    assert main(["evaluate", "--cluster", str(HTTP / "cluster.json"), "--flows", str(flows), "-o", "json"]) == 0
    verdicts = [r["verdict"] for r in _json(capsys.readouterr().out)]
    recorded = [r["verdict"] for r in _json(flows.read_text())]
    assert verdicts == recorded and "deny" in verdicts


def test_with_policies_takes_one_path_so_the_capture_is_not_swallowed(capsys, tmp_path):
    candidates = str(SCENARIOS / "what-if" / "candidates.yaml")
    assert main(["replay", "--cluster", str(HTTP / "cluster.json"), "--with-policies", candidates,
                 str(HTTP / "capture.pcap"), "--with-policies", candidates, "-o", "json"]) == 0
    produced = _json(capsys.readouterr().out)
    assert [e["kind"] for e in produced] == [e["kind"] for e in _golden("what-if")]


EXPLAIN_BEFORE_AFTER = """\
deny → allow: other/batch-job-7b5d6c8f9-mn4zx -> api/api-6d8f7b9c5-kx2lp on 8080/TCP
  before: deny [api/api-allow-frontend]
    egress open: no policy selects other/batch-job-7b5d6c8f9-mn4zx for egress
    ingress denied: api/api-allow-frontend selects api/api-6d8f7b9c5-kx2lp but no rule admits \
other/batch-job-7b5d6c8f9-mn4zx on 8080/TCP
  after: allow [api/api-allow-batch]
    egress open: no policy selects other/batch-job-7b5d6c8f9-mn4zx for egress
    ingress allowed: api/api-allow-batch rule 0 (peer 0, port 0) admits other/batch-job-7b5d6c8f9-mn4zx on 8080/TCP
"""


def test_explain_with_policies_shows_before_and_after():
    run = _evaluate(["--with-policies", str(SCENARIOS / "what-if" / "candidates.yaml"), "--explain"], FLOW_LINE)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode() == EXPLAIN_BEFORE_AFTER


def test_make_demo_says_what_every_bundled_scenario_shows_and_prints_text():
    about = dict(line.split(": ", 1) for line in (PCAPS / "demo.txt").read_text().splitlines()
                 if line and not line.startswith("#"))
    scenarios = {p.parent.name for p in PCAPS.glob("*/capture.pcap")} | {"crafted"}
    assert scenarios <= set(about), f"pcaps/demo.txt has no line for {sorted(scenarios - set(about))}"
    makefile = (ROOT / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:"):makefile.index("\ntools:")]
    assert demo.count("replay") == 2 and demo.count("-o text") == 2 and "pcaps/demo.txt" in demo
