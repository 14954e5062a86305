"""Run an agent over a dataset: score, journal, resume, report (see ``docs/evals.md``).

>>> from optiforge.evals import run_eval, is_correct
>>> is_correct(2333.33, "value", 2333.333, "value", rule="dp2")
True

The agent is any async function ``(Problem) -> Solution``; ``optiforge eval`` wires
:func:`optiforge.agents.asolve`. Nothing heavy is imported here.
"""

from __future__ import annotations

from optiforge.evals.journal import Journal, read_journal
from optiforge.evals.records import (
    FAILURE_LABELS,
    EvalError,
    EvalInterrupted,
    ResultRecord,
    RunMeta,
)
from optiforge.evals.report import compare_runs, mcnemar_exact, summarize, write_reports
from optiforge.evals.runner import (
    AgentFn,
    EvalOutcome,
    RichProgress,
    record_from_solution,
    run_eval,
)
from optiforge.evals.scoring import DEFAULT_RULE, RULES, is_correct, score_all

__all__ = [
    "DEFAULT_RULE",
    "FAILURE_LABELS",
    "RULES",
    "AgentFn",
    "EvalError",
    "EvalInterrupted",
    "EvalOutcome",
    "Journal",
    "ResultRecord",
    "RichProgress",
    "RunMeta",
    "compare_runs",
    "is_correct",
    "mcnemar_exact",
    "read_journal",
    "record_from_solution",
    "run_eval",
    "score_all",
    "summarize",
    "write_reports",
]
