"""Helpers shared by the commands that talk to a model (solve, eval, tune)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optiforge.config import Settings
    from optiforge.llm import LLM


#: Seconds to wait for a server that answers "loading" (HTTP 503) before giving up;
#: ``OPTIFORGE_READY_TIMEOUT`` overrides it.
READY_TIMEOUT_S = 300.0


def _ready_timeout() -> float:
    import os

    raw = os.environ.get("OPTIFORGE_READY_TIMEOUT")
    if not raw:
        return READY_TIMEOUT_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        from optiforge.errors import ConfigError

        raise ConfigError(f"OPTIFORGE_READY_TIMEOUT must be seconds, got {raw!r}") from None


def check_server(
    base_url: str,
    timeout: float = 10.0,
    *,
    ready_timeout: float | None = None,
    interval: float = 0.5,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Wait until an OpenAI-compatible server answers ``/models``, or fail with a clear
    message (:func:`optiforge.llm.serving.readiness.wait_until_ready`), waiting for a
    server still loading its model up to ``ready_timeout`` seconds (default 300, or
    ``OPTIFORGE_READY_TIMEOUT``)."""
    from optiforge.llm.serving.readiness import wait_until_ready

    if ready_timeout is None:
        ready_timeout = _ready_timeout()
    wait_until_ready(base_url, timeout, ready_timeout=ready_timeout, interval=interval, echo=echo)


def connect_llm(settings: Settings, *, no_cache: bool, concurrency: int | None = None) -> LLM:
    """The LLM a command uses: a configured server (waited for until it is ready, see
    :func:`check_server`), a hosted model, or the embedded llama.cpp server, which the
    client starts on its first call (explicitly: :func:`optiforge.llm.serving.connect`'s
    ``start_local``) and which serves until the command exits."""
    if settings.base_url:
        # Several comma-separated servers: go on while one answers; the client's pool
        # marks the others down and probes them again later.
        from optiforge.llm.pool import split_base_urls

        urls = split_base_urls(settings.base_url)
        failures = []
        for url in urls:
            try:
                check_server(url)
            except Exception as exc:
                failures.append(exc)
        if failures and len(failures) == len(urls):
            raise failures[0]
    from optiforge.llm.serving import connect

    llm = connect(settings, cache=False if no_cache else None, concurrency=concurrency)
    if settings.base_url:
        # Several servers: their slots add up (unknown if any one does not say).
        slots = [server_slots(u) for u in urls]
        llm.limit_in_flight(sum(slots) if all(slots) else None)  # type: ignore[arg-type]
    return llm


def server_slots(base_url: str, timeout: float = 5.0) -> int | None:
    """The parallel slots of a llama.cpp server, or None for servers that do not say
    (:func:`optiforge.llm.serving.readiness.server_slots`)."""
    from optiforge.llm.serving.readiness import server_slots as slots_of

    return slots_of(base_url, timeout)


def llm_provenance(llm: LLM, settings: Settings | None = None) -> dict[str, Any]:
    """The model side of a run: route, model name, server URL and kind, model file and
    sha256 (embedded server: always; a llama.cpp server on this machine: when its file is
    readable), and the settings without secrets (for ``run.json``)."""
    from optiforge.evals.provenance import model_file_info, server_info, settings_dict

    out: dict[str, Any] = {"model": getattr(llm, "model", None)}
    route = getattr(llm, "route", None)
    out["route"] = route
    if route == "litellm":
        out["server"] = {"kind": "hosted (litellm)", "url": None}
    elif route == "local":
        from optiforge.llm.serving.local import server_for_url

        server = server_for_url(getattr(llm, "base_url", None))
        out["server"] = {"kind": "embedded llama.cpp", "url": getattr(llm, "base_url", None)}
        if server is not None:
            out["server"].update(
                slots=server.n_parallel, ctx_per_slot=server.ctx_per_slot, threads=server.threads
            )
            out["model_file"] = model_file_info(server.model_path)
    elif getattr(llm, "base_url", None):
        from optiforge.llm.pool import split_base_urls

        infos = [server_info(u) for u in split_base_urls(llm.base_url)]
        models = [m for m in (i.pop("model", None) for i in infos) if m]
        out["server"] = infos[0] if len(infos) == 1 else {"kind": "pool", "servers": infos}
        if models:
            out["model_file"] = models[0]
    if settings is None:
        settings = getattr(llm, "settings", None)
    out["settings"] = settings_dict(settings)
    if hasattr(llm, "cache"):
        # What the client does, not what the settings asked for (--no-cache turns it off).
        out["settings"]["cache"] = llm.cache is not None
    return out
