"""Where each problem runs: in this process (:class:`LocalExecutor`) or as a task on a Ray
cluster (:class:`RayExecutor`). Both have one method that matters::

    solution = await executor.run(problem)                 # the agent's Solution
    solution = await executor.run(problem, prompts=values) # the same agent, other prompts

The runner (:func:`optiforge.evals.runner.run_eval`) calls ``run`` for each problem and alone
writes the journal, so journalling, resume, timeouts, the progress bar and Ctrl-C are the
same whatever the executor. ``prompts`` lets ``optiforge tune`` evaluate a candidate's
prompt values on a minibatch through the same interface.

evals receives the agent, it never builds one: the local executor takes an agent object or
function; the Ray executor takes a picklable factory that builds the agent in each worker
(:func:`optiforge.agents.spec.build_agent` with an :class:`~optiforge.agents.spec.AgentSpec`:
same model, same server URLs, same response cache directory), once per worker, reused for
every problem it runs. Ray is imported only inside :class:`RayExecutor`.

Per-problem usage: ``executor.usage_scope`` is the scope function to give the runner
(``run_eval(..., usage_scope=ex.usage_scope)``), which opens one around each problem and
journals what it counted (None: lines keep the agent's own counts). Locally it is the
client's :func:`optiforge.llm.usage.usage_scope`, handed to the executor (evals does not
import llm). On Ray the client lives in the worker, so the worker runs each problem inside
that scope function (shipped to it) and returns the scope's counts and replies with the
Solution, and ``RayExecutor.usage_scope()`` hands them to the runner. The journal lines
then add up to ``usage()``, a dead worker included: its counters die with it, so
``usage()`` counts the problems it finished from what they returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import math
import os
import pickle
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from optiforge.datasets.problem import Problem
from optiforge.evals.records import EvalError


class WorkerDiedError(EvalError):
    """The worker process running a problem died, on every allowed attempt."""


class Agent(Protocol):
    """What an executor runs: :class:`optiforge.agents.spec.BuiltAgent` is one; a plain
    async ``(Problem) -> Solution`` function is wrapped in :class:`FunctionAgent`."""

    async def solve(self, problem: Problem, prompts: dict[str, str] | None = None) -> Any: ...
    def usage(self) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


class FunctionAgent:
    """A plain async ``(Problem) -> Solution`` function as an :class:`Agent`."""

    def __init__(self, fn: Callable[[Problem], Awaitable[Any]]) -> None:
        self.fn = fn

    async def solve(self, problem: Problem, prompts: dict[str, str] | None = None) -> Any:
        """Await the function; it takes no prompt values."""
        if prompts is not None:
            raise EvalError("prompt values can only be given to the team/direct agents")
        return await self.fn(problem)

    def usage(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass


def as_agent(agent: Any) -> Agent:
    """``agent`` if it has ``solve``, else a :class:`FunctionAgent` around it."""
    return agent if hasattr(agent, "solve") else FunctionAgent(agent)


#: A zero-argument function opening a usage scope, e.g. :func:`optiforge.llm.usage.usage_scope`.
ScopeFn = Callable[[], AbstractContextManager[Any]]


class Executor(Protocol):
    """Runs one problem at a time per call; many calls may be in flight at once."""

    name: str
    #: Opens the scope a problem's LLM usage is counted in (None: not counted per problem).
    usage_scope: ScopeFn | None

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

    def __init__(self, agent: Any, *, usage_scope: ScopeFn | None = None) -> None:
        """``agent``: an :class:`Agent` (e.g. :class:`optiforge.agents.spec.BuiltAgent`)
        or an async ``(Problem) -> Solution`` function. ``usage_scope``: the client's scope
        function (:func:`optiforge.llm.usage.usage_scope`), offered to the runner as is:
        the agent runs in this process, so the client's scopes see its calls."""
        self._agent = as_agent(agent)
        self.usage_scope = usage_scope

    async def run(self, problem: Problem, *, prompts: dict[str, str] | None = None) -> Any:
        """Await the agent on ``problem``."""
        return await self._agent.solve(problem, prompts)

    def usage(self) -> dict[str, Any] | None:
        """The agent's LLM usage and server shares (None for a plain function)."""
        return self._agent.usage()

    def close(self) -> None:
        """Close the agent (and the LLM client it built)."""
        self._agent.close()


# -- Ray ------------------------------------------------------------------------------------
@dataclass
class _Done:
    """What a worker returns for one problem: the Solution (or the exception the agent
    raised) and, with a usage scope, what the worker's client counted for it."""

    value: Any = None
    error: BaseException | None = None
    #: The scope's :class:`~optiforge.llm.types.UsageSnapshot` (a pydantic model: it
    #: travels as data, so evals never imports llm).
    usage: Any = None
    replies: list[dict[str, Any]] | None = None


