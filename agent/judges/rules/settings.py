"""`rules:` of the config, validated into `RuleSettings` per rule (judges stage, at start-up and reload).

    rules:
      <id>:
        enabled: true|false
        allow: [{namespaceSelector, podSelector} | {ipBlock: {cidr, except}}]
        <the rule's own fields>: ...

An unknown rule id or field, or a malformed value, is a `ConfigError` naming the file and the field.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from agent.config import ConfigError
from agent.inventory.selectors import SelectorError, compile_selector
from agent.judges.rules.base import Allow, Rule, RuleSettings
from agent.judges.tls import parse_ip_block

ALLOW_FIELDS = ("namespaceSelector", "podSelector", "ipBlock")


def load_settings(rules: Mapping[str, type[Rule]], doc: object, *, source: str) -> dict[str, RuleSettings]:
    """Every rule's settings: its defaults, overridden by `doc` (the config's `rules` mapping)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: rules: expected a mapping of rule ids")
    for rule_id in doc:
        if rule_id not in rules:
            raise ConfigError(f"{source}: rules.{rule_id}: unknown rule (known: {', '.join(rules)})")
    return {rule_id: _settings(cls, {} if doc.get(rule_id) is None else doc[rule_id], where=f"rules.{rule_id}",
                               source=source)
            for rule_id, cls in rules.items()}


def _settings(cls: type[Rule], doc: object, *, where: str, source: str) -> RuleSettings:
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping, e.g. {{enabled: false}}")
    known = ("enabled", "allow", *cls.options)
    for key in doc:
        if key not in known:
            raise ConfigError(f"{source}: {where}.{key}: unknown field (known: {', '.join(known)})")
    enabled = doc.get("enabled", cls.enabled_by_default)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: {where}.enabled: expected true or false")
    allow = doc.get("allow") or []
    if not isinstance(allow, list):
        raise ConfigError(f"{source}: {where}.allow: expected a list")
    options = {}
    for key, (default, kind) in cls.options.items():
        value = doc.get(key, default)
        _check_option(value, kind, where=f"{where}.{key}", source=source)
        options[key] = value
    return RuleSettings(enabled, tuple(_allow(a, where=f"{where}.allow[{i}]", source=source)
                                       for i, a in enumerate(allow)), options)


def _allow(entry: object, *, where: str, source: str) -> Allow:
    if not isinstance(entry, Mapping) or not entry:
        raise ConfigError(f"{source}: {where}: expected a mapping with {', '.join(ALLOW_FIELDS)}")
    unknown = sorted(set(entry) - set(ALLOW_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: {where}.{unknown[0]}: unknown field (known: {', '.join(ALLOW_FIELDS)})")
    if "ipBlock" in entry and len(entry) > 1:
        raise ConfigError(f"{source}: {where}.ipBlock: cannot be combined with podSelector/namespaceSelector")
    try:
        networks, excepted = parse_ip_block(entry.get("ipBlock"), where=f"{where}.ipBlock", source=source)
        pod = compile_selector(entry["podSelector"], where=f"{where}.podSelector") if "podSelector" in entry else None
        ns = (compile_selector(entry["namespaceSelector"], where=f"{where}.namespaceSelector")
              if "namespaceSelector" in entry else None)
    except SelectorError as e:
        raise ConfigError(f"{source}: {e}") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return Allow(pod, ns, networks, excepted)


def _check_option(value: Any, kind: str, *, where: str, source: str) -> None:
    """A rule's own field: a list of ports, a list of addresses, or a non-negative number."""
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{source}: {where}: expected a non-negative number, got {value!r}")
        return
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {where}: expected a list")
    for i, item in enumerate(value):
        problem = _address_problem(item) if kind == "addresses" else _port_problem(item)
        if problem:
            raise ConfigError(f"{source}: {where}[{i}]: {problem}")


def _address_problem(item: Any) -> str | None:
    try:
        ipaddress.ip_address(item)
    except (ValueError, TypeError):
        return f"expected an IP address, got {item!r}"
    return None


def _port_problem(item: Any) -> str | None:
    if isinstance(item, Mapping) and (set(item) - {"port", "protocol"}
                                      or item.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP")):
        return "expected a port or {port, protocol: TCP|UDP|SCTP}"
    port = item.get("port") if isinstance(item, Mapping) else item
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"port must be an integer 1-65535, got {port!r}"
    return None
