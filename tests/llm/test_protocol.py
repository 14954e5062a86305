"""optiforge.llm.protocol.ChatClient matches the real client, so annotating with it says
something true."""

from __future__ import annotations

import inspect

import pytest

from optiforge.llm.base import BaseLLM
from optiforge.llm.protocol import ChatClient
from optiforge.llm.testing import ScriptedLLM


@pytest.mark.parametrize("method", ["chat", "achat"])
def test_protocol_signature_is_the_clients(method):
    proto = inspect.signature(getattr(ChatClient, method))
    real = inspect.signature(getattr(BaseLLM, method))
    assert [(p.name, p.kind, p.default) for p in proto.parameters.values()] == [
        (p.name, p.kind, p.default) for p in real.parameters.values()
    ]
    assert inspect.iscoroutinefunction(getattr(ChatClient, method)) == (method == "achat")


def test_clients_satisfy_it_and_other_objects_do_not():
    from optiforge.llm import LLM

    assert isinstance(ScriptedLLM(["x"]), ChatClient)
    assert issubclass(LLM, BaseLLM) and isinstance(ScriptedLLM(["x"]), BaseLLM)

    class OnlySync:
        def chat(self, messages, **kw):
            return None

    assert not isinstance(OnlySync(), ChatClient)


def test_importing_it_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, optiforge.llm.protocol; "
        "print(any(m in sys.modules for m in ('pydantic', 'openai', 'litellm', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
