"""Judges: flows + endpoints -> findings. Registered by name; the config enables them.

Every judge has `name` and a pure `judge(flow, src, dst) -> list[Finding]`
reading the cluster through the narrow `ClusterView`.
"""
from __future__ import annotations

from typing import Callable

from agent.config import Config, ConfigError
from agent.judges.netpol import NetpolJudge
from agent.judges.tls import TlsJudge, load_tls_rules
from agent.model import ClusterView

JUDGES: dict[str, Callable[[Config, ClusterView], object]] = {
    "netpol": lambda config, view: NetpolJudge(view),
    "tls": lambda config, view: TlsJudge(view, load_tls_rules({"tls": {"rules": config.tls.rules}}, source=config.source)),
}


def build_judges(config: Config, view: ClusterView) -> list:
    """The enabled judges, in the configured order; unknown names fail at start-up."""
    unknown = [name for name in config.judges if name not in JUDGES]
    if unknown:
        raise ConfigError(f"{config.source}: judges: unknown judge {unknown[0]!r} (known: {', '.join(JUDGES)})")
    judges = [JUDGES[name](config, view) for name in config.judges]
    for judge in judges:
        judge.name = getattr(judge, "name", None) or type(judge).__name__
    return judges
