"""The model-independent half of every client: messages, cache, budget, usage, concurrency
and structured output. Subclasses only implement the transport (:meth:`BaseLLM._acomplete`
and :meth:`BaseLLM._astream_raw`)."""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from optiforge.llm import structured
from optiforge.llm._loop import iterate_sync, run_sync
from optiforge.llm.cache import ResponseCache, cache_key
from optiforge.llm.errors import LLMError, LLMResponseError, StructuredOutputError
from optiforge.llm.types import Budget, ChatResult
from optiforge.llm.usage import UsageTracker, current_scopes, usage_scope

_ROLES = {"system", "user", "assistant", "tool", "developer"}

Messages = list[dict[str, Any]] | str


@dataclass(frozen=True)
class ChatRequest:
    """One request as a transport sees it (``n`` samples of one conversation)."""

    messages: list[dict[str, Any]]
    n: int
    temperature: float
    max_tokens: int
    seed: int | None
    stop: list[str] | None
    #: The OpenAI ``response_format`` payload (json_schema), or None.
    response_format: dict[str, Any] | None
    tag: str | None


@dataclass
class Completion:
    """What a transport returns for one :class:`ChatRequest`."""

    texts: list[str]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    model: str
    #: Completion tokens per choice when the transport knows them (else the total is shared).
    choice_tokens: list[int] | None = None
    #: What the server reports about its work, when it does (0 otherwise): prompt tokens
    #: taken from its prompt cache, and milliseconds spent on the prompt and on the reply.
    server_cached_tokens: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0


@dataclass
class StreamEvent:
    """One item from a transport's stream: a text delta, the finish reason, or usage."""

    delta: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class SchemaUnsupported(Exception):
    """Raised by a transport when the server rejects ``json_schema`` response formats."""


