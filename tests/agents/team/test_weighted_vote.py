"""Lever ``weighted_vote`` (issue #12): votes weighted by the critic's and the verifier's
verdicts, and a split vote that buys more samples. Scripted models, the real solver; the
real-model run is in test_hints_vote_slow.py."""

from __future__ import annotations

import sys
import time

import pytest

from optiforge.agents.team import TeamBudget, TeamConfig, asolve
from optiforge.agents.team.prompts import PromptSet, load_prompt_values
from optiforge.agents.team.scheduler import (
    Candidate,
    confident,
    split,
    vote,
    vote_weight,
    weighted,
)
from optiforge.agents.team.state import Attempt, RunState
from optiforge.agents.team.team import _split_pull
from optiforge.llm.testing import ScriptedLLM
from optiforge.solvers.result import SolveResult, SolveStatus

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_team import GOOD, INFEASIBLE, PRINTERS, WRONG, draft, router

# 33 is not in the text: the critic's number check calls it suspicious (objective 4910).
SUSPICIOUS = draft(["color <= 20", "bw <= 30", "color + bw <= 33"])


def cand(value, index, verdict="ok", verified=None, source="ir"):
    c = Candidate(value=value, weight=0.0, plan="sample", index=index, verdict=verdict)
    c.source, c.verified = source, verified
    c.weight = (1.0 if verdict == "ok" else 0.6) * (0.8 if source == "code" else 1.0)
    return c


# -- the weights --------------------------------------------------------------------------------
def test_weights_follow_the_verdicts():
    assert vote_weight("ok") == 1.0
    assert vote_weight("suspicious") == pytest.approx(0.4)
    assert vote_weight("ok", verified=True) == pytest.approx(1.5)
    assert vote_weight("ok", verified=False) == pytest.approx(0.2)
    assert vote_weight("ok", source="code") == pytest.approx(0.8)
    assert vote_weight("wrong") == 0.0
    # verified weighs more than unverified, refuted much less than a suspicious answer
    assert vote_weight("suspicious", verified=True) < vote_weight("ok", verified=True)
    assert vote_weight("ok", verified=False) < vote_weight("suspicious")


def test_the_critics_verdict_changes_the_winner():
    cands = [cand(5050, 0), cand(4910, 1, "suspicious"), cand(4910, 2, "suspicious")]
    assert vote(cands).value == 4910  # plain: 1.2 against 1.0
    v = vote(weighted(cands))
    assert v.value == 5050 and v.weight == 1.0 and v.total == pytest.approx(1.8)


def test_the_verifiers_verdict_changes_the_winner():
    cands = [cand(5050, 0, verified=True), cand(4700, 1), cand(4700, 2, verified=False)]
    assert vote(cands).value == 4700  # plain: two against one
    assert vote(weighted(cands)).value == 5050  # 1.5 against 1.2
    # and two verified agreeing answers are confident on their own
    two = weighted([cand(5050, 0, verified=True), cand(5050, 1, verified=True), cand(4700, 2)])
    assert confident(vote(two))


def test_a_split_vote_is_told_apart():
    assert split(vote([cand(1, 0), cand(2, 1)]))  # 50/50
    assert split(vote([cand(1, 0), cand(2, 1), cand(3, 2)]))
    assert not split(vote([cand(1, 0), cand(1, 1), cand(2, 2)]))  # 2/3 is a clear share
    assert not split(vote([cand(1, 0)]))  # one answer is not split, just thin
    assert not split(vote([]))
    assert vote([cand(1, 0), cand(2, 1), cand(1, 2)]).clusters == 2


def test_run_candidates_read_the_verifiers_field_when_it_exists():
    run = RunState(
        "p",
        {},
        PromptSet(load_prompt_values(None)),
        TeamBudget(),
        TeamConfig(weighted_vote=True),
        3,
    )
    for i, verified in enumerate([True, False, None]):
        a = Attempt(index=i, plan="sample", source="ir", verdict="ok")
        a.result = SolveResult(status=SolveStatus.OPTIMAL, objective=float(i))
        if verified is not None:
            a.verified = verified
        run.attempts.append(a)
    assert [c.weight for c in run.candidates()] == pytest.approx([1.5, 0.2, 1.0])
    # plain weights: an attempt the verifier proposed a fix for votes with half its weight
    assert [c.weight for c in run.candidates(weigh=False)] == [1.0, 0.5, 1.0]


