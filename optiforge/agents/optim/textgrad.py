"""A TextGrad-style optimizer: textual gradients on every edge, then a rewrite per variable.

``backward`` runs the trace engine's backward pass with :class:`TextualGradientPropagator`:
for each recorded step on a path from a parameter to the output, the LLM is asked how
each input should change to improve that step's output given the feedback on it (the
"textual gradient" along the edge). Gradients reaching a node by several paths are joined.
``step`` then asks the LLM, once per parameter that received a gradient, to rewrite the
parameter accordingly, under its constraints, showing gradients from earlier steps
(gradient memory) so that advice is not forgotten or undone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from optiforge.agents.optim.base import Optimizer
from optiforge.agents.optim.errors import OptimizerError, ReplyError
from optiforge.agents.optim.replies import MIN_VALUE_CHARS, prompt_chars, suggestion_schema
from optiforge.agents.optim.report import StepReport
from optiforge.llm.errors import ContextLengthError
from optiforge.llm.protocol import ChatClient
from optiforge.prompts import render_prompt
from optiforge.trace import ExceptionNode, MessageNode, Node
from optiforge.trace.feedback import Propagator, topological_order

log = logging.getLogger("optiforge.agents.optim")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "\n... (truncated)"


def _show(node: Node, limit: int) -> str:
    value = node.value
    if isinstance(node, ExceptionNode):
        return _clip(f"raised {node.message}\n{node.traceback}".strip(), limit)
    if isinstance(value, BaseException):
        return _clip(f"raised {type(value).__name__}: {value}", limit)
    return _clip(repr(value) if not isinstance(value, str) else value, limit)


class TextualGradientPropagator(Propagator):
    """Propagator asking the LLM for the feedback each input of a step should receive.

    Plugs into ``node.backward(feedback, propagator=...)`` of :mod:`optiforge.trace`. Only
    edges that lead back to one of the optimizer's parameters are asked about, so inputs
    that cannot change cost nothing.
    """

    def __init__(self, optimizer: TextGrad) -> None:
        self.optimizer = optimizer
        self._relevant: set[Any] = set()

    def init(self, output: Any, feedback: Any) -> Any:
        """Mark the nodes through which feedback can reach a parameter."""
        params = set(self.optimizer.parameters)
        relevant: set[Any] = set()
        for n in reversed(topological_order(output)):  # parents before children
            if n in params or any(p in relevant for p in n.parents):
                relevant.add(n)
        self._relevant = relevant
        return feedback if isinstance(feedback, str) else str(feedback)

    def propagate(self, child: Any, feedback: Any) -> Mapping[Any, Any]:
        """One LLM call per relevant parent of ``child``: its textual gradient."""
        out: dict[Any, str] = {}
        for index, parent in enumerate(child.parents):
            if parent in self._relevant and parent not in out:
                out[parent] = self.optimizer.edge_gradient(child, index, str(feedback))
        return out

    def combine(self, a: Any, b: Any) -> Any:
        """Gradients arriving by two paths are both kept."""
        if a is b or a == b:
            return a
        return f"{a}\n\n{b}"


class TextGrad(Optimizer):
    """TextGrad-style optimizer: LLM propagator for gradients, LLM rewrite per parameter.

    Args:
        parameters: trainable nodes (text, code, numbers...).
        llm: the LLM client.
        memory: gradients from this many earlier steps are shown per parameter (0: none).
        gradient_tokens: ``max_tokens`` for each gradient call.
        value_chars: values longer than this are truncated in prompts.
        max_prompt_chars: each request's length cap, in characters (about 3 per token on
            formulations and tables), so it fits the model's context with room for the
            reply: what the requests show is shortened to fit (see :meth:`edge_messages`
            and :meth:`_step_messages`). The default fits a 4096-token context; None: no
            cap.
    """

    kind = "textgrad"

    def __init__(
        self,
        parameters: Iterable[Any],
        llm: ChatClient,
        *,
        memory: int = 3,
        gradient_tokens: int = 160,
        value_chars: int = 2000,
        max_tokens: int = 768,
        **kwargs: Any,
    ) -> None:
        super().__init__(parameters, llm, max_tokens=max_tokens, **kwargs)
        if memory < 0:
            raise OptimizerError("memory must be 0 or more")
        self.memory = memory
        self.gradient_tokens = gradient_tokens
        self.value_chars = value_chars
        #: Past gradients per parameter name, oldest first.
        self.gradient_memory: dict[str, list[str]] = {}
        self._last_gradients: dict[str, str] = {}

    def propagator(self) -> TextualGradientPropagator:
        """A fresh LLM propagator for one backward pass."""
        return TextualGradientPropagator(self)

    # -- gradients --------------------------------------------------------------------------
    def edge_gradient(self, child: MessageNode, index: int, feedback: str) -> str:
        """Ask how input ``index`` of ``child``'s step should change, given ``feedback``.

        A request the model's context cannot hold (after :meth:`edge_messages` shortened
        it) passes the feedback on unchanged, as an empty gradient does.
        """
        messages, target = self.edge_messages(child, index, feedback)
        try:
            texts, _ = self._chat(messages, schema=None, max_tokens=self.gradient_tokens)
        except ContextLengthError as exc:
            log.warning("textgrad: %s; passing the feedback on", self.context_error(messages, exc))
            return feedback
        text = (texts[0] if texts else "").strip()
        if not text:
            log.warning(
                "textgrad: empty gradient for %s -> %s; passing the feedback on", child.name, target
            )
            return feedback
        return text

    def edge_messages(
        self, child: MessageNode, index: int, feedback: str
    ) -> tuple[list[dict[str, str]], str]:
        """The gradient request for input ``index`` of ``child``'s step, and the input's
        name. Trainable inputs and the feedback are shown up to ``value_chars`` (twice
        that for trainable text); under ``max_prompt_chars`` the step's source, other
        inputs and output are cut at half the length, again and again down to 200
        characters, until the request fits."""
        chars = self.value_chars
        messages, target = self._edge_messages(child, index, feedback, chars)
        cap = self.max_prompt_chars
        while cap is not None and prompt_chars(messages) > cap and chars > MIN_VALUE_CHARS:
            chars = max(MIN_VALUE_CHARS, chars // 2)
            messages, target = self._edge_messages(child, index, feedback, chars)
        self.warn_over_cap(messages, f"the step's values cut at {chars}")
        return messages, target

    def _edge_messages(
        self, child: MessageNode, index: int, feedback: str, chars: int
    ) -> tuple[list[dict[str, str]], str]:
        from optiforge.trace.render import assign_names

        op = child.op
        argnames = child.argnames
        parents = child.parents
        names = assign_names([*(p for p in parents if p.trainable), child, *parents])
        target = names[parents[index]]
        args = ", ".join(
            f"{argnames[i] if i < len(argnames) else f'arg{i}'}={names[p]}"
            for i, p in enumerate(parents)
        )
        lines = [f"{names[child]} = {op.name}({args})"]
        doc = op.doc or ""
        if doc:
            lines.append(f"Documentation: {doc}")
        source = op.source
        if source:
            lines.append(f"Source:\n{_clip(source, chars)}")
        inputs = []
        for p in dict.fromkeys(parents):
            role = " (trainable)" if p.trainable else ""
            desc = f"  # {p.description}" if p.description else ""
            shown = _show(p, self.value_chars * 2 if p.trainable else chars)
            inputs.append(f"{names[p]}{role} = {shown}{desc}")
        content = render_prompt(
            "optimizers/textgrad_gradient",
            operation="\n".join(lines),
            inputs="\n".join(inputs),
            output=f"{names[child]} = {_show(child, chars)}",
            feedback=_clip(feedback, self.value_chars),
            target=target,
        )
        messages = [
            {"role": "system", "content": render_prompt("optimizers/textgrad_gradient_system")},
            {"role": "user", "content": content},
        ]
        return messages, target

    # -- the step ----------------------------------------------------------------------------
    def _step_messages(self, p: Any, name: str, gradient: str) -> list[dict[str, str]]:
        """The rewrite request for parameter ``p``. Its value is shown up to twice
        ``value_chars``; under ``max_prompt_chars`` the earlier steps' feedback is left
        out oldest first, then the feedback is cut at half the length, again and again
        down to 200 characters, until the request fits."""
        past = self.gradient_memory.get(name, [])[-self.memory :] if self.memory else []
        chars = self.value_chars * 2
        messages = self._render_step(p, name, gradient, past, chars)
        cap = self.max_prompt_chars
        while (
            cap is not None and prompt_chars(messages) > cap and (past or chars > MIN_VALUE_CHARS)
        ):
            if past:
                past = past[1:]
            else:
                chars = max(MIN_VALUE_CHARS, chars // 2)
            messages = self._render_step(p, name, gradient, past, chars)
        self.warn_over_cap(messages, f"no earlier feedback and the feedback cut at {chars}")
        return messages

    def _render_step(
        self, p: Any, name: str, gradient: str, past: list[str], chars: int
    ) -> list[dict[str, str]]:
        value = p.value
        kind = "code" if p.kind == "code" else type(value).__name__
        memory = ""
        if past:
            memory = (
                "\n# Feedback from earlier steps (oldest first)\n"
                + "\n".join(f"- {_clip(g, 600)}" for g in past)
                + "\n"
            )
        constraint = p.constraint or ""
        content = render_prompt(
            "optimizers/textgrad_step",
            name=name,
            kind=kind,
            description=f"\n{p.description}" if p.description else "",
            value=_clip(value if isinstance(value, str) else repr(value), self.value_chars * 2),
            constraints=f"\n# Constraints\n{constraint}\n" if constraint else "",
            gradients=_clip(gradient, chars),
            memory=memory,
        )
        return [
            {"role": "system", "content": render_prompt("optimizers/textgrad_step_system")},
            {"role": "user", "content": content},
        ]

    def _propose(self, report: StepReport) -> tuple[str, dict[str, Any]]:
        self._last_gradients = {}
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        failures = 0
        for p in self.parameters:
            fb = p.feedback
            if fb is None or (isinstance(fb, str) and not fb.strip()):
                continue
            name = self.name_of(p)
            gradient = fb if isinstance(fb, str) else str(fb)
            self._last_gradients[name] = gradient
            try:
                reason, new = self._ask(
                    self._step_messages(p, name, gradient),
                    report,
                    names=[name],
                    schema=suggestion_schema({name: p}),
                )
            except ReplyError as exc:
                failures += 1
                report.errors.append(f"{name}: {exc}")
                continue
            values.update(new)
            reasons[name] = reason
        report.detail["gradients"] = dict(self._last_gradients)
        report.detail["reasons"] = reasons
        if not self._last_gradients:
            return "no feedback reached any parameter: call backward() before step()", {}
        if failures and not values:
            raise ReplyError(f"no usable reply for any of {list(self._last_gradients)}")
        return "\n".join(f"{k}: {v}" for k, v in reasons.items()), values

    def _after_step(self, report: StepReport) -> None:
        for name, gradient in self._last_gradients.items():
            self.gradient_memory.setdefault(name, []).append(gradient)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["gradient_memory"] = self.gradient_memory
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_values: bool = True) -> None:
        super().load_state_dict(state, restore_values=restore_values)
        memory = state.get("gradient_memory", {})
        if not isinstance(memory, dict) or not all(isinstance(v, list) for v in memory.values()):
            raise OptimizerError("state 'gradient_memory' must map parameter names to lists")
        self.gradient_memory = {k: [str(g) for g in v] for k, v in memory.items()}
