"""Where each problem runs: in this process (:class:`LocalExecutor`) or as a task on a Ray
cluster (:class:`RayExecutor`). Both have one method that matters::

    solution = await executor.run(problem)                 # the agent's Solution
    solution = await executor.run(problem, prompts=values) # the same agent, other prompts

The runner (:func:`optiforge.evals.runner.run_eval`) calls ``run`` for each problem and alone
writes the journal, so journalling, resume, timeouts, the progress bar and Ctrl-C are the
same whatever the executor. ``prompts`` lets ``optiforge tune`` evaluate a candidate's
prompt values on a minibatch through the same interface.

The agent is described by an :class:`AgentSpec` (plain data that can travel to another
process) and built where it runs: a Ray worker builds its own LLM client (same model, same
server URLs, same response cache directory) once, and reuses it for every problem it runs.
Ray is imported only inside :class:`RayExecutor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from optiforge.datasets.problem import Problem
from optiforge.evals.records import EvalError


class WorkerDiedError(EvalError):
    """The worker process running a problem died, on every allowed attempt."""


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


def load_agent_fn(spec: str) -> Any:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise EvalError(f"--agent-fn {spec!r} must look like module:function or file.py:function")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            mod_spec = importlib.util.spec_from_file_location(f"_optiforge_agent_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None or not path.exists():
                raise EvalError(f"--agent-fn: no such file {path}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise EvalError(f"--agent-fn: cannot import {target!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise EvalError(f"--agent-fn: {target!r} has no callable {attr!r}")
    return fn


def wants_llm(fn: Any) -> bool:
    """True when an ``--agent-fn`` function takes the configured client as ``llm``."""
    try:
        return "llm" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class BuiltAgent:
    """An :class:`AgentSpec` made runnable in this process (its LLM client included)."""

    def __init__(self, spec: AgentSpec, llm: Any = None) -> None:
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

    async def __call__(self, problem: Problem, prompts: dict[str, str] | None = None) -> Any:
        if self._fn is not None:
            if prompts is not None:
                raise EvalError("prompt values can only be given to the team/direct agents")
            if self._fn_wants_llm:
                return await self._fn(problem, llm=self.llm)
            return await self._fn(problem)
        from optiforge.agents import asolve

        return await asolve(
            problem.text,
            llm=self.llm,
            agent=self.spec.agent,
            budget=self.spec.budget,
            samples=self.spec.samples,
            prompts=prompts if prompts is not None else self.spec.prompts,
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
        if self._owns_llm and self.llm is not None:
            self.llm.close()


class Executor(Protocol):
    """Runs one problem at a time per call; many calls may be in flight at once."""

    name: str

    async def run(self, problem: Problem, *, prompts: dict[str, str] | None = None) -> Any:
        """Run the agent on ``problem`` and return its Solution (or raise what it raised)."""
        ...

    def usage(self) -> dict[str, Any] | None:
        """LLM usage of everything run so far, with per-server shares (for run.json)."""
        ...

    def close(self) -> None:
        """Release workers and clients."""
        ...


class LocalExecutor:
    """Runs the agent in this process, on the caller's event loop."""

    name = "local"

    def __init__(self, agent: Any) -> None:
        """``agent``: an :class:`AgentSpec`, a :class:`BuiltAgent`, or an async
        ``(Problem) -> Solution`` function."""
        if isinstance(agent, AgentSpec):
            agent = BuiltAgent(agent)
        self._agent = agent

    async def run(self, problem: Problem, *, prompts: dict[str, str] | None = None) -> Any:
        """Await the agent on ``problem``."""
        if isinstance(self._agent, BuiltAgent):
            return await self._agent(problem, prompts)
        if prompts is not None:
            raise EvalError("prompt values can only be given to the team/direct agents")
        return await self._agent(problem)

    def usage(self) -> dict[str, Any] | None:
        """The agent's LLM usage and server shares (None for a plain function)."""
        return self._agent.usage() if isinstance(self._agent, BuiltAgent) else None

    def close(self) -> None:
        """Close the LLM client this executor built."""
        if isinstance(self._agent, BuiltAgent):
            self._agent.close()


