"""Budget spending: a UCB1 bandit over plans, and self-consistency voting on objectives.

Each plan (sample more IR formulations, repair a formulation with the critic's feedback,
write Pyomo code) is an arm. A pull costs LLM samples and solver runs; its reward is 1 when
it produced a solved answer that passed the critic's checks and agrees with an answer seen
before, 0.5 for a new clean answer, 0.2 for a solved but suspicious one, and 0 for a
failure. UCB1 (mean reward + c*sqrt(ln N / n)) then spends the remaining budget on the plan
whose repairs are working, as in OptimAI. Voting stops the run early once the answers agree.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace


@dataclass
class Arm:
    """One plan's statistics."""

    name: str
    prior: float = 0.5  # optimistic initial mean, counted as one pseudo-pull
    pulls: int = 0
    reward: float = 0.0
    enabled: bool = True

    @property
    def mean(self) -> float:
        return (self.reward + self.prior) / (self.pulls + 1)


@dataclass
class UCBScheduler:
    """UCB1 over named arms. ``choose()`` returns the arm to pull next (None if none left)."""

    arms: dict[str, Arm] = field(default_factory=dict)
    exploration: float = 0.8

    def add(self, name: str, prior: float = 0.5) -> None:
        """Register a plan with an initial mean reward ``prior`` (0..1)."""
        self.arms[name] = Arm(name=name, prior=prior)

    def disable(self, name: str) -> None:
        """Stop choosing ``name`` (e.g. nothing left to repair)."""
        if name in self.arms:
            self.arms[name].enabled = False

    def enable(self, name: str) -> None:
        """Allow ``name`` again."""
        if name in self.arms:
            self.arms[name].enabled = True

    def score(self, name: str) -> float:
        """The UCB1 index of ``name``."""
        arm = self.arms[name]
        total = sum(a.pulls + 1 for a in self.arms.values())
        return arm.mean + self.exploration * math.sqrt(math.log(total + 1) / (arm.pulls + 1))

    def choose(self, exclude: Collection[str] = ()) -> str | None:
        """The enabled arm with the highest UCB index (ties: registration order), leaving
        out the arms named in ``exclude`` (e.g. plans that no longer fit the time left)."""
        best, best_score = None, -math.inf
        for name, arm in self.arms.items():
            if not arm.enabled or name in exclude:
                continue
            s = self.score(name)
            if s > best_score + 1e-12:
                best, best_score = name, s
        return best

    def update(self, name: str, reward: float) -> None:
        """Record the reward (0..1) of one pull of ``name``."""
        arm = self.arms[name]
        arm.pulls += 1
        arm.reward += max(0.0, min(1.0, reward))

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-arm pulls, mean and enabled flag, for the solution's trace."""
        return {
            n: {"pulls": a.pulls, "mean": round(a.mean, 3), "enabled": a.enabled}
            for n, a in self.arms.items()
        }


def same_value(a: float, b: float, rel: float = 1e-6) -> bool:
    """Two objective values agree (the benchmark rule: |a-b|/(|b|+1) < rel)."""
    return abs(a - b) / (abs(b) + 1.0) < rel


@dataclass
class Candidate:
    """One solved answer that takes part in the vote.

    ``verdict`` (the critic's: ``ok`` or ``suspicious``), ``source`` (``ir`` or ``code``)
    and ``verified`` (the verifier's: True, False, or None when it did not look) are what
    :func:`weighted` weighs the vote by.
    """

    value: float
    weight: float
    plan: str
    index: int  # position in the team's list of attempts
    verdict: str = "ok"
    source: str = "ir"
    verified: bool | None = None
    #: A factor on the vote whatever the weighting (a template attempt's ``template_weight``).
    factor: float = 1.0


#: Weighted voting (``TeamConfig.weighted_vote``): a vote's weight by the critic's verdict...
VERDICT_WEIGHTS = {"ok": 1.0, "suspicious": 0.4}
#: ... times a factor by the verifier's verdict (True weighs more, False much less) ...
VERIFIED_FACTORS = {True: 1.5, None: 1.0, False: 0.2}
#: ... times this for a program (the code route) rather than a checked formulation.
CODE_FACTOR = 0.8


def vote_weight(verdict: str, source: str = "ir", verified: bool | None = None) -> float:
    """The weight of one answer in a weighted vote: the critic's verdict (ok 1, suspicious
    0.4) times the verifier's (verified 1.5, refuted 0.2, not looked at 1), x0.8 for code."""
    base = VERDICT_WEIGHTS.get(verdict, 0.0) * VERIFIED_FACTORS.get(verified, 1.0)
    return base * (CODE_FACTOR if source == "code" else 1.0)


def weighted(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates with their weights from the critic's and the verifier's verdicts
    (times each one's own ``factor``)."""
    return [
        replace(c, weight=vote_weight(c.verdict, c.source, c.verified) * c.factor)
        for c in candidates
    ]


@dataclass
class VoteResult:
    """The winning cluster of agreeing objective values."""

    value: float | None
    weight: float
    total: float
    members: list[Candidate]
    #: How many clusters of agreeing answers there are.
    clusters: int = 1

    @property
    def share(self) -> float:
        return self.weight / self.total if self.total else 0.0


def vote(candidates: list[Candidate], rel: float = 1e-6) -> VoteResult:
    """Cluster candidates by value and return the heaviest cluster.

    Ties go to the cluster whose first member came earliest (the greedy formulation first).
    """
    clusters: list[list[Candidate]] = []
    for c in candidates:
        for cl in clusters:
            if same_value(c.value, cl[0].value, rel):
                cl.append(c)
                break
        else:
            clusters.append([c])
    total = sum(c.weight for c in candidates)
    if not clusters:
        return VoteResult(value=None, weight=0.0, total=0.0, members=[], clusters=0)
    best = max(clusters, key=lambda cl: (sum(c.weight for c in cl), -min(c.index for c in cl)))
    return VoteResult(
        value=best[0].value,
        weight=sum(c.weight for c in best),
        total=total,
        members=best,
        clusters=len(clusters),
    )


def confident(v: VoteResult, min_votes: float = 2.0, min_share: float = 0.6) -> bool:
    """Stop rule: enough agreeing weight, and a clear majority."""
    return v.value is not None and v.weight >= min_votes and v.share >= min_share


def split(v: VoteResult, min_share: float = 0.6) -> bool:
    """A split vote: answers disagree and no cluster has a clear share (``min_share``), so
    taking the plurality would be a guess (weighted voting buys more samples instead)."""
    return v.value is not None and v.clusters >= 2 and v.share < min_share