class _RayWorker:
    """The body of one Ray actor: builds the agent once, runs problems concurrently."""

    def __init__(self, factory: Callable[[], Any], scope_fn: ScopeFn | None = None) -> None:
        self.factory = factory
        self.scope_fn = scope_fn
        self.agent: Agent | None = None

    def info(self) -> dict[str, Any]:
        import optiforge

        return {"pid": os.getpid(), "version": optiforge.__version__, "file": optiforge.__file__}

    async def run(self, problem: Problem, prompts: dict[str, str] | None) -> _Done:
        if self.agent is None:
            self.agent = as_agent(self.factory())
        if self.scope_fn is None:
            return _Done(value=await self.agent.solve(problem, prompts))
        with self.scope_fn() as scope:
            try:
                value = await self.agent.solve(problem, prompts)
            except Exception as exc:
                done = _Done(error=exc)
            else:
                done = _Done(value=value)
        done.usage = scope.snapshot()
        done.replies = list(scope.replies)
        if done.error is not None:
            try:
                pickle.dumps(done.error)
            except Exception:
                raise done.error from None  # Ray reports what it can; this usage is lost
        return done

    def usage(self) -> dict[str, Any] | None:
        return self.agent.usage() if self.agent is not None else None


@dataclass(frozen=True)
class _NoUsage:
    """The snapshot of a remote scope whose problem returned nothing (cut off)."""

    calls: int = 0
    failed_calls: int = 0
    cached_calls: int = 0
    by_tag: dict[str, Any] = field(default_factory=dict)

    def model_dump(self) -> dict[str, Any]:
        """Its fields, as a :class:`~optiforge.llm.types.UsageSnapshot` dumps them (the
        runner sums an interrupted problem's counts from this)."""
        return dataclasses.asdict(self)


class RemoteUsage:
    """A problem's usage as counted in a worker's scope: what :meth:`RayExecutor.usage_scope`
    yields, read like an :class:`optiforge.llm.usage.UsageScope` (``snapshot()``,
    ``replies``) once :meth:`RayExecutor.run` has returned inside it."""

    def __init__(self) -> None:
        self._snapshot: Any = None
        self._replies: list[dict[str, Any]] = []

    def fill(self, snapshot: Any, replies: list[dict[str, Any]] | None) -> None:
        """Take the worker's counts (the last attempt's, if the problem was retried)."""
        self._snapshot = snapshot
        self._replies = list(replies or [])

    def snapshot(self) -> Any:
        """The worker's :class:`~optiforge.llm.types.UsageSnapshot` (zeros before one came)."""
        return self._snapshot if self._snapshot is not None else _NoUsage()

    @property
    def replies(self) -> list[dict[str, Any]]:
        """One entry per reply, as :attr:`optiforge.llm.usage.UsageScope.replies`."""
        return list(self._replies)


_remote_scope: contextvars.ContextVar[RemoteUsage | None] = contextvars.ContextVar(
    "optiforge_remote_usage", default=None
)


@dataclass
class _Slot:
    actor: Any
    generation: int = 0
    in_flight: int = 0
    pids: list[int] = field(default_factory=list)
    #: Usage of the problems the current actor finished (counted if it dies).
    finished_usage: list[dict[str, Any]] = field(default_factory=list)


def _package_root() -> str:
    import optiforge

    return str(Path(optiforge.__file__).resolve().parent.parent)


