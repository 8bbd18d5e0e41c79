"""Test-wide settings: hypothesis runs a cheap, repeatable profile by default (CI, `make test`);
FLOWWARDEN_FUZZ=deep explores randomly and longer (examples per test from FLOWWARDEN_FUZZ_EXAMPLES)."""
import os

from hypothesis import settings

settings.register_profile("default", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("deep", deadline=None, max_examples=int(os.environ.get("FLOWWARDEN_FUZZ_EXAMPLES", "5000")))
settings.load_profile("deep" if os.environ.get("FLOWWARDEN_FUZZ") == "deep" else "default")
