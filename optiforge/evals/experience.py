"""What may enter the team's experience library: the solved, checked training problems of
eval runs (``optiforge experience build``; the library itself is
:mod:`optiforge.agents.team.experience`).

:func:`select_experience` reads ``optiforge eval`` run directories (their journals,
``results.jsonl``, and ``run.json``) and keeps each problem that was solved on the
formulation route (a formulation and a value) *and* checked correct against its answer
under the scoring rule. No problem of a held-out sample may enter: one in a shipped sample
other than the ``*-train`` / ``*-val`` splits (:func:`~optiforge.evals.tune.held_out_ids`,
the same set :func:`~optiforge.evals.tune.is_test_problem` reads), an OptiBench problem
that copies such an NL4Opt problem, or any problem whose text is the text of one, makes
the selection fail with :class:`HeldOutExperienceError`, or is left out with
``drop_held_out``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiforge.evals.records import EvalError

_WS = re.compile(r"\s+")


class ExperienceSourceError(EvalError):
    """Eval runs cannot feed an experience library (not a run directory, corrupt journal)."""


class HeldOutExperienceError(ExperienceSourceError):
    """A problem of a held-out (test) sample would enter the experience library."""


@dataclass
class Candidate:
    """A solved, checked training problem: what a library entry is made from."""

    id: str
    dataset: str
    text: str
    #: The winning formulation as the journal keeps it (a ModelIR dict).
    formulation: dict[str, Any]
    answer: float | None
    #: Index into :attr:`ExperienceSelection.runs`.
    run: int


@dataclass
class ExperienceSelection:
    """What :func:`select_experience` found in the runs."""

    candidates: list[Candidate] = field(default_factory=list)
    #: One dict per run directory: path, dataset, agent, model, sample, commits.
    runs: list[dict[str, Any]] = field(default_factory=list)
    rule: str = ""
    #: Problems read (the last journal line of each id, per run).
    read: int = 0
    #: Why -> ids of the problems left out.
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, why: str, pid: str) -> None:
        self.skipped.setdefault(why, []).append(pid)


def normalize_text(text: str) -> str:
    """A problem text as compared for identity (case and spacing ignored)."""
    return _WS.sub(" ", (text or "").strip().lower())


class HeldOut:
    """The held-out problems: the ids of every shipped sample but the training splits,
    their texts, and the OptiBench problems that copy one."""

    def __init__(self) -> None:
        from optiforge.datasets import load_dataset
        from optiforge.evals.sample import load_sample
        from optiforge.evals.tune import copy_of, held_out_ids, held_out_samples

        #: Every held-out id (the set ``is_test_problem`` reads), and the sample of each.
        self.ids = held_out_ids()
        self.sample: dict[str, str] = {}
        for name in held_out_samples():
            for pid in load_sample(name):
                self.sample.setdefault(pid, name)
        self.texts: dict[str, str] = {}
        self.copies: dict[str, str] = {}
        for ds in ("nl4opt", "optibench"):
            try:
                problems = load_dataset(ds)
            except Exception:  # a dataset that does not load has nothing to match
                continue
            for p in problems:
                if p.id in self.ids:
                    self.texts.setdefault(normalize_text(p.text), p.id)
                same = copy_of(p)
                if same:
                    self.copies[p.id] = same

    def why(self, pid: str, text: str) -> str | None:
        """Why problem ``pid`` is held out (``"ID (in SAMPLE)"``), or None if it may enter."""
        if pid in self.ids:
            return f"{pid} (in {self._where(pid)})"
        same = self.copies.get(pid)
        if same and same in self.ids:
            return f"{pid} (a copy of {same}, in {self._where(same)})"
        twin = self.texts.get(normalize_text(text))
        if twin is not None:
            return f"{pid} (the text of {twin}, in {self._where(twin)})"
        return None

    def _where(self, pid: str) -> str:
        return self.sample.get(pid, "a held-out sample")


def run_info(run_dir: Path) -> dict[str, Any]:
    """What a library's header says about one run directory (from its run.json)."""
    from optiforge.evals.journal import RUN_FILE

    info: dict[str, Any] = {"path": _shown_path(run_dir)}
    meta_path = run_dir / RUN_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExperienceSourceError(f"{meta_path}: not valid JSON ({exc})") from None
        info.update(
            dataset=meta.get("dataset"),
            agent=meta.get("agent"),
            model=meta.get("model"),
            sample=(meta.get("filters") or {}).get("sample"),
        )
        commits = sorted(
            {
                c
                for s in meta.get("sessions") or []
                if (c := (s.get("provenance") or {}).get("git_commit")) is not None
            }
        )
        if commits:
            info["commits"] = commits
    return info