class RayExecutor:
    """Runs each problem as a task on a pool of long-lived Ray actors ("workers").

    ``factory``: a picklable zero-argument callable that builds the agent in a worker, e.g.
    ``functools.partial(optiforge.agents.spec.build_agent, spec)``; it may return an
    :class:`Agent` or a plain async ``(Problem) -> Solution`` function.

    Each worker is an async actor holding one agent (and its LLM client, cache and HTTP
    connections) that runs up to ``per_worker`` problems at once; the generated code's
    sandbox runs on the worker's host. A problem whose worker dies (killed, out of memory,
    a crashed native solver) is retried ``retries`` times on a fresh worker and then raises
    :class:`WorkerDiedError`, which the runner journals as an infrastructure failure.

    - ``address``: ``None`` starts a private local Ray instance (stopped by :meth:`close`);
      ``"auto"`` or the cluster's ``"host:6379"`` joins a running cluster, whose workers must have
      optiforge's dependencies installed (this optiforge itself is shipped to them).
    - ``workers``: actors to start; default: one per CPU of the cluster, at most
      ``concurrency``.
    - ``concurrency``: problems in flight in total (the runner's ``concurrency``).
    - ``num_cpus``: CPUs of a local instance (default: all).
    - ``env``: extra environment variables for the workers.
    - ``usage_scope``: a picklable scope function, :func:`optiforge.llm.usage.usage_scope`:
      each problem runs inside it on its worker, and :meth:`usage_scope` gives the runner
      its counts (see the module docs). Without it the journal keeps the agent's counts.
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
        factory: Callable[[], Any],
        *,
        address: str | None = None,
        workers: int | None = None,
        concurrency: int = 4,
        num_cpus: int | None = None,
        retries: int = 1,
        env: dict[str, str] | None = None,
        usage_scope: ScopeFn | None = None,
    ) -> None:
        if concurrency < 1:
            raise EvalError(f"concurrency must be >= 1, got {concurrency}")
        if workers is not None and workers < 1:
            raise EvalError(f"workers must be >= 1, got {workers}")
        self.factory = factory
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.num_cpus = num_cpus
        self.retries = retries
        self.env = dict(env or {})
        self.scope_fn = usage_scope
        # The runner opens this around each problem (None: no per-problem usage).
        self.usage_scope: ScopeFn | None = self._remote_scope if usage_scope else None
        self.startup_s: float | None = None
        self.retried = 0
        self.died = 0
        self._slots: list[_Slot] = []
        self._owns_ray = False
        self._actor_cls: Any = None
        self._ray: Any = None
        self._final_usage: list[dict[str, Any]] = []
        #: Usage of the problems dead workers had finished (their counters died with them).
        self._dead_usage: list[dict[str, Any]] = []

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> RayExecutor:
        """Connect to (or start) Ray and start the workers; returns self. Idempotent."""
        if self._slots:
            return self
        t0 = time.perf_counter()
        try:
            import ray
        except ImportError:
            raise EvalError(
                "--executor ray needs Ray: pip install -e '.[ray]' in an optiforge checkout "
                "(or pip install 'optiforge[ray]')"
            ) from None
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
        # One spare slot, so usage and info calls never queue behind running problems.
        options: dict[str, Any] = {"max_concurrency": self._per_worker + 1}
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        return self._actor_cls.options(**options).remote(self.factory, self.scope_fn)

    @contextlib.contextmanager
    def _remote_scope(self) -> Iterator[RemoteUsage]:
        """The runner's per-problem scope: :meth:`run` inside it fills it with the worker's
        counts for the problem."""
        scope = RemoteUsage()
        token = _remote_scope.set(scope)
        try:
            yield scope
        finally:
            _remote_scope.reset(token)

    @property
    def worker_count(self) -> int:
        """Workers running now."""
        return len(self._slots)

    def worker_actors(self) -> list[Any]:
        """The current actor handles (for tests and fault injection)."""
        return [s.actor for s in self._slots]

    def busy_actors(self) -> list[Any]:
        """The current actor handles with problems in flight (for fault injection)."""
        return [s.actor for s in self._slots if s.in_flight]

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
                done = await ref
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
                    self._dead_usage += slot.finished_usage
                    slot.finished_usage = []
                if attempt < self.retries:
                    self.retried += 1
                continue
            finally:
                slot.in_flight -= 1
            return self._unpack(done, slot, generation)
        raise WorkerDiedError(
            f"the Ray worker running {problem.id} died {self.retries + 1} time(s) "
            f"({type(last).__name__}: {str(last).strip().splitlines()[0] if last else ''}); "
            "rerun with --resume --retry-failed"
        )

    def _unpack(self, done: Any, slot: _Slot, generation: int) -> Any:
        """The Solution of a worker's :class:`_Done` (or raise the agent's exception); its
        usage goes to the runner's scope and to the slot's tally."""
        if not isinstance(done, _Done):
            return done
        if done.usage is not None:
            counted = done.usage.model_dump()
            if slot.generation == generation:
                slot.finished_usage.append(counted)
            else:  # the actor was replaced meanwhile: its counters are gone
                self._dead_usage.append(counted)
            scope = _remote_scope.get()
            if scope is not None:
                scope.fill(done.usage, done.replies)
        if done.error is not None:
            raise done.error
        return done.value

    # -- usage --------------------------------------------------------------------------
    def _collect_usage(self) -> list[dict[str, Any]]:
        ray = self._ray
        refs = [slot.actor.usage.remote() for slot in self._slots]
        ray.wait(refs, num_returns=len(refs), timeout=15)
        out = []
        for slot, ref in zip(self._slots, refs, strict=True):
            try:
                u = ray.get(ref, timeout=0)
            except Exception:
                # A worker that died idle (or hangs): its counters are gone, so count the
                # problems it finished from what they returned (with a usage scope).
                out += slot.finished_usage
                continue
            if u:
                out.append(u)
        return out

    def usage(self) -> dict[str, Any] | None:
        """Usage summed over the workers (their LLM calls, tokens, cache hits...) and each
        server's share, plus how many workers died and problems were retried."""
        parts = self._collect_usage() if self._slots else self._final_usage
        merged = merge_usage(parts + self._dead_usage)
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
    """Sum usage snapshots from several clients: numbers add up, nested dicts merge; under
    ``servers`` a server is ``up`` only if every client saw it up, and each server's
    ``share`` of the answers (``ok``) is recomputed from the sums."""

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
    servers: dict[str, dict[str, Any]] = {}
    for p in parts:
        total = add(total, {k: v for k, v in p.items() if k != "servers"})
        for url, st in (p.get("servers") or {}).items():
            st = {k: v for k, v in st.items() if k != "share"}
            up = bool(st.get("up", True)) and bool(servers.get(url, {}).get("up", True))
            servers[url] = {**add(servers.get(url, {}), st), "up": up}
    answered = sum(int(v.get("ok", 0) or 0) for v in servers.values())
    for v in servers.values():
        v["share"] = round(int(v.get("ok", 0) or 0) / answered, 4) if answered else 0.0
    total["servers"] = servers
    return total
