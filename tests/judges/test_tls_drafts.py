"""A TLS 1.3 draft (reported `1.3-draft`) is judged as 1.3 against minimum versions (issue #14)."""
from __future__ import annotations

from agent.model import TLS_RANK, TlsInfo, highest_version
from tests.judges.test_tls_judge import MIN, REQ, View, flow, judge, pod


def test_a_1_3_draft_meets_a_1_3_or_1_2_minimum():
    for minimum in ("1.2", "1.3"):
        dst = pod(annotations={REQ: "true", MIN: minimum})
        assert judge(View(), dst, flow(app="tls", tls=TlsInfo("1.3-draft", ("1.3-draft",)))) == []
        assert judge(View(), dst, flow(app="tls", tls=TlsInfo(None, ("1.3-draft", "1.2")))) == []


def test_1_3_draft_ranks_with_1_3_above_1_2_but_1_3_is_the_highest_of_both():
    assert TLS_RANK["1.3-draft"] == TLS_RANK["1.3"] > TLS_RANK["1.2"]
    assert highest_version(["1.2", "1.3-draft", "1.3"]) == "1.3"
    assert highest_version(["1.2", "1.3-draft"]) == "1.3-draft"