def _shown_path(p: Path) -> str:
    """``p`` relative to the repository when inside it (no machine path in a header)."""
    try:
        return str(p.resolve().relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return p.name


def select_experience(
    run_dirs: Sequence[str | Path],
    *,
    rule: str | None = None,
    drop_held_out: bool = False,
    note: Callable[[str], None] = lambda _msg: None,
) -> ExperienceSelection:
    """The solved, checked training problems of ``run_dirs`` (see the module docs).

    A problem in several runs is taken from the first run that has it right. Raises
    :class:`HeldOutExperienceError` when a run holds a problem of a held-out sample
    (unless ``drop_held_out``), :class:`ExperienceSourceError` for a bad run directory.
    """
    from optiforge.evals.journal import RESULTS_FILE, read_journal
    from optiforge.evals.scoring import DEFAULT_RULE, RULES

    rule = rule or DEFAULT_RULE
    if rule not in RULES:
        raise ExperienceSourceError(f"unknown rule {rule!r}; rules: {', '.join(RULES)}")
    if not run_dirs:
        raise ExperienceSourceError("give at least one eval run directory")
    held = HeldOut()
    sel = ExperienceSelection(rule=rule)
    records: list[tuple[int, Any]] = []
    held_out: list[tuple[str, str]] = []
    for d in run_dirs:
        rd = Path(d)
        if not (rd / RESULTS_FILE).is_file():
            raise ExperienceSourceError(
                f"{rd}: not an eval run directory (no {RESULTS_FILE}); give directories "
                "written by `optiforge eval --out DIR`"
            )
        try:
            latest = read_journal(rd).latest()
        except EvalError as exc:  # names the corrupt line
            raise ExperienceSourceError(f"cannot read the journal of {rd}: {exc}") from None
        sel.runs.append(run_info(rd))
        for rec in latest.values():
            sel.read += 1
            why = held.why(rec.id, rec.text)
            if why is not None:
                held_out.append((rec.id, why))
            else:
                records.append((len(sel.runs) - 1, rec))
    if held_out:
        shown = "; ".join(w for _, w in held_out[:8]) + (" ..." if len(held_out) > 8 else "")
        if not drop_held_out:
            raise HeldOutExperienceError(
                f"{len(held_out)} problem(s) of held-out samples in the runs: {shown}. Only "
                "training problems (*-train / *-val splits, or in no shipped sample) may "
                "enter the library; pass --drop-held-out to leave them out."
            )
        note(f"left out {len(held_out)} problem(s) of held-out samples")
        for pid, _ in held_out:
            sel.skip("held out", pid)
    taken: set[str] = set()
    for run_i, rec in records:
        if rec.id in taken:
            sel.skip("in an earlier run", rec.id)
            continue
        if rec.correct.get(rule) is not True:
            sel.skip(f"not correct under {rule}", rec.id)
            continue
        if rec.prediction_kind != "value" or not rec.formulation or not rec.text.strip():
            sel.skip("no formulation (code route, infeasible or empty text)", rec.id)
            continue
        taken.add(rec.id)
        sel.candidates.append(
            Candidate(
                id=rec.id,
                dataset=rec.dataset,
                text=rec.text.strip(),
                formulation=rec.formulation,
                answer=rec.prediction,
                run=run_i,
            )
        )
    return sel