# -- Ray ------------------------------------------------------------------------------------
class _RayWorker:
    """The body of one Ray actor: builds the agent once, runs problems concurrently."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.agent: BuiltAgent | None = None

    def info(self) -> dict[str, Any]:
        import optiforge

        return {"pid": os.getpid(), "version": optiforge.__version__, "file": optiforge.__file__}

    async def run(self, problem: Problem, prompts: dict[str, str] | None) -> Any:
        if self.agent is None:
            self.agent = BuiltAgent(self.spec)
        return await self.agent(problem, prompts)

    def usage(self) -> dict[str, Any] | None:
        return self.agent.usage() if self.agent is not None else None


@dataclass
class _Slot:
    actor: Any
    generation: int = 0
    in_flight: int = 0
    pids: list[int] = field(default_factory=list)


def _package_root() -> str:
    import optiforge

    return str(Path(optiforge.__file__).resolve().parent.parent)


class RayExecutor:
    """Runs each problem as a task on a pool of long-lived Ray actors ("workers").

    Each worker is an async actor holding one agent (and its LLM client, cache and HTTP
    connections) that runs up to ``per_worker`` problems at once; the generated code's
    sandbox runs on the worker's host. A problem whose worker dies (killed, out of memory,
    a crashed native solver) is retried ``retries`` times on a fresh worker and then raises
    :class:`WorkerDiedError`, which the runner journals as an infrastructure failure.

    - ``address``: ``None`` starts a private local Ray instance (stopped by :meth:`close`);
      ``"auto"`` or ``"ray://host:10001"`` joins a running cluster, whose workers must have
      optiforge's dependencies installed (this optiforge itself is shipped to them).
    - ``workers``: actors to start; default: one per CPU of the cluster, at most
      ``concurrency``.
    - ``concurrency``: problems in flight in total (the runner's ``concurrency``).
    - ``num_cpus``: CPUs of a local instance (default: all).
    - ``env``: extra environment variables for the workers.
    """

    name = "ray"
    _DEATH_ERRORS = (
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "WorkerCrashedError",
        "NodeDiedError",
        "OwnerDiedError",
        "ObjectLostError",
        "OutOfMemoryError",
        "LocalRayletDiedError",
    )

    def __init__(
        self,
        spec: AgentSpec,
        *,
        address: str | None = None,
        workers: int | None = None,
        concurrency: int = 4,
        num_cpus: int | None = None,
        retries: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise EvalError(f"concurrency must be >= 1, got {concurrency}")
        if workers is not None and workers < 1:
            raise EvalError(f"workers must be >= 1, got {workers}")
        self.spec = spec
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.num_cpus = num_cpus
        self.retries = retries
        self.env = dict(env or {})
        self.startup_s: float | None = None
        self.retried = 0
        self.died = 0
        self._slots: list[_Slot] = []
        self._owns_ray = False
        self._actor_cls: Any = None
        self._ray: Any = None
        self._final_usage: list[dict[str, Any]] = []

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> RayExecutor:
        """Connect to (or start) Ray and start the workers; returns self. Idempotent."""
        if self._slots:
            return self
        t0 = time.perf_counter()
        try:
            import ray
        except ImportError:
            raise EvalError("--executor ray needs Ray: pip install 'optiforge[ray]'") from None
        self._ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from evals
        if not ray.is_initialized():
            if self.address is None:
                # A local instance: workers import this very optiforge from its folder.
                path = os.environ.get("PYTHONPATH", "")
                pythonpath = os.pathsep.join(p for p in (_package_root(), path) if p)
                runtime_env: dict[str, Any] = {"env_vars": {"PYTHONPATH": pythonpath}}
            else:
                import optiforge

                # A cluster: ship this optiforge to the workers (their own copy may differ).
                runtime_env = {"py_modules": [optiforge]}
            kwargs: dict[str, Any] = {
                "address": self.address,
                "runtime_env": runtime_env,
                "include_dashboard": False,
                "log_to_driver": False,  # worker output would break the progress bar
                "logging_level": "WARNING",
            }
            if self.address is None:
                kwargs["num_cpus"] = self.num_cpus
                kwargs["object_store_memory"] = 200 * 1024 * 1024  # solutions are small
            try:
                ray.init(**kwargs)
            except Exception as exc:
                where = self.address or "a local Ray instance"
                raise EvalError(f"cannot start or join Ray at {where}: {exc}") from None
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        n = self.workers or max(1, min(cpus, self.concurrency))
        self._per_worker = max(1, math.ceil(self.concurrency / n))
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
        self._slots = [_Slot(self._new_actor()) for _ in range(n)]
        infos = ray.get([s.actor.info.remote() for s in self._slots])
        import optiforge

        for slot, info in zip(self._slots, infos, strict=True):
            slot.pids.append(info["pid"])
            if info["version"] != optiforge.__version__:
                raise EvalError(
                    f"a Ray worker runs optiforge {info['version']} ({info['file']}), the "
                    f"driver {optiforge.__version__}; install the same version on every node"
                )
        self.startup_s = time.perf_counter() - t0
        return self

    def _new_actor(self) -> Any:
        options: dict[str, Any] = {"max_concurrency": self._per_worker}
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        return self._actor_cls.options(**options).remote(self.spec)

    @property
    def worker_count(self) -> int:
        """Workers running now."""
        return len(self._slots)

    def worker_actors(self) -> list[Any]:
        """The current actor handles (for tests and fault injection)."""
        return [s.actor for s in self._slots]

    def busy_worker(self) -> Any:
        """The actor with the most problems in flight (for fault-injection tests)."""
        return max(self._slots, key=lambda s: s.in_flight).actor

    def close(self) -> None:
        """Collect the workers' usage, stop them, and stop Ray if this executor started it."""
        ray = self._ray
        if ray is None:
            return
        if self._slots:
            self._final_usage = self._collect_usage()
        for slot in self._slots:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(slot.actor)
        self._slots = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # -- running ------------------------------------------------------------------------
    def _is_death(self, exc: BaseException) -> bool:
        return any(type(exc).__name__ == n or _has_base(exc, n) for n in self._DEATH_ERRORS)

    async def run(self, problem: Problem, *, prompts: dict[str, str] | None = None) -> Any:
        """Run ``problem`` on the least busy worker; retry on a fresh worker if it dies."""
        if not self._slots:
            await asyncio.to_thread(self.start)
        ray = self._ray
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            slot = min(self._slots, key=lambda s: s.in_flight)
            generation = slot.generation
            slot.in_flight += 1
            ref = slot.actor.run.remote(problem, prompts)
            try:
                return await ref
            except asyncio.CancelledError:
                ray.cancel(ref)  # Ctrl-C or a problem timeout: stop the work on the worker
                raise
            except ray.exceptions.RayTaskError as exc:
                # The agent itself raised: hand back its own exception, as locally.
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            except Exception as exc:
                if not self._is_death(exc):
                    raise
                last = exc
                self.died += 1
                if slot.generation == generation:  # the first to notice replaces it
                    slot.generation += 1
                    slot.actor = self._new_actor()
                if attempt < self.retries:
                    self.retried += 1
            finally:
                slot.in_flight -= 1
        raise WorkerDiedError(
            f"the Ray worker running {problem.id} died {self.retries + 1} time(s) "
            f"({type(last).__name__}: {str(last).strip().splitlines()[0] if last else ''}); "
            "rerun with --resume --retry-failed"
        )

    # -- usage --------------------------------------------------------------------------
    def _collect_usage(self) -> list[dict[str, Any]]:
        ray = self._ray
        out = []
        for slot in self._slots:
            try:
                u = ray.get(slot.actor.usage.remote(), timeout=30)
            except Exception:  # a dead worker's counters are gone; the journal has its work
                continue
            if u:
                out.append(u)
        return out

    def usage(self) -> dict[str, Any] | None:
        """Usage summed over the workers (their LLM calls, tokens, cache hits...) and each
        server's share, plus how many workers died and problems were retried."""
        parts = self._collect_usage() if self._slots else self._final_usage
        merged = merge_usage(parts)
        merged["executor"] = {
            "name": "ray",
            "workers": self.worker_count or len(parts),
            "worker_deaths": self.died,
            "retried_problems": self.retried,
            "startup_s": round(self.startup_s, 3) if self.startup_s is not None else None,
        }
        return merged


def _has_base(exc: BaseException, name: str) -> bool:
    return any(c.__name__ == name for c in type(exc).__mro__)


def merge_usage(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum usage snapshots from several clients: numbers add up, nested dicts merge, and
    ``servers`` is merged with :func:`optiforge.llm.pool.merge_server_stats`."""
    from optiforge.llm.pool import merge_server_stats

    def add(a: Any, b: Any) -> Any:
        if isinstance(a, bool) or isinstance(b, bool):
            return b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a + b
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = add(out[k], v) if k in out else v
            return out
        return b if b is not None else a

    total: dict[str, Any] = {}
    for p in parts:
        p = {k: v for k, v in p.items() if k != "servers"}
        total = add(total, p)
    total["servers"] = merge_server_stats(p.get("servers") or {} for p in parts)
    return total
