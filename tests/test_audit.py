"""A few cases of benchmarks/audit.py, one per class of bad input, so that the audit keeps
running and its judge keeps judging (the whole audit: `python benchmarks/audit.py`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("audit", REPO / "benchmarks" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("klass", ["outin", "npz", "archive", "options", "inputs"])
def test_one_audit_case_per_class_ends_cleanly(audit, klass, tmp_path):
    audit.CACHE[:] = [tmp_path / "cache"]
    audit.CACHE[0].mkdir()
    good = audit.make_good(tmp_path / "good")
    cases = [case for case in audit.build_cases(good, "http://127.0.0.1:9")
             if case.klass == klass]
    outcome = audit.run_case(cases[len(cases) // 2], tmp_path / "case")
    assert outcome["verdict"] == "pass", outcome


def test_the_judge_catches_a_traceback_and_a_leftover(audit, tmp_path):
    case = audit.Case("npz", "x", [], token="bad.npz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "left.csv").write_text("i,j,score\n")
    assert "traceback" in audit.judge(case, 1, "Traceback (most recent call last):", {}, {},
                                      tmp_path, False)
    after = {"out": "dir", "out/left.csv": "abc"}
    verdict = audit.judge(case, 1, "rbmflow x: error: bad.npz: no", {}, after, tmp_path, False)
    assert verdict is not None and "left behind" in verdict
    assert audit.judge(case, 0, "", {}, {}, tmp_path, False) == "exit 0 where an error was due"


def test_score_and_mutations_accept_the_audit_s_good_inputs(audit, tmp_path):
    """The baseline: every other class judges refusals against these inputs, so the stages
    must take them (score's good rows carry a gap: aligned input, no homology check)."""
    audit.CACHE[:] = [tmp_path / "cache"]
    audit.CACHE[0].mkdir()
    good = audit.make_good(tmp_path / "good")
    cases = {case.name: case for case in audit.baseline_cases(good)}
    for name in ("score", "mutations"):
        outcome = audit.run_case(cases[name], tmp_path / name)
        assert outcome["verdict"] == "pass", outcome
