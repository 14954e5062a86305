"""UCB choices and self-consistency voting."""

from __future__ import annotations

from optiforge.agents.team.scheduler import Candidate, UCBScheduler, confident, same_value, vote


def test_ucb_prefers_higher_prior_then_rewarded_arm():
    s = UCBScheduler(exploration=0.5)
    s.add("sample", prior=0.6)
    s.add("repair", prior=0.5)
    s.add("code", prior=0.2)
    assert s.choose() == "sample"
    for _ in range(3):
        s.update("sample", 0.0)
    # sample keeps failing: the untried repair arm wins now
    assert s.choose() == "repair"
    s.update("repair", 1.0)
    assert s.choose() == "repair"


def test_ucb_explores_untried_arm_eventually():
    s = UCBScheduler(exploration=2.0)
    s.add("a", prior=0.9)
    s.add("b", prior=0.1)
    chosen = []
    for _ in range(12):
        arm = s.choose()
        chosen.append(arm)
        s.update(arm, 0.5)
    assert "b" in chosen


def test_disabled_arms_are_skipped_and_none_when_all_disabled():
    s = UCBScheduler()
    s.add("a")
    s.add("b")
    s.disable("a")
    assert s.choose() == "b"
    s.disable("b")
    assert s.choose() is None
    s.enable("a")
    assert s.choose() == "a"


def test_vote_clusters_by_relative_tolerance_and_breaks_ties_by_order():
    cands = [
        Candidate(5050.0, 1.0, "sample", 0),
        Candidate(4000.0, 1.0, "sample", 1),
        Candidate(5050.0000001, 1.0, "sample", 2),
    ]
    v = vote(cands)
    assert v.value == 5050.0 and v.weight == 2.0 and len(v.members) == 2
    assert confident(v)
    tie = vote([Candidate(1.0, 1.0, "s", 3), Candidate(2.0, 1.0, "s", 0)])
    assert tie.value == 2.0
    assert not confident(tie)
    assert vote([]).value is None


def test_same_value_rule():
    assert same_value(100.0, 100.00001)
    assert not same_value(100.0, 100.01)
