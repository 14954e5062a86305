"""An agent described as plain data (:class:`AgentSpec`), so it can be built in another
process: a Ray worker, or any executor (:mod:`optiforge.evals.executor`).

:func:`build_agent` turns a spec into a :class:`BuiltAgent`: the team or direct agent
(:func:`optiforge.agents.asolve`) or your own ``--agent-fn`` function, with its LLM client
built from the spec's settings once per process. ``functools.partial(build_agent, spec)`` is
the picklable factory the Ray executor ships to its workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiforge.errors import OptiforgeError
from optiforge.llm.protocol import ChatClient


class AgentSpecError(OptiforgeError):
    """An ``--agent-fn`` cannot be loaded, or an agent was asked for something it cannot do."""


@dataclass(frozen=True)
class AgentSpec:
    """How to build the agent in any process. Picklable: it crosses to Ray workers.

    - ``agent``: ``team`` or ``direct`` (:func:`optiforge.agents.asolve`), unless
      ``agent_fn`` names your own async ``(Problem) -> Solution`` function as
      ``module:function`` or ``path/to/file.py:function``. If that function has a
      parameter named ``llm``, it is given the configured client (built from ``settings``
      once per process), so its usage and server shares are reported like the team's.
    - ``settings``: the :func:`optiforge.config.load_settings` result (model, server URLs,
      cache...); ``base_url`` overrides its server URL(s), e.g. with the embedded server
      the driver started.
    - ``budget``, ``samples``, ``prompts``: passed to the agent as by ``optiforge eval``.
    - ``llm_concurrency``: requests in flight per client (one client per process).
    - ``time_limit``: seconds per problem, from the start of :meth:`BuiltAgent.solve`
      (``optiforge eval --timeout``): the team and direct agents plan within it and return
      their best answer at it (see :func:`optiforge.agents.asolve`). An ``agent_fn`` that
      has a parameter named ``time_limit`` is given it too.
    - ``levers``: the team's accuracy levers, ``{lever: on}``
      (:func:`optiforge.agents.team.levers.parse_levers`); None: the team's defaults.
    - ``experience_library``: the experience lever's library file (None: the shipped one);
      on a Ray cluster every worker must be able to read this path.
    """

    agent: str = "team"
    agent_fn: str | None = None
    settings: Any = None
    base_url: str | None = None
    no_cache: bool = False
    llm_concurrency: int | None = None
    budget: int | None = None
    samples: int | None = None
    prompts: dict[str, str] | None = None
    time_limit: float | None = None
    levers: dict[str, bool] | None = None
    experience_library: str | None = None


def load_agent_fn(spec: str) -> Any:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise AgentSpecError(
            f"--agent-fn {spec!r} must look like module:function or file.py:function"
        )
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            mod_spec = importlib.util.spec_from_file_location(f"_optiforge_agent_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None or not path.exists():
                raise AgentSpecError(f"--agent-fn: no such file {path}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise AgentSpecError(f"--agent-fn: cannot import {target!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AgentSpecError(f"--agent-fn: {target!r} has no callable {attr!r}")
    return fn


def wants_llm(fn: Any) -> bool:
    """True when an ``--agent-fn`` function takes the configured client as ``llm``."""
    return _takes(fn, "llm")


def _takes(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class BuiltAgent:
    """An :class:`AgentSpec` made runnable in this process (its LLM client included).

    The agent interface executors use: ``await agent.solve(problem, prompts=None)``,
    ``agent.usage()``, ``agent.close()``.
    """

    def __init__(self, spec: AgentSpec, llm: ChatClient | None = None) -> None:
        self.spec = spec
        self.llm = llm
        self._owns_llm = False
        self._fn = load_agent_fn(spec.agent_fn) if spec.agent_fn else None
        self._fn_wants_llm = self._fn is not None and wants_llm(self._fn)
        if (self._fn is None or self._fn_wants_llm) and self.llm is None:
            from optiforge.llm import LLM

            s = spec.settings
            if s is None:
                from optiforge.config import load_settings

                s = load_settings()
            self.llm = LLM(
                model=s.model,
                base_url=spec.base_url or s.base_url,
                cache=False if spec.no_cache else None,
                concurrency=spec.llm_concurrency,
                settings=s,
            )
            self._owns_llm = True

    async def solve(self, problem: Any, prompts: dict[str, str] | None = None) -> Any:
        """Run the agent on ``problem`` (a :class:`~optiforge.datasets.Problem`);
        ``prompts`` replaces the spec's prompt values for this call (team/direct only)."""
        if self._fn is not None:
            if prompts is not None:
                raise AgentSpecError("prompt values can only be given to the team/direct agents")
            kwargs: dict[str, Any] = {}
            if self._fn_wants_llm:
                kwargs["llm"] = self.llm
            if self.spec.time_limit is not None and _takes(self._fn, "time_limit"):
                kwargs["time_limit"] = self.spec.time_limit
            return await self._fn(problem, **kwargs)
        from optiforge.agents.team import asolve

        config = None
        if self.spec.levers is not None and self.spec.agent == "team":
            from optiforge.agents.team.levers import team_config

            lib = self.spec.experience_library
            config = team_config(self.spec.levers, **({"experience_library": lib} if lib else {}))
        return await asolve(
            problem.text,
            llm=self.llm,
            agent=self.spec.agent,
            budget=self.spec.budget,
            samples=self.spec.samples,
            prompts=prompts if prompts is not None else self.spec.prompts,
            time_limit=self.spec.time_limit,
            config=config,
        )

    def usage(self) -> dict[str, Any] | None:
        """The LLM client's usage snapshot plus each server's share (None without LLM)."""
        if self.llm is None:
            return None
        data = self.llm.usage.snapshot().model_dump()
        stats = getattr(self.llm, "server_stats", None)  # test doubles have no servers
        data["servers"] = stats() if stats is not None else {}
        return data

    def close(self) -> None:
        """Close the LLM client this agent built (a client passed in stays open)."""
        if self._owns_llm and self.llm is not None:
            self.llm.close()


def build_agent(spec: AgentSpec) -> BuiltAgent:
    """Build ``spec`` in this process; ``functools.partial(build_agent, spec)`` is a
    picklable agent factory for :class:`optiforge.evals.executor.RayExecutor`."""
    return BuiltAgent(spec)