def normalize_messages(messages: Messages) -> list[dict[str, Any]]:
    """A plain string becomes one user message; a list is checked and copied."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LLMError(
            "messages must be a non-empty list of {'role', 'content'} dicts or a string, "
            f"got {type(messages).__name__}"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise LLMError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r:.80}")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise LLMError(f"messages[{i}] has role {role!r}; use one of {sorted(_ROLES)}")
        if not isinstance(content, (str, list)):
            raise LLMError(
                f"messages[{i}] ({role}) needs 'content' as a string, got {content!r:.80}"
            )
        out.append(dict(m))
    return out


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A deliberately high estimate of prompt tokens (about 3 characters per token)."""
    return sum(len(str(m.get("content", ""))) // 3 + 8 for m in messages)


class BaseLLM:
    """Shared behaviour of :class:`optiforge.llm.LLM` and
    :class:`optiforge.llm.testing.ScriptedLLM`. Not used directly."""

    #: Route name used in cache keys ("openai", "litellm", "scripted").
    route = "base"
    #: True when the transport itself counts each failed attempt (``usage.record_failed``);
    #: otherwise :meth:`_call` counts one failed call per request that raised.
    _counts_failed_attempts = False

    def __init__(
        self,
        model: str,
        *,
        concurrency: int = 4,
        cache: ResponseCache | None = None,
        budget: Budget | dict[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise LLMError(f"concurrency must be at least 1, got {concurrency}")
        if isinstance(budget, dict):
            budget = Budget(**budget)
        self.model = model
        self.concurrency = concurrency
        #: Requests sent at once (the rest wait here, not at the server, so that their
        #: HTTP timeout only runs while the server works on them). ``concurrency`` unless
        #: the server is known to have fewer slots (see :meth:`limit_in_flight`).
        self.max_in_flight = concurrency
        self.cache = cache
        self.usage = UsageTracker(budget)
        self._tag_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "optiforge_llm_tag", default=None
        )
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._semaphores = weakref.WeakKeyDictionary()
        self._schema_supported = True

    # -- transport (subclasses) ---------------------------------------------------------
    async def _acomplete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    def _astream_raw(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    async def _prepare(self) -> None:
        """Make the transport ready (e.g. start the embedded server). Called per call."""

    def _cache_identity(self) -> dict[str, Any]:
        return {"route": self.route, "model": self.model}

    # -- tags ----------------------------------------------------------------------------
    @contextmanager
    def tag(self, name: str) -> Iterator[None]:
        """Attribute calls made inside this block (in this thread or task) to ``name``
        in :attr:`usage`, unless a call passes its own ``tag=``."""
        token = self._tag_var.set(name)
        try:
            yield
        finally:
            self._tag_var.reset(token)

    def _resolve_tag(self, tag: str | None) -> str | None:
        return tag if tag is not None else self._tag_var.get()

    # -- public API ---------------------------------------------------------------------
    def chat(
        self,
        messages: Messages,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        response_format: type[BaseModel] | None = None,
        tag: str | None = None,
    ) -> ChatResult:
        """Ask for ``n`` replies to ``messages`` and wait for them (see :meth:`achat`)."""
        # run_sync runs achat in a copy of this context: the tag and usage scopes carry over.
        return run_sync(
            self.achat(
                messages,
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                seed=seed,
                stop=stop,
                response_format=response_format,
                tag=tag,
            )
        )

    async def achat(
        self,
        messages: Messages,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        response_format: type[BaseModel] | None = None,
        tag: str | None = None,
    ) -> ChatResult:
        """Ask for ``n`` replies to ``messages``.

        ``messages`` is a list of ``{"role", "content"}`` dicts or a string (one user
        message). ``response_format`` is a pydantic model class: the server is asked for
        JSON matching its schema and ``result.parsed`` holds one validated object per
        sample; a reply that does not validate is re-asked once with the error, then
        :class:`StructuredOutputError` is raised (its ``calls``, ``prompt_tokens`` and
        ``completion_tokens`` say what the call and its re-asks cost). Samples already in
        the cache are not requested again.
        """
        with usage_scope(keep_replies=False) as scope:
            try:
                return await self._achat(
                    messages,
                    n=n,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=seed,
                    stop=stop,
                    response_format=response_format,
                    tag=tag,
                )
            except StructuredOutputError as exc:
                used = scope.snapshot()
                exc.calls = used.calls
                exc.prompt_tokens = used.prompt_tokens
                exc.completion_tokens = used.completion_tokens
                raise

    async def _achat(
        self,
        messages: Messages,
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None,
        stop: list[str] | str | None,
        response_format: type[BaseModel] | None,
        tag: str | None,
    ) -> ChatResult:
        t0 = time.perf_counter()
        msgs = normalize_messages(messages)
        model_cls = structured.check_response_format(response_format)
        if not isinstance(n, int) or n < 1:
            raise LLMError(f"n must be a positive integer, got {n!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise LLMError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if temperature < 0:
            raise LLMError(f"temperature must be >= 0, got {temperature}")
        if isinstance(stop, str):
            stop = [stop]
        tag = self._resolve_tag(tag)
        await self._prepare()
        req = ChatRequest(
            messages=msgs,
            n=n,
            temperature=float(temperature),
            max_tokens=max_tokens,
            seed=seed,
            stop=list(stop) if stop else None,
            response_format=structured.response_format_payload(model_cls) if model_cls else None,
            tag=tag,
        )
        samples = await self._samples(req, model_cls)
        parsed = None
        if model_cls is not None:
            samples, parsed = await self._parse_all(req, model_cls, samples)
        n_cached = sum(1 for s in samples if s["cached"])
        return ChatResult(
            texts=[s["text"] for s in samples],
            parsed=parsed,
            finish_reasons=[s["finish_reason"] for s in samples],
            prompt_tokens=max((s["prompt_tokens"] for s in samples), default=0),
            completion_tokens=sum(s["completion_tokens"] for s in samples),
            latency_s=time.perf_counter() - t0,
            model=samples[0]["model"] or self.model,
            cached=n_cached == len(samples),
            cached_samples=n_cached,
        )

    def stream(
        self,
        messages: Messages,
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        tag: str | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text as it is generated (see :meth:`astream`)."""
        tag = self._resolve_tag(tag)
        return iterate_sync(
            _scoped_iter(
                self.astream(
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=seed,
                    stop=stop,
                    tag=tag,
                ),
                current_scopes(),
            )
        )

    async def astream(
        self,
        messages: Messages,
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        tag: str | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas of one reply. Shares the cache with ``chat`` (a cached reply is
        yielded in one piece). A stream that ends before the server says it finished raises
        :class:`LLMResponseError`; it is retried only if nothing was yielded yet."""
        msgs = normalize_messages(messages)
        if isinstance(stop, str):
            stop = [stop]
        tag = self._resolve_tag(tag)
        await self._prepare()
        req = ChatRequest(
            msgs, 1, float(temperature), max_tokens, seed, list(stop) if stop else None, None, tag
        )
        key = self._key(req, 0)
        if self.cache is not None:
            hit = self.cache.get_many([key]).get(key)
            if hit is not None:
                self.usage.record_cache_hits(
                    tag,
                    1,
                    int(hit.get("prompt_tokens") or 0),
                    int(hit.get("completion_tokens") or 0),
                )
                self.usage.record_reply(
                    tag,
                    key=key,
                    text=hit["text"],
                    cached=True,
                    finish_reason=hit.get("finish_reason"),
                    completion_tokens=int(hit.get("completion_tokens") or 0),
                )
                yield hit["text"]
                return
        parts: list[str] = []
        finish: str | None = None
        ptok = ctok = None
        async with self._semaphore():
            with self.usage.reserve(estimate_tokens(msgs) + max_tokens):
                t0 = time.perf_counter()
                try:
                    async for ev in self._astream_raw(req):
                        if ev.delta:
                            parts.append(ev.delta)
                            yield ev.delta
                        finish = ev.finish_reason or finish
                        ptok = ev.prompt_tokens if ev.prompt_tokens is not None else ptok
                        ctok = ev.completion_tokens if ev.completion_tokens is not None else ctok
                except BaseException:
                    # A broken or abandoned stream still cost a request.
                    self.usage.record_failed(tag, time.perf_counter() - t0)
                    raise
                text = "".join(parts)
                if ptok is None:
                    ptok = estimate_tokens(msgs)
                if ctok is None:
                    ctok = max(1, len(text) // 4)
                self.usage.record_call(tag, ptok, ctok, time.perf_counter() - t0)
                self.usage.record_reply(
                    tag,
                    key=key,
                    text=text,
                    cached=False,
                    finish_reason=finish,
                    completion_tokens=ctok,
                )
        if self.cache is not None:
            self.cache.put_many(
                {
                    key: {
                        "text": text,
                        "finish_reason": finish,
                        "prompt_tokens": ptok,
                        "completion_tokens": ctok,
                        "model": self.model,
                    }
                }
            )

    # -- internals ----------------------------------------------------------------------
    def limit_in_flight(self, slots: int | None) -> None:
        """Send at most ``slots`` requests at once (a server with that many parallel slots
        queues the rest, and their timeouts would run while they wait). Call before the
        first request."""
        if slots and slots > 0:
            self.max_in_flight = max(1, min(self.concurrency, int(slots)))

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_in_flight)
        return sem

    def _key(self, req: ChatRequest, index: int) -> str:
        return cache_key(
            {
                "v": 1,
                **self._cache_identity(),
                "messages": req.messages,
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
                "seed": req.seed,
                "stop": req.stop,
                "schema": req.response_format,
                "i": index,
            }
        )

    async def _samples(
        self, req: ChatRequest, model_cls: type[BaseModel] | None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """``req.n`` samples, from the cache where possible, the rest from the server."""
        keys = [self._key(req, offset + i) for i in range(req.n)]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        out: list[dict[str, Any] | None] = [None] * req.n
        for i, k in enumerate(keys):
            if k in found:
                out[i] = {**found[k], "cached": True}
                self.usage.record_reply(
                    req.tag,
                    key=k,
                    text=found[k]["text"],
                    cached=True,
                    finish_reason=found[k].get("finish_reason"),
                    completion_tokens=int(found[k].get("completion_tokens") or 0),
                )
        if found:
            # The cached replies of one request share its prompt: count it once.
            self.usage.record_cache_hits(
                req.tag,
                len(found),
                max(int(r.get("prompt_tokens") or 0) for r in found.values()),
                sum(int(r.get("completion_tokens") or 0) for r in found.values()),
            )
        missing = [i for i in range(req.n) if out[i] is None]
        while missing:
            comp = await self._call(replace(req, n=len(missing)), model_cls)
            k = min(len(comp.texts), len(missing))
            if k == 0:
                raise LLMResponseError(f"the server returned no choices for model {self.model!r}")
            ptok = comp.prompt_tokens
            share, extra = divmod(comp.completion_tokens, k)
            per_choice = comp.choice_tokens
            if per_choice is None or len(per_choice) < k:
                per_choice = [share + (extra if j == 0 else 0) for j in range(k)]
            new = {}
            for j in range(k):
                i = missing[j]
                rec = {
                    "text": comp.texts[j],
                    "finish_reason": comp.finish_reasons[j],
                    "prompt_tokens": ptok,
                    "completion_tokens": per_choice[j],
                    "model": comp.model,
                }
                out[i] = {**rec, "cached": False}
                new[keys[i]] = rec
                self.usage.record_reply(
                    req.tag,
                    key=keys[i],
                    text=rec["text"],
                    cached=False,
                    finish_reason=rec["finish_reason"],
                    completion_tokens=rec["completion_tokens"],
                )
            if self.cache is not None:
                self.cache.put_many(new)
            missing = missing[k:]  # servers that ignore n>1 get asked again for the rest
        return [s for s in out if s is not None]

    async def _call(self, req: ChatRequest, model_cls: type[BaseModel] | None) -> Completion:
        """One request to the transport, inside the concurrency bound and the budget."""
        if req.response_format is not None and not self._schema_supported and model_cls:
            req = replace(
                req,
                response_format=None,
                messages=structured.with_schema_instruction(req.messages, model_cls),
            )
        async with self._semaphore():
            with self.usage.reserve(estimate_tokens(req.messages) + req.n * req.max_tokens):
                t0 = time.perf_counter()
                try:
                    comp = await self._acomplete(req)
                except SchemaUnsupported:
                    comp = None
                    if not self._counts_failed_attempts:
                        self.usage.record_failed(req.tag, time.perf_counter() - t0)
                except BaseException:
                    # Errors, timeouts and cancellation (a problem timeout cancels its
                    # agent) still cost a request; the transport may count them itself.
                    if not self._counts_failed_attempts:
                        self.usage.record_failed(req.tag, time.perf_counter() - t0)
                    raise
                if comp is not None:
                    self.usage.record_call(
                        req.tag,
                        comp.prompt_tokens,
                        comp.completion_tokens,
                        time.perf_counter() - t0,
                        choices=len(comp.texts),
                        server_cached_tokens=comp.server_cached_tokens,
                        prompt_ms=comp.prompt_ms,
                        completion_ms=comp.predicted_ms,
                    )
                    return comp
        # The server cannot constrain output: ask for the schema in words, parse, re-ask.
        self._schema_supported = False
        return await self._call(req, model_cls)

    async def _parse_all(
        self, req: ChatRequest, model_cls: type[BaseModel], samples: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        parsed: list[Any] = [None] * len(samples)
        failing: dict[int, str] = {}
        for i, s in enumerate(samples):
            obj, err = structured.parse_reply(s["text"], model_cls)
            if err is None:
                parsed[i] = obj
            else:
                failing[i] = err

        async def repair(i: int, err: str) -> tuple[int, dict[str, Any], Any, str | None]:
            msgs = structured.repair_messages(req.messages, samples[i]["text"], err, model_cls)
            again = await self._samples(replace(req, messages=msgs, n=1), model_cls, offset=i)
            obj, err2 = structured.parse_reply(again[0]["text"], model_cls)
            return i, again[0], obj, err2

        if failing:
            results = await asyncio.gather(*(repair(i, e) for i, e in failing.items()))
            errors = []
            samples = list(samples)
            for i, sample, obj, err2 in results:
                samples[i] = {**sample, "cached": sample["cached"] and samples[i]["cached"]}
                if err2 is None:
                    parsed[i] = obj
                else:
                    errors.append((i, sample["text"], err2))
            if errors:
                first = errors[0]
                raise StructuredOutputError(
                    f"{len(errors)} of {len(samples)} replies from {self.model!r} did not match "
                    f"{model_cls.__name__} even after one re-ask; sample {first[0]}: {first[2]}. "
                    "Simplify the schema, give an example in the prompt, or use a larger model.",
                    texts=[e[1] for e in errors],
                    errors=[e[2] for e in errors],
                    all_texts=[s["text"] for s in samples],
                    parsed=parsed,
                )
        return samples, parsed

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Release connections and the cache. The client cannot be used afterwards."""
        if self.cache is not None:
            self.cache.close()

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _scoped_iter(agen: AsyncIterator[str], scopes: tuple) -> AsyncIterator[str]:
    """``agen`` with the caller's usage scopes active while each item is produced."""
    from optiforge.llm.usage import scopes_active

    while True:
        with scopes_active(scopes):
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                return
        yield item
