"""The team's roles as plain async calls: formulator, planner, coder, critic.

Each role renders its prompts (:class:`PromptSet`), asks its LLM, parses the reply and
returns it with a :class:`StepRecord` (calls, tokens, time). They hold no state; the team
(:mod:`.attempt`, :mod:`.team`) decides what to call when, and wraps each call in a
bundled trace op.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from optiforge.agents.solution import StepRecord
from optiforge.agents.team.prompts import PromptSet
from optiforge.agents.team.schemas import Critique, FormulationDraft, PlanChoice
from optiforge.llm.protocol import ChatClient

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass
class RoleReply:
    """What one role call produced: parsed value(s), raw text(s), and its step record."""

    values: list[Any]
    texts: list[str]
    step: StepRecord
    error: str | None = None

    def __repr__(self) -> str:
        # Shown to optimizers as the value of a role's node: what the role answered.
        if self.error:
            return f"RoleReply(error={self.error[:300]!r})"
        shown = self.texts[0] if self.texts else repr(self.values)
        return f"RoleReply({shown})"


def answered_step(
    role: str,
    plan: str | None,
    res: Any,
    started: float,
    summary: str,
    *,
    ok: bool = True,
    detail: dict[str, Any] | None = None,
) -> StepRecord:
    """The step record of one answered role call: its calls and tokens (a cached reply
    costs nothing) and time; ``detail`` adds to ``{"cached": ...}``."""
    cached = bool(getattr(res, "cached", False))
    return StepRecord(
        role=role,
        plan_id=plan,
        calls=0 if cached else 1,
        prompt_tokens=0 if cached else int(getattr(res, "prompt_tokens", 0) or 0),
        completion_tokens=0 if cached else int(getattr(res, "completion_tokens", 0) or 0),
        elapsed_s=round(time.perf_counter() - started, 3),
        ok=ok,
        summary=summary,
        detail={"cached": cached, **(detail or {})},
    )


def failed_reply(
    role: str, plan: str | None, started: float, exc: Exception, what: str | None = None
) -> RoleReply:
    """The reply of a role call that failed: a step with what it cost (a structured-output
    failure carries its calls and tokens, re-asks included, set by the client) and why.
    ``what`` names the call in the summary (default: "<role> call")."""
    msg = f"{type(exc).__name__}: {exc}"
    step = StepRecord(
        role=role,
        plan_id=plan,
        calls=getattr(exc, "calls", 0) or 1,
        prompt_tokens=getattr(exc, "prompt_tokens", 0),
        completion_tokens=getattr(exc, "completion_tokens", 0),
        elapsed_s=round(time.perf_counter() - started, 3),
        ok=False,
        summary=f"{what or role + ' call'} failed: {msg[:200]}",
    )
    return RoleReply(values=[], texts=[], step=step, error=msg)


def extract_code(text: str) -> str | None:
    """The Python program in a reply: the longest fenced block, else the text if it looks
    like code, else None."""
    blocks = [b.strip() for b in _CODE_BLOCK.findall(text or "")]
    if blocks:
        return max(blocks, key=len)
    stripped = (text or "").strip()
    if re.search(r"^\s*(import|from)\s+\w+", stripped, re.MULTILINE):
        return stripped.replace("```", "")
    return None


def formulator_messages(
    prompts: PromptSet,
    problem: str,
    previous: str | None = None,
    issues: str | None = None,
    hints: str | None = None,
    examples: list[tuple[str, str]] | None = None,
    insights: list[str] | None = None,
) -> list[dict[str, str]]:
    """Messages for a first formulation, or a repair of ``previous`` given ``issues``.

    ``hints`` (the error-class hints' "Watch out for:" block, :mod:`.hints`) is appended to
    the system message, after the instructions and examples, so the prefix the server's
    prompt cache keeps is the same for every problem and the problem text comes last.

    ``examples`` (problem text, formulation JSON) pairs (the experience lever,
    :mod:`.experience`) become user/assistant turns after the system message and before the
    problem, so the system prompt and the examples are one prefix that the server's prompt
    cache shares between the calls of a run; the ``insights`` of those examples are a short
    block just before the problem."""
    system = prompts.text("formulator_system")
    if hints:
        system = f"{system.rstrip()}\n\n{hints.strip()}"
    msgs = [{"role": "system", "content": system}]
    for text, shot in examples or []:
        msgs.append({"role": "user", "content": prompts.render("formulator_user", problem=text)})
        msgs.append({"role": "assistant", "content": shot})
    user = prompts.render("formulator_user", problem=problem)
    if insights:
        lessons = "\n".join(f"- {i}" for i in insights)
        user = f"Lessons from similar solved problems:\n{lessons}\n\n{user}"
    msgs.append({"role": "user", "content": user})
    if previous is not None:
        msgs.append({"role": "assistant", "content": previous})
        msgs.append(
            {"role": "user", "content": prompts.render("formulator_repair", issues=issues or "")}
        )
    return msgs


async def formulate(
    llm: ChatClient,
    prompts: PromptSet,
    problem: str,
    *,
    temperature: float = 0.0,
    seed: int | None = None,
    previous: str | None = None,
    issues: str | None = None,
    plan: str | None = None,
    max_tokens: int = 900,
    hints: str | None = None,
    examples: list[tuple[str, str]] | None = None,
    insights: list[str] | None = None,
) -> RoleReply:
    """Ask the formulator for one :class:`FormulationDraft` (a repair when ``previous``);
    ``hints`` go into its system message, few-shot ``examples`` and their ``insights``
    before the problem (:func:`formulator_messages`)."""
    started = time.perf_counter()
    role = "formulator"
    try:
        res = await llm.achat(
            formulator_messages(
                prompts,
                problem,
                previous,
                issues,
                hints=hints,
                examples=examples,
                insights=insights,
            ),
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            response_format=FormulationDraft,
            tag=role,
        )
    except Exception as exc:  # LLM errors and replies that never validated
        return failed_reply(role, plan, started, exc)
    draft = res.parsed[0]
    what = "repaired" if previous is not None else "wrote"
    step = answered_step(
        role,
        plan,
        res,
        started,
        f"{what} a model with {len(draft.variables)} variables and "
        f"{len(draft.constraints)} constraints (T={temperature:g})",
    )
    return RoleReply(values=[draft], texts=[res.texts[0]], step=step)


async def critique(
    llm: ChatClient,
    prompts: PromptSet,
    problem: str,
    model_text: str,
    result_text: str,
    checks_text: str,
    *,
    plan: str | None = None,
    max_tokens: int = 300,
) -> RoleReply:
    """Ask the critic for a :class:`Critique` of one solved (or failed) formulation."""
    started = time.perf_counter()
    role = "critic"
    msgs = [
        {"role": "system", "content": prompts.text("critic_system")},
        {
            "role": "user",
            "content": prompts.render(
                "critic_user",
                problem=problem,
                model=model_text,
                result=result_text,
                checks=checks_text or "- nothing",
            ),
        },
    ]
    try:
        res = await llm.achat(
            msgs, temperature=0.0, max_tokens=max_tokens, response_format=Critique, tag=role
        )
    except Exception as exc:
        return failed_reply(role, plan, started, exc)
    c = res.parsed[0]
    step = answered_step(
        role, plan, res, started, f"verdict {c.verdict}: {'; '.join(c.problems)[:160]}"
    )
    return RoleReply(values=[c], texts=[res.texts[0]], step=step)


async def plan_advice(
    llm: ChatClient, prompts: PromptSet, problem: str, *, max_tokens: int = 160
) -> RoleReply:
    """Ask the planner model whether the decisions are integer and the model nonlinear."""
    started = time.perf_counter()
    role = "planner"
    msgs = [
        {"role": "system", "content": prompts.text("planner_system")},
        {"role": "user", "content": prompts.render("planner_user", problem=problem)},
    ]
    try:
        res = await llm.achat(
            msgs, temperature=0.0, max_tokens=max_tokens, response_format=PlanChoice, tag=role
        )
    except Exception as exc:
        return failed_reply(role, None, started, exc)
    p = res.parsed[0]
    step = answered_step(
        role,
        None,
        res,
        started,
        f"integer={p.integer_variables}, nonlinear={p.nonlinear}: {p.reason[:120]}",
    )
    return RoleReply(values=[p], texts=[res.texts[0]], step=step)


def coder_messages(
    prompts: PromptSet,
    problem: str,
    *,
    hint: str = "",
    user_template: str = "coder_user",
    previous: str | None = None,
    error: str | None = None,
) -> list[dict[str, str]]:
    """Messages for the coder: a first program, or a repair of ``previous`` from ``error``."""
    msgs = [
        {"role": "system", "content": prompts.text("coder_system")},
        {
            "role": "user",
            "content": prompts.render(user_template, problem=problem, hint=hint),
        },
    ]
    if previous is not None:
        msgs.append({"role": "assistant", "content": f"```python\n{previous}\n```"})
        msgs.append({"role": "user", "content": prompts.render("coder_repair", error=error or "")})
    return msgs


async def write_code(
    llm: ChatClient,
    prompts: PromptSet,
    problem: str,
    *,
    temperature: float = 0.0,
    seed: int | None = None,
    hint: str = "",
    previous: str | None = None,
    error: str | None = None,
    plan: str | None = None,
    role: str = "coder",
    user_template: str = "coder_user",
    max_tokens: int = 1200,
) -> RoleReply:
    """Ask the coder for a Pyomo program; the value is the code (None if none found)."""
    started = time.perf_counter()
    msgs = coder_messages(
        prompts, problem, hint=hint, user_template=user_template, previous=previous, error=error
    )
    try:
        res = await llm.achat(
            msgs, temperature=temperature, seed=seed, max_tokens=max_tokens, tag=role
        )
    except Exception as exc:
        return failed_reply(role, plan, started, exc)
    code = extract_code(res.texts[0])
    step = answered_step(
        role,
        plan,
        res,
        started,
        f"wrote {len(code.splitlines())} lines of code" if code else "reply had no code",
    )
    step.ok = code is not None
    return RoleReply(values=[code], texts=[res.texts[0]], step=step)


def draft_json(draft: FormulationDraft) -> str:
    """The draft as compact JSON (what the model sees of its own earlier answer)."""
    return json.dumps(draft.model_dump(), separators=(",", ":"))
