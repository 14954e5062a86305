"""The client everyone uses: :class:`LLM`.

Routes, chosen from ``model`` and ``base_url``:

- ``base_url`` set: any OpenAI-compatible server (vLLM, llama.cpp, others) via the openai SDK;
  several comma-separated URLs share the load (:mod:`optiforge.llm.pool`).
- ``base_url`` unset and ``model`` a ``provider/model`` name (e.g. ``openai/gpt-4o-mini``,
  ``anthropic/claude-...``): litellm, imported on first use.
- otherwise: the embedded llama.cpp server running in this process for ``model`` (a
  model-store name or a ``.gguf`` path). The client never starts one by itself: start it
  explicitly with :func:`optiforge.llm.serving.local_server` (a context manager) or
  :func:`~optiforge.llm.serving.ensure_local_server`, or build the client with
  :func:`optiforge.llm.serving.connect`, which starts it on first use. With none running,
  the first call raises :class:`~optiforge.llm.errors.NoServerError` saying how to start one.

Settings are passed in (``settings=``, any object with the fields of
:class:`~optiforge.llm.settings.LLMSettings`); this module does not read the environment or
``optiforge.toml`` (:func:`optiforge.config.load_settings` does, in the CLI and top-level
helpers).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from optiforge.llm import endpoints
from optiforge.llm.base import BaseLLM, ChatRequest, Completion, SchemaUnsupported, StreamEvent
from optiforge.llm.cache import ResponseCache
from optiforge.llm.endpoints import LocalEndpoint
from optiforge.llm.errors import LLMError, LLMResponseError, NoServerError
from optiforge.llm.pool import ServerPool, ServerState, is_server_failure, split_base_urls
from optiforge.llm.retry import SchemaRejected, with_retries
from optiforge.llm.settings import LLMSettings
from optiforge.llm.types import Budget


def is_litellm_model(model: str) -> bool:
    """True for ``provider/model`` names that litellm should handle (no base URL given).

    Model-store names never contain ``/`` (``tests/llm/test_serving.py`` checks), so they are
    never litellm names."""
    if "/" not in model or model.endswith(".gguf"):
        return False
    return not Path(model).expanduser().exists()


def _import_litellm() -> Any:
    # litellm otherwise downloads a price map at import time; the local copy is enough.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise LLMError(
            "model names like 'provider/model' need litellm: pip install 'optiforge[hosted]' "
            "(or pass base_url for an OpenAI-compatible server)"
        ) from None
    litellm.suppress_debug_info = True
    return litellm


class LLM(BaseLLM):
    """One client, sync (:meth:`chat`, :meth:`stream`) and async (:meth:`achat`,
    :meth:`astream`), for every backend. Unset arguments come from ``settings`` (pass
    :func:`optiforge.config.load_settings`'s result to honour flags, ``OPTIFORGE_*`` and
    optiforge.toml), else from :class:`~optiforge.llm.settings.LLMSettings`'s defaults.

    ``cache``: True/False, or a :class:`ResponseCache` to share one between clients.
    ``budget``: a :class:`Budget` or ``{"max_calls": ..., "max_tokens": ...}``.
    ``start_local``: only for the embedded route (no ``base_url``, not a litellm name): a
    callable that starts the embedded server for a model and returns its
    :class:`~optiforge.llm.endpoints.LocalEndpoint`, called once, on first use, if no
    server is running for the model. None (the default) starts nothing: the first call
    raises :class:`~optiforge.llm.errors.NoServerError`. :func:`optiforge.llm.serving.connect`
    passes one; pass your own only to start servers your way.
    Use it as a context manager or call :meth:`close` when done.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        cache: bool | ResponseCache | None = None,
        cache_dir: str | Path | None = None,
        max_retries: int | None = None,
        budget: Budget | dict[str, Any] | None = None,
        settings: Any = None,
        start_local: Callable[[str], LocalEndpoint] | None = None,
    ) -> None:
        s = settings if settings is not None else LLMSettings()
        self.settings = s
        model = model or s.model
        base_url = base_url if base_url is not None else s.base_url
        self.api_key = api_key if api_key is not None else s.api_key
        self.timeout = float(timeout if timeout is not None else s.timeout)
        self.max_retries = int(max_retries if max_retries is not None else s.max_retries)
        if self.max_retries < 0:
            raise LLMError(f"max_retries must be >= 0, got {self.max_retries}")
        if isinstance(cache, ResponseCache):
            store = cache
        elif cache if cache is not None else s.cache:
            store = ResponseCache(
                Path(cache_dir).expanduser() if cache_dir else s.resolved_cache_dir,
                max_mb=s.cache_max_mb,
            )
        else:
            store = None
        super().__init__(
            model,
            concurrency=int(concurrency if concurrency is not None else s.concurrency),
            cache=store,
            budget=budget,
        )
        if base_url:
            self.route = "openai"
            self.base_url: str | None = ",".join(split_base_urls(base_url)) or None
            if self.base_url is None:
                raise LLMError(f"base_url {base_url!r} names no server URL")
        elif is_litellm_model(model):
            self.route = "litellm"
            self.base_url = None
        else:
            self.route = "local"
            self.base_url = None  # known once bound to the running embedded server
        self._start_local = start_local
        # One SDK client per event loop and server URL.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]
        self._clients = weakref.WeakKeyDictionary()
        self._pool: ServerPool | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    #: First backoff step in seconds (doubles per retry, with full jitter).
    retry_base_delay = 0.5
    # Every HTTP attempt that fails (retried or not, cancelled included) is counted in
    # _acomplete, so the base class must not count the request again.
    _counts_failed_attempts = True

    def __repr__(self) -> str:
        where = self.base_url or ("litellm" if self.route == "litellm" else "embedded server")
        return f"LLM(model={self.model!r}, route={self.route!r}, at={where!r})"

    # -- routing ------------------------------------------------------------------------
    def _cache_identity(self) -> dict[str, Any]:
        # The embedded and remote routes share answers for the same model name; the URL
        # (a fresh port each run) is deliberately left out.
        return {"route": "litellm" if self.route == "litellm" else "openai", "model": self.model}

    def ensure_server(self) -> str | None:
        """Bind this client to its server now and return the base URL (None for the
        litellm route). On the embedded route that is the server running in this process
        for the model; the client starts none itself (only a ``start_local`` given to it
        does), and with none running this raises :class:`NoServerError` saying how to
        start one."""
        if self._closed:
            raise LLMError("this LLM client was closed; create a new one")
        if self.route != "local" or self.base_url is not None:
            return self.base_url
        with self._start_lock:
            if self.base_url is None:
                found = endpoints.find(self.model)
                if found is None and self._start_local is not None:
                    found = self._start_local(self.model)
                if found is None:
                    raise NoServerError(no_server_message(self.model))
                self._served_name = found.served_name
                self.limit_in_flight(found.slots)
                self.base_url = found.base_url
        return self.base_url

    async def _prepare(self) -> None:
        if self._closed:
            raise LLMError("this LLM client was closed; create a new one")
        if self.route == "local" and self.base_url is None:
            await asyncio.to_thread(self.ensure_server)

    @property
    def _where(self) -> str:
        return self.base_url or f"litellm ({self.model})"

    @property
    def _wire_model(self) -> str:
        return getattr(self, "_served_name", None) or self.model

    @property
    def pool(self) -> ServerPool | None:
        """The servers this client spreads requests over (None for litellm, or before the
        embedded server has started)."""
        if self._pool is None and self.route != "litellm" and self.base_url:
            with self._start_lock:
                if self._pool is None:
                    self._pool = ServerPool(split_base_urls(self.base_url))
        return self._pool

    def server_stats(self) -> dict[str, dict[str, Any]]:
        """Each server's requests, answers, failures and share of the answers so far
        (empty for the litellm route)."""
        pool = self.pool
        return pool.stats() if pool is not None else {}

    async def _on_server(self, fn: Any, avoid: set[str]) -> Any:
        """Run ``fn(sdk_client)`` on the server the pool picks, and tell the pool how it
        went. A failed server's URL goes into ``avoid`` so the retry tries another. (A
        stream counts as in flight while it is being opened, not while it is read.)"""
        pool = self.pool
        assert pool is not None
        server: ServerState = pool.acquire(avoid)
        try:
            result = await fn(self._client(server.url))
        except BaseException as exc:
            failed = is_server_failure(exc)
            if failed:
                avoid.add(server.url)
            pool.release(server, failed=failed)
            raise
        pool.release(server, failed=False)
        return result

    def _client(self, url: str | None = None) -> Any:
        url = url or self.base_url
        loop = asyncio.get_running_loop()
        per_loop = self._clients.setdefault(loop, {})
        client = per_loop.get(url)
        if client is None:
            import httpx
            import openai

            limits = httpx.Limits(
                max_connections=max(self.concurrency * 2, 8),
                max_keepalive_connections=max(self.concurrency * 2, 8),
            )
            client = openai.AsyncOpenAI(
                base_url=url,
                api_key=self.api_key or "not-needed",
                timeout=self.timeout,
                max_retries=0,  # retries are ours (backoff with jitter, clear errors)
                http_client=httpx.AsyncClient(timeout=self.timeout, limits=limits),
            )
            per_loop[url] = client
        return client

    def _params(self, req: ChatRequest) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self._wire_model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        }
        if req.n != 1:
            p["n"] = req.n
        if req.seed is not None:
            p["seed"] = req.seed
        if req.stop:
            p["stop"] = req.stop
        if req.response_format is not None:
            p["response_format"] = req.response_format
        return p

    # -- transport ----------------------------------------------------------------------
    async def _acomplete(self, request: ChatRequest) -> Completion:
        params = self._params(request)
        if self.route == "litellm":
            litellm = _import_litellm()

            async def send() -> Any:
                return await litellm.acompletion(
                    **params, api_key=self.api_key, timeout=self.timeout, num_retries=0
                )
        else:
            avoid: set[str] = set()

            async def send() -> Any:
                return await self._on_server(lambda c: c.chat.completions.create(**params), avoid)

        async def attempt() -> Completion:
            t0 = time.perf_counter()
            try:
                resp = await send()
                comp = _to_completion(resp, self._where, self.model)
            except BaseException:
                # No usable reply (error, timeout, cancelled, malformed): still a request.
                self.usage.record_failed(request.tag, time.perf_counter() - t0)
                raise
            if len(comp.texts) > 1 and _is_llamacpp(resp):
                await self._count_llamacpp_choices(comp, request.max_tokens)
            return comp

        try:
            return await with_retries(
                attempt,
                max_retries=self.max_retries,
                where=self._where,
                model=self.model,
                timeout=self.timeout,
                base_delay=self.retry_base_delay,
            )
        except SchemaRejected as exc:
            if request.response_format is not None:
                raise SchemaUnsupported(str(exc)) from exc
            raise

    async def _astream_raw(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params = {**self._params(request), "stream": True}
        if self.route != "litellm":
            params["stream_options"] = {"include_usage": True}

        avoid: set[str] = set()

        async def open_stream() -> Any:
            if self.route == "litellm":
                return await _import_litellm().acompletion(
                    **params, api_key=self.api_key, timeout=self.timeout, num_retries=0
                )
            return await self._on_server(lambda c: c.chat.completions.create(**params), avoid)

        stream = await with_retries(
            open_stream,
            max_retries=self.max_retries,
            where=self._where,
            model=self.model,
            timeout=self.timeout,
            base_delay=self.retry_base_delay,
        )
        finished = False
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None)
                ev = StreamEvent()
                if usage is not None:
                    ev.prompt_tokens = getattr(usage, "prompt_tokens", None)
                    ev.completion_tokens = getattr(usage, "completion_tokens", None)
                for choice in getattr(chunk, "choices", None) or []:
                    delta = getattr(choice, "delta", None)
                    ev.delta += (getattr(delta, "content", None) or "") if delta else ""
                    if choice.finish_reason:
                        ev.finish_reason = choice.finish_reason
                        finished = True
                yield ev
        except Exception as exc:
            from optiforge.llm.retry import classify

            raise classify(
                exc, where=self._where, model=self.model, timeout=self.timeout
            ).error from exc
        if not finished:
            raise LLMResponseError(
                f"the stream from {self._where} ended before the reply was finished (no "
                "finish_reason); the server may have dropped the connection. Retry the call."
            )

    async def _count_llamacpp_choices(self, comp: Completion, max_tokens: int) -> None:
        """llama.cpp's ``usage.completion_tokens`` for ``n > 1`` covers the first choice
        only. Count the others: a choice cut at the limit has ``max_tokens`` tokens; any
        other is its text re-tokenized by the server's ``/tokenize`` plus one for the
        end-of-generation token it generated (llama.cpp counts that token; checked on
        SmolLM2 with n=1..4: the reported number equals the first choice's tokens + 1 for
        ``stop``). A stop string cut from the text makes that count a token or two low."""
        import httpx

        root = (self.base_url or "").removesuffix("/v1")
        counts = [comp.completion_tokens]
        try:
            async with httpx.AsyncClient(timeout=min(self.timeout, 30.0)) as http:
                for text, reason in zip(comp.texts[1:], comp.finish_reasons[1:], strict=False):
                    if reason == "length":
                        counts.append(max_tokens)
                        continue
                    r = await http.post(f"{root}/tokenize", json={"content": text})
                    r.raise_for_status()
                    counts.append(len(r.json()["tokens"]) + (1 if reason == "stop" else 0))
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            # No tokenizer endpoint: estimate (about 4 characters per token) rather than
            # count the other choices as free.
            counts = counts[:1] + [
                max_tokens if r == "length" else max(1, len(t) // 4) + 1
                for t, r in zip(comp.texts[1:], comp.finish_reasons[1:], strict=False)
            ]
        comp.choice_tokens = counts
        comp.completion_tokens = sum(counts)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Close HTTP connections and the cache. An embedded server this client used keeps
        running: whoever started it stops it."""
        if self._closed:
            return
        self._closed = True
        from optiforge.llm._loop import background_loop

        clients = [(loop, c) for loop, per in self._clients.items() for c in per.values()]
        bg = background_loop() if clients else None
        for loop, client in clients:
            try:
                if loop is bg:
                    asyncio.run_coroutine_threadsafe(client.close(), bg).result(timeout=5)
                elif not loop.is_closed() and not loop.is_running():
                    loop.run_until_complete(client.close())
            except Exception:  # closing is best effort; sockets die with the loop anyway
                pass
        self._clients.clear()
        super().close()

    async def aclose(self) -> None:
        """Async form of :meth:`close` (closes this loop's connections properly)."""
        loop = asyncio.get_running_loop()
        for client in self._clients.pop(loop, {}).values():
            await client.close()
        await asyncio.to_thread(self.close)


def no_server_message(model: str) -> str:
    """What to do when a client without ``base_url`` finds no embedded server for ``model``."""
    return (
        f"no model server for {model!r}: this client has no base_url and no embedded "
        "llama.cpp server is running for that model in this process (LLM() never starts "
        "one by itself). Start one explicitly: in Python, "
        f"`with optiforge.llm.serving.local_server({model!r}, settings=...):` around the "
        "code that uses the client, or build the client with "
        "`optiforge.llm.serving.connect(settings)`, which starts it on first use; from the "
        f"shell, `optiforge serve --local --model {model}` and pass the URL it prints as "
        "base_url (OPTIFORGE_BASE_URL). For a hosted model use a provider/model name."
    )


def _is_llamacpp(resp: Any) -> bool:
    """True for a llama.cpp server's reply (it adds a ``timings`` object to each one)."""
    extra = getattr(resp, "model_extra", None) or {}
    return "timings" in extra or getattr(resp, "timings", None) is not None


def _to_completion(resp: Any, where: str, model: str) -> Completion:
    """Turn an SDK response into a :class:`Completion`, rejecting malformed ones."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise LLMResponseError(f"{where} returned a completion without choices: {resp!r:.300}")
    try:
        ordered = sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)
        texts = []
        for c in ordered:
            content = c.message.content
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
            texts.append(content)
        reasons = [c.finish_reason for c in ordered]
    except (AttributeError, TypeError) as exc:
        raise LLMResponseError(
            f"{where} returned a malformed completion ({exc}): {resp!r:.300}"
        ) from None
    usage = getattr(resp, "usage", None)
    ptok = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
    ctok = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
    cached, prompt_ms, predicted_ms = _server_work(resp, usage)
    return Completion(
        texts=texts,
        finish_reasons=reasons,
        prompt_tokens=ptok,
        completion_tokens=ctok,
        model=str(getattr(resp, "model", None) or model),
        server_cached_tokens=cached,
        prompt_ms=prompt_ms,
        predicted_ms=predicted_ms,
    )


def _number(value: Any) -> float:
    """A non-negative finite float from a server field, or 0 (servers send odd things)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return x if x == x and 0.0 <= x < float("inf") else 0.0


def _server_work(resp: Any, usage: Any) -> tuple[int, float, float]:
    """(prompt tokens from the server's prompt cache, prompt ms, generation ms) of a reply.

    The cached tokens come from the OpenAI field ``usage.prompt_tokens_details.cached_tokens``
    (vLLM with prefix caching, llama.cpp) or llama.cpp's ``timings.cache_n``; the times from
    llama.cpp's ``timings`` (``prompt_ms``, ``predicted_ms``). Missing fields count 0."""
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    if isinstance(details, dict):
        cached = _number(details.get("cached_tokens"))
    else:
        cached = _number(getattr(details, "cached_tokens", 0))
    extra = getattr(resp, "model_extra", None) or {}
    timings = extra.get("timings") if isinstance(extra, dict) else None
    if timings is None:
        timings = getattr(resp, "timings", None)
    if not isinstance(timings, dict):
        return int(cached), 0.0, 0.0
    if not cached:
        cached = _number(timings.get("cache_n"))
    return (
        int(cached),
        round(_number(timings.get("prompt_ms")), 3),
        round(_number(timings.get("predicted_ms")), 3),
    )
