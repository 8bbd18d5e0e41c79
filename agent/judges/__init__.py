"""Judges: flows + endpoints -> findings. Registered by name; the config enables them.

Every judge follows `model.Judge`: a `name`, the `stage` of a connection's life
where its verdict is known, a pure `judge(flow, src, dst) -> list[Finding]`
reading the cluster through the narrow `ClusterView`, and `on_change` for the
inventory's changes.
"""
from __future__ import annotations

from typing import Callable, Sequence

from agent.config import Config, ConfigError
from agent.judges.netpol_judges import NetpolJudge, WhatIfJudge
from agent.judges.rules import build_rules
from agent.judges.tls import TlsJudge, load_tls_rules
from agent.model import ClusterView, Judge, NetworkPolicy

JUDGES: dict[str, Callable[[Config, ClusterView], Judge]] = {
    "netpol": lambda config, view: NetpolJudge(view),
    "tls": lambda config, view: TlsJudge(view, load_tls_rules({"tls": {"rules": config.tls.rules}}, source=config.source)),
}
# Names of the judges that expand to several: "rules", the enabled built-in rules (agent/judges/rules/).
JUDGE_SETS: dict[str, Callable[[Config, ClusterView], list[Judge]]] = {
    "rules": lambda config, view: build_rules(config.rules, view, source=config.source),
}


def build_judges(config: Config, view: ClusterView, *, candidates: Sequence[NetworkPolicy] = ()) -> list[Judge]:
    """The enabled judges, in the configured order; unknown names fail at start-up.

    With candidate policies, a `what-if` judge follows, sharing the netpol judge's engine."""
    unknown = [name for name in config.judges if name not in JUDGES and name not in JUDGE_SETS]
    if unknown:
        raise ConfigError(f"{config.source}: judges: unknown judge {unknown[0]!r} "
                          f"(known: {', '.join([*JUDGES, *JUDGE_SETS])})")
    judges = [judge for name in config.judges
              for judge in (JUDGE_SETS[name](config, view) if name in JUDGE_SETS else [JUDGES[name](config, view)])]
    for judge in judges:
        judge.name = getattr(judge, "name", None) or type(judge).__name__
    if candidates:
        netpol = next((j for j in judges if isinstance(j, NetpolJudge)), None)
        judges.append(WhatIfJudge(view, candidates, before=netpol.engine if netpol else None))
    return judges
