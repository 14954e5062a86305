"""Helpers shared by the commands that talk to a model (solve, eval, tune)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optiforge.config import Settings
    from optiforge.llm import LLM


def check_server(base_url: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when an OpenAI-compatible server does not answer."""
    import httpx

    from optiforge.llm.errors import LLMUnavailableError

    url = base_url.rstrip("/") + "/models"
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise LLMUnavailableError(
            f"cannot reach the model server at {base_url} ({type(exc).__name__}: {exc}). "
            "Start it (for example `optiforge serve`), fix --base-url, or leave --base-url "
            "out to use the embedded local server."
        ) from None
    if resp.status_code >= 500:
        raise LLMUnavailableError(
            f"the model server at {base_url} answered HTTP {resp.status_code} on /models; "
            "check its logs"
        )


def connect_llm(settings: Settings, *, no_cache: bool, concurrency: int | None = None) -> LLM:
    """The LLM a command uses: a configured server (checked first) or the embedded one."""
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
    from optiforge.llm import LLM

    return LLM(
        model=settings.model,
        base_url=settings.base_url,
        cache=False if no_cache else None,
        concurrency=concurrency,
        settings=settings,
    )
