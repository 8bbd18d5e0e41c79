"""pyproject.toml declares every third-party package that agent/ imports directly."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = {"yaml": "pyyaml", "prometheus_client": "prometheus-client"}  # import name -> distribution


def _imported() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "agent" and n not in sys.stdlib_module_names}


def test_every_direct_import_of_agent_is_a_declared_dependency():
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower()
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    missing = {DISTRIBUTION.get(n, n).lower() for n in _imported()} - declared
    assert not missing, f"agent/ imports {sorted(missing)} but pyproject.toml does not declare them"
