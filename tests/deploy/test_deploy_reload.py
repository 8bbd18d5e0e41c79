"""The DaemonSet's start script, run as the kubelet would run it: a ConfigMap change (the kubelet's
atomic swap of `..data` in the mounted directory) reaches the running agent as SIGHUP, a bad config is
logged and the running one kept, SIGTERM stops the agent cleanly within the grace period, and a
crashed agent ends the container with its status. No network: the agent captures on no interface."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.rootonly import require_root
from tests.deploy.helpers import DAEMONSET, ROOT, kustomize, one
from tests.kubeapi import eventually
from tests.test_run_reload import _free_port, _healthy

CLUSTER = ROOT / "pcaps" / "http-allowed-and-denied" / "cluster.json"


@pytest.fixture(scope="module")
def container() -> dict:
    require_root("the agent, which checks at start that it may capture")
    objects = kustomize(DAEMONSET)
    ds = one(objects, "DaemonSet")
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    return {"agent": agent, "configmap": one(objects, "ConfigMap", "flowwarden")}


class ConfigVolume:
    """A ConfigMap volume laid out as the kubelet's atomic writer does: `..<timestamp>/` holds the
    files, `..data` points at it, and each key is a symlink through `..data`; an update writes a new
    timestamped directory and renames a new `..data` link over the old one."""

    def __init__(self, path: Path, data: dict[str, str]):
        self.path, self.version = path, 0
        path.mkdir()
        self.update(data)
        for key in data:
            (path / key).symlink_to(Path("..data") / key)

    def update(self, data: dict[str, str]) -> None:
        self.version += 1
        stamp = f"..2026_12_01_00_00_{self.version:02d}.{os.getpid()}"
        (self.path / stamp).mkdir()
        for key, value in data.items():
            (self.path / stamp / key).write_text(value)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(stamp)
        os.rename(tmp, self.path / "..data")


def _start(container: dict, tmp_path: Path) -> tuple[subprocess.Popen, Path, int, ConfigVolume]:
    """The container's command and args as the kubelet runs them, with the paths and the address of
    this machine: the config directory in tmp_path, a static cluster file, loopback, no interface."""
    agent, configmap = container["agent"], container["configmap"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    mount = Path(env["CONFIG_DIR"])
    volume = ConfigVolume(tmp_path / "config", configmap["data"])
    port = _free_port()
    args = [str(volume.path / Path(a).relative_to(mount)) if a.startswith(f"{mount}/") else a for a in agent["args"]]
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    args += ["--cluster", str(CLUSTER), "--interfaces", "lo", "--events", str(tmp_path / "events")]
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(agent["command"] + args, stderr=err, stdout=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL, cwd=tmp_path,
                                   env={**os.environ, "CONFIG_DIR": str(volume.path),
                                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    eventually(lambda: _healthy(port), 20, "/healthz")
    return process, log, port, volume


def _lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _config(configmap: dict, **changes: str) -> dict[str, str]:
    text = configmap["data"]["flowwarden.yaml"]
    doc = yaml.safe_load(text)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        doc[section][name] = value
    return {"flowwarden.yaml": yaml.safe_dump(doc)}


def test_a_configmap_change_reloads_the_agent_in_place_and_sigterm_stops_it(container, tmp_path):
    process, log, port, volume = _start(container, tmp_path)
    try:
        volume.update(_config(container["configmap"], events__window="soon"))
        bad = eventually(lambda: [r for r in _lines(log) if "reload failed" in r.get("msg", "")], 15, "reload error")
        assert "events.window" in bad[0]["msg"] and bad[0]["level"] == "error"
        assert process.poll() is None and _healthy(port), "a bad config must not stop the agent"

        volume.update(_config(container["configmap"], events__window=5))
        eventually(lambda: [r for r in _lines(log) if r.get("msg", "").startswith("reloaded")], 15, "reload")
        signals = [r for r in _lines(log) if r.get("logger") == "flowwarden.reload"]
        assert len(signals) == 2, signals  # one SIGHUP per change, none while nothing changed
        assert _healthy(port)
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=15)
    grace = container_grace()
    assert status == 0, log.read_text()
    assert time.monotonic() - started < grace, "SIGTERM must end the container within its grace period"
    assert any(r.get("msg", "").startswith("stopped") for r in _lines(log))


def container_grace() -> float:
    ds = one(kustomize(DAEMONSET), "DaemonSet")
    return float(ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def test_a_crashed_agent_ends_the_container_with_its_status(container, tmp_path):
    process, log, _port, _volume = _start(container, tmp_path)
    try:
        agent = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _child_agent(p, process.pid))
        os.kill(agent, signal.SIGKILL)
        assert process.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _child_agent(proc: Path, parent: int) -> bool:
    try:
        ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        return ppid == parent and b"\0run\0" in (proc / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
