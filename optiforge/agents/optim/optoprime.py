"""OptoPrime (Cheng et al., 2024, "Trace is the next AutoDiff").

One LLM call per step sees the minimal subgraph connecting the parameters to the outputs
that received feedback, rendered as #Code #Documentation #Variables #Constraints #Inputs
#Others #Outputs #Feedback, and replies with its reasoning then new values for the
variables. With ``memory > 0`` the prompt also lists earlier (variables, feedback) pairs so
the model does not retry what already failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from optiforge.agents.optim.base import Optimizer
from optiforge.agents.optim.errors import OptimizerError
from optiforge.agents.optim.replies import (
    DEFAULT_MAX_PROMPT_CHARS,
    MIN_VALUE_CHARS,
    jsonable,
    prompt_chars,
    suggestion_schema,
)
from optiforge.agents.optim.report import StepReport
from optiforge.llm.protocol import ChatClient
from optiforge.prompts import render_prompt

log = logging.getLogger("optiforge.agents.optim")

DEFAULT_INSTRUCTION = (
    "You need to change the values in #Variables to improve the output in accordance with "
    "#Feedback."
)


class OptoPrime(Optimizer):
    """LLM optimizer over the rendered trace subgraph.

    Args:
        parameters: trainable nodes, or a Module.
        llm: the LLM client.
        memory: past (variables, feedback) pairs shown in the prompt (0: none).
        instruction: the #Instruction section.
        example: include a worked example of the reply format (helps small models).
        value_chars: values in #Inputs/#Others/#Outputs longer than this are cut.
        max_prompt_chars: the prompt's length cap, in characters (about 3 per token on
            formulations and tables), so it fits the model's context with room for the
            reply: values (but not the inputs) are cut at half the length, again and again
            down to 200 characters, then fewer of the batch's runs are shown. The default fits a
            4096-token context; None: no cap.
        reasoning_chars: maximum length of the reasoning in structured replies.
    """

    kind = "optoprime"

    def __init__(
        self,
        parameters: Iterable[Any],
        llm: ChatClient,
        *,
        memory: int = 0,
        instruction: str = DEFAULT_INSTRUCTION,
        example: bool = True,
        value_chars: int = 1500,
        max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
        reasoning_chars: int = 800,
        max_tokens: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parameters, llm, max_tokens=max_tokens, max_prompt_chars=max_prompt_chars, **kwargs
        )
        if memory < 0:
            raise OptimizerError("memory must be 0 or more")
        self.memory_size = memory
        self.instruction = instruction
        self.example = example
        self.value_chars = value_chars
        self.reasoning_chars = reasoning_chars
        #: Earlier ``{"variables": {...}, "feedback": str}`` pairs, oldest first.
        self.memory: list[dict[str, Any]] = []
        self._pending_memory: dict[str, Any] | None = None

    # -- the prompt ---------------------------------------------------------------------------
    def sections(self, value_chars: int | None = None, runs: int | None = None) -> Any | None:
        """The rendered :class:`~optiforge.agents.optim.sections.Sections` of the feedback
        collected since the last ``zero_feedback()`` (values cut at ``value_chars``, default
        the optimizer's; the first ``runs`` feedback subgraphs, default all), or None when no
        feedback reached a parameter."""
        from optiforge.agents.optim.sections import render_sections
        from optiforge.trace.feedback import feedback_subgraphs

        subgraphs = feedback_subgraphs(self.parameters)
        if not subgraphs:
            return None
        subgraphs = subgraphs[: runs or len(subgraphs)]
        reached = {p for s in subgraphs for p in s.parameters}
        shown = [p for p in self.parameters if p in reached]
        chars = self.value_chars if value_chars is None else value_chars
        # The inputs (a word problem) keep their room while the steps' values shrink.
        return render_sections(
            subgraphs,
            parameters=shown,
            max_value_chars=chars,
            max_input_chars=max(chars, self.value_chars),
        )

    def fitted(self) -> tuple[Any, list[dict[str, str]]] | None:
        """(sections, messages) within ``max_prompt_chars``: values cut shorter, then fewer
        runs shown (see the class docs); None when no feedback reached a parameter."""
        from optiforge.trace.feedback import feedback_subgraphs

        sections = self.sections()
        if sections is None:
            return None
        messages = self.messages(sections)
        cap = self.max_prompt_chars
        if cap is None or prompt_chars(messages) <= cap:
            return sections, messages
        chars, runs = self.value_chars, len(feedback_subgraphs(self.parameters))
        while prompt_chars(messages) > cap and (chars > MIN_VALUE_CHARS or runs > 1):
            if chars > MIN_VALUE_CHARS:
                chars = max(MIN_VALUE_CHARS, chars // 2)
            else:
                runs -= 1
            sections = self.sections(chars, runs)
            messages = self.messages(sections)
        self.warn_over_cap(messages, f"one run and values cut at {chars}")
        return sections, messages

    def _memory_text(self) -> str:
        if not self.memory_size or not self.memory:
            return ""
        entries = []
        for i, m in enumerate(self.memory[-self.memory_size :], 1):
            variables = "\n".join(
                f"  {k} = {v!r}"[: self.value_chars] for k, v in m["variables"].items()
            )
            entries.append(
                f"[{i}] variables:\n{variables}\n    feedback: {m['feedback'][: self.value_chars]}"
            )
        return render_prompt("optimizers/optoprime_memory", entries="\n".join(entries))

    def messages(self, sections: Any) -> list[dict[str, str]]:
        """The chat messages for ``sections`` (exposed for inspection and tests)."""
        example = render_prompt("optimizers/optoprime_example") if self.example else ""
        names = ", ".join(f'"{n}": ...' for n in sections.parameters)
        user = render_prompt(
            "optimizers/optoprime",
            instruction=self.instruction,
            problem=sections.text(),
            memory=self._memory_text(),
            names=names,
        )
        return [
            {
                "role": "system",
                "content": render_prompt("optimizers/optoprime_system", example=example),
            },
            {"role": "user", "content": user},
        ]

    # -- the step -------------------------------------------------------------------------------
    def _propose(self, report: StepReport) -> tuple[str, dict[str, Any]]:
        fitted = self.fitted()
        self._pending_memory = None
        if fitted is None:
            return "no feedback reached any parameter: call backward() before step()", {}
        sections, messages = fitted
        shown: dict[str, Any] = dict(sections.parameters)
        canonical = {rendered: self.name_of(p) for rendered, p in shown.items()}
        report.detail["feedback"] = sections.feedback
        self._pending_memory = {
            "variables": {canonical[k]: jsonable(p.value) for k, p in shown.items()},
            "feedback": sections.feedback,
        }
        schema = suggestion_schema(shown, reasoning_chars=self.reasoning_chars)
        reasoning, values = self._ask(
            messages, report, names=list(shown), schema=schema, aliases=canonical
        )
        return reasoning, values

    def _after_step(self, report: StepReport) -> None:
        if self._pending_memory is not None and self.memory_size:
            self.memory.append(self._pending_memory)
        self._pending_memory = None

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["memory"] = self.memory
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        super().load_state_dict(state, restore_values=restore_values)
        memory = state.get("memory", [])
        if not isinstance(memory, list) or not all(
            isinstance(m, dict) and "variables" in m and "feedback" in m for m in memory
        ):
            raise OptimizerError("state 'memory' must be a list of {variables, feedback} entries")
        self.memory = [dict(m) for m in memory]
