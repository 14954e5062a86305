"""What callers above the llm layer need from a chat client: :class:`ChatClient`.

:class:`~optiforge.llm.client.LLM` and :class:`~optiforge.llm.testing.ScriptedLLM` satisfy
it (both are :class:`~optiforge.llm.base.BaseLLM`); so does any object with these two
methods, e.g. a test double or a wrapper that adds logging. Optimizers, roles and tuning
annotate their ``llm`` parameter with it instead of ``Any``.

Only typing is imported at run time, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from optiforge.llm.types import ChatResult

__all__ = ["ChatClient"]


@runtime_checkable
class ChatClient(Protocol):
    """A chat model client: ``chat`` (blocking) and ``achat`` (async) with the keyword
    arguments of :meth:`optiforge.llm.base.BaseLLM.chat`, returning a
    :class:`~optiforge.llm.types.ChatResult`.

    ``messages`` is a list of ``{"role", "content"}`` dicts or one user message as a string.
    A client may also have ``usage`` (a :class:`~optiforge.llm.usage.UsageTracker`), which
    optimizers read for their reports when it is there.
    """

    def chat(
        self,
        messages: list[dict[str, Any]] | str,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        response_format: type[BaseModel] | None = None,
        tag: str | None = None,
    ) -> ChatResult:
        """Ask for ``n`` replies and wait for them."""
        ...

    async def achat(
        self,
        messages: list[dict[str, Any]] | str,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        response_format: type[BaseModel] | None = None,
        tag: str | None = None,
    ) -> ChatResult:
        """Ask for ``n`` replies."""
        ...
