"""What the deploy tests share: the real tools (installed by `make test`: PyPI wheels in the venv,
Debian packages on PATH) and the kustomize builds of daemonset/."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAEMONSET = ROOT / "daemonset"
MONITORING = DAEMONSET / "monitoring"
VENV_BIN = Path(sys.executable).parent  # kubectl, hadolint and kubernetes-validate come as wheels
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ALERTS = ("FlowwardenEnforcementGap", "FlowwardenPolicyViolations", "FlowwardenPlaintextToTLSRequired",
          "FlowwardenBuiltinRuleViolated", "FlowwardenTLSVersionBelowMinimum", "FlowwardenStagedPolicyWouldDeny",
          "FlowwardenCaptureDrops", "FlowwardenInventoryNotSynced",
          "FlowwardenAgentDown", "FlowwardenAgentMissingOnNodes")
HEALTH_ALERTS = ("FlowwardenCaptureDrops", "FlowwardenInventoryNotSynced", "FlowwardenAgentDown",
                 "FlowwardenAgentMissingOnNodes")


def tool(name: str) -> str:
    """The tool's path: the venv's copy first (the wheels of pyproject's `test` extra), else PATH
    (Debian's packages from the Makefile's SYSTEM_TOOLS). Missing is a failure: `make test` installs it."""
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (pyproject's test extra, or the "
                    "Makefile's SYSTEM_TOOLS)")
    return found


def run(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def kustomize(path: Path | str) -> list[dict]:
    """`kubectl kustomize PATH`, parsed."""
    out = run(tool("kubectl"), "kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def with_monitoring(tmp_path: Path) -> Path:
    """The overlay README.md shows: the base plus the monitoring component."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(DAEMONSET, overlay)], "components": [os.path.relpath(MONITORING, overlay)]}))
    return overlay


def prometheus_rules() -> dict:
    """The PrometheusRule's spec: a Prometheus rule file's content."""
    return one(kustomize(MONITORING), "PrometheusRule")["spec"]
