"""SIGHUP reloads the config of a running agent; a bad new config keeps the old one running."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.rootonly import require_root
from tests.kubeapi import eventually

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "pcaps" / "http-allowed-and-denied" / "cluster.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(tmp_path):
    require_root("the agent, which checks at start that it may capture")
    config = tmp_path / "flowwarden.yaml"
    config.write_text("events:\n  window: 60\n")
    log = tmp_path / "stderr.log"
    port = _free_port()
    with log.open("wb") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--cluster", str(CLUSTER), "--config", str(config),
             "--interfaces", "lo", "--listen", f"127.0.0.1:{port}", "--events", str(tmp_path / "e")],
            stderr=err, stdout=subprocess.DEVNULL)
    try:
        eventually(lambda: _healthy(port), 15, "/healthz")
        lines = lambda: [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

        config.write_text("events:\n  window: soon\n")
        agent.send_signal(signal.SIGHUP)
        bad = eventually(lambda: [r for r in lines() if "events.window" in r.get("msg", "")], 15, "reload error")
        assert agent.poll() is None, "a bad config on reload must not stop the agent"
        assert bad[0]["level"] == "error"

        config.write_text("events:\n  window: 5\n")
        agent.send_signal(signal.SIGHUP)
        eventually(lambda: [r for r in lines() if "reloaded" in r.get("msg", "")], 15, "reload")
        assert _healthy(port)
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
