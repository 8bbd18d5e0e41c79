"""docs/events.md shows real output: each example is a line the scenario tests expect, and every
field of an event is documented."""
import re
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "events.md").read_text()
EXPECTED = [orjson.loads(line) for path in sorted((ROOT / "tests" / "scenarios").glob("*/expected-events.jsonl"))
            for line in path.read_bytes().splitlines()]


def test_every_example_in_the_events_doc_is_real_output():
    examples = [orjson.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC, flags=re.S)]
    assert {e["kind"] for e in examples} == {"policy-violation", "plaintext", "tls-version", "rule", "policy-change"}
    for example in examples:
        assert example in EXPECTED


def test_every_event_field_is_documented():
    kind_fields = {"egress", "ingress", "version", "min_version", "before", "after", "before_reasons",
                   "rule", "check", "credentials", "node_port_service", "dns"}
    for event in EXPECTED:
        for name in set(event) - kind_fields:
            assert f"`{name}`" in DOC, f"field {name} is not in docs/events.md"
