"""Tests that need root skip, loudly, when `make test` runs as another user (CI runs as root).

Root is what network namespaces, AF_PACKET capture (which `flowwarden run` checks at start),
conntrack and capability tests need; everything else runs as any user.
"""
import os

import pytest


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"NEEDS ROOT for {what}: run `make test` as root (CI does)")