# -- a run ---------------------------------------------------------------------------------------
async def test_weighting_changes_the_winner_of_a_run_and_fires():
    script = [GOOD, SUSPICIOUS, SUSPICIOUS]
    plain = await asolve(PRINTERS, llm=ScriptedLLM(router(script)), samples=3, budget=3)
    assert plain.answer == pytest.approx(4910) and plain.levers == []
    sol = await asolve(
        PRINTERS,
        llm=ScriptedLLM(router(script)),
        samples=3,
        budget=3,
        config=TeamConfig(weighted_vote=True),
    )
    assert sol.answer == pytest.approx(5050)
    assert sol.levers == ["weighted_vote"]
    step = next(s for s in sol.steps if "weighted_vote" in s.detail)
    assert step.detail["weighted_vote"]["plain_winner"] == pytest.approx(4910)
    assert step.detail["weighted_vote"]["members"] == [0]


async def test_a_split_vote_buys_samples_instead_of_a_repair():
    script = [GOOD, WRONG, INFEASIBLE, GOOD]
    # Plain: 5050 against 4700, the infeasible draft is repaired (critic + formulator).
    llm = ScriptedLLM(router(script))
    plain = await asolve(PRINTERS, llm=llm, samples=3, budget=5)
    assert "critic" in [r.tag for r in llm.requests] and plain.levers == []
    # Weighted: the split vote buys two more samples, which settle it.
    llm = ScriptedLLM(router(script))
    sol = await asolve(
        PRINTERS, llm=llm, samples=3, budget=5, config=TeamConfig(weighted_vote=True)
    )
    tags = [r.tag for r in llm.requests]
    assert tags == ["formulator"] * 5
    assert sorted(r.temperature for r in llm.requests) == [0.0, 0.7, 0.7, 0.7, 0.7]
    assert all(len(r.messages) == 2 for r in llm.requests)  # samples, no repair
    assert sol.answer == pytest.approx(5050) and sol.levers == ["weighted_vote"]
    step = next(s for s in sol.steps if "split_vote" in s.detail)
    assert step.detail["split_vote"] == {"clusters": 2, "share": 0.5, "samples": 2, "pull": 1}
    assert sol.calls <= 5


async def test_split_pulls_stay_within_the_budget():
    # Answers that never agree: the run spends its budget and stops there.
    answers = [draft(["color <= 20", "bw <= 30", f"color + bw <= {n}"]) for n in (35, 30, 20)]
    llm = ScriptedLLM(router(answers * 4))
    sol = await asolve(
        PRINTERS,
        llm=llm,
        samples=2,
        budget=5,
        config=TeamConfig(weighted_vote=True, split_pulls=5, code_route=False),
    )
    assert len(llm.requests) == 5 and sol.calls == 5
    pulls = [s.detail["split_vote"] for s in sol.steps if "split_vote" in s.detail]
    assert [p["samples"] for p in pulls] == [2, 1]  # the last one cut to the budget left
    assert sol.answer is not None and "weighted_vote" in sol.levers


def _state(config, budget=8, deadline=None, used=3):
    run = RunState(
        "p",
        {},
        PromptSet(load_prompt_values(None)),
        TeamBudget(llm_samples=budget),
        config,
        3,
        deadline=deadline,
    )
    run.llm_samples = used
    return run


SPLIT = vote([cand(1, 0), cand(2, 1)])


def test_split_pulls_are_bounded_and_need_the_lever():
    assert _split_pull(_state(TeamConfig()), SPLIT) is None  # lever off
    run = _state(TeamConfig(weighted_vote=True, split_pulls=1))
    assert _split_pull(run, vote([cand(1, 0), cand(1, 1)])) is None  # not split
    assert _split_pull(run, SPLIT) == ("sample", 2)
    assert _split_pull(run, SPLIT) is None  # at most split_pulls per run
    assert run.levers == ["weighted_vote"] and run.split_pulls == 1


def test_split_pulls_respect_the_budget():
    cfg = TeamConfig(weighted_vote=True)
    assert _split_pull(_state(cfg, budget=8, used=7), SPLIT) == ("sample", 1)
    run = _state(cfg, budget=8, used=8)
    assert _split_pull(run, SPLIT) is None and run.levers == []


def test_split_pulls_respect_the_deadline():
    cfg = TeamConfig(weighted_vote=True)
    run = _state(cfg, deadline=time.monotonic() + 5.0)
    run.note_pull("sample", 30.0)  # a sample pull measured 30 s: it does not fit
    assert _split_pull(run, SPLIT) is None and run.levers == []
    run = _state(cfg, deadline=time.monotonic() + 60.0)
    run.note_pull("sample", 30.0)
    assert _split_pull(run, SPLIT) == ("sample", 2)
    late = _state(cfg, deadline=time.monotonic() - 1.0)  # past the deadline: nothing
    assert _split_pull(late, SPLIT) is None


def test_levers_are_off_by_default():
    cfg = TeamConfig()
    assert cfg.weighted_vote is False and cfg.hints is False
