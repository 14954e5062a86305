"""Route selection, lazy imports, and the litellm route against a fake server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from optiforge.llm import LLM, LLMError, ModelNotFoundError
from optiforge.llm.client import is_litellm_model


def test_route_selection(tmp_path):
    assert is_litellm_model("openai/gpt-4o-mini")
    assert is_litellm_model("anthropic/claude-3-5-haiku")
    assert not is_litellm_model("qwen2.5-coder-1.5b")
    assert not is_litellm_model("models/thing.gguf")
    (tmp_path / "local-folder").mkdir()
    assert not is_litellm_model(str(tmp_path / "local-folder"))
    assert LLM("Qwen/Qwen2.5-7B", base_url="http://h:8000/v1/", cache=False).route == "openai"
    assert LLM("openai/gpt-4o-mini", cache=False).route == "litellm"
    llm = LLM("smollm2-135m", cache=False)
    assert llm.route == "local" and llm.base_url is None  # nothing started yet


def test_importing_optiforge_and_llm_stays_light():
    code = (
        "import sys, optiforge, optiforge.llm; from optiforge.llm import LLM, ChatResult; "
        "import optiforge.llm.testing, optiforge.llm.serving, optiforge.llm.serving.store; "
        "bad = [m for m in ('litellm', 'openai', 'xllamacpp', 'torch', 'vllm') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_litellm_route_against_fake_server(fake, tmp_path):
    # litellm is the `hosted` extra, not a dev dependency (it pulls ~200 MB).
    pytest.importorskip("litellm")
    env_before = {
        k: os.environ.get(k) for k in ("OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_API_KEY")
    }
    with fake.FakeServer(
        [fake.ok("via litellm"), fake.status(404, "The model `openai/x` does not exist")]
    ) as srv:
        os.environ["OPENAI_API_BASE"] = os.environ["OPENAI_BASE_URL"] = srv.base_url
        os.environ["OPENAI_API_KEY"] = "sk-test"
        try:
            llm = LLM("openai/fake", cache_dir=tmp_path, max_retries=0)
            r = llm.chat("hi", max_tokens=5)
            assert r.text == "via litellm" and r.prompt_tokens == 7
            assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True"
            assert srv.requests[0]["model"] == "fake"
            with pytest.raises(ModelNotFoundError):
                llm.chat("again", max_tokens=5)
            llm.close()
        finally:
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_litellm_missing_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litellm", None)  # as if the extra were not installed
    llm = LLM("openai/fake", cache_dir=tmp_path, max_retries=0)
    with pytest.raises(LLMError, match=r"optiforge\[hosted\]"):
        llm.chat("hi", max_tokens=5)
    llm.close()


@pytest.mark.hosted
def test_hosted_provider_answers():
    """A real hosted model through litellm. Opt in: ``pytest -m hosted`` with
    ``OPTIFORGE_HOSTED_MODEL`` (e.g. ``openai/gpt-4o-mini``) and the provider's key set."""
    pytest.importorskip("litellm")
    model = os.environ.get("OPTIFORGE_HOSTED_MODEL")
    if not model:
        pytest.skip("set OPTIFORGE_HOSTED_MODEL (and the provider's API key) to run it")
    llm = LLM(model, cache=False, max_retries=1)
    try:
        r = llm.chat("Reply with the single word: ready", max_tokens=10, temperature=0.0)
    finally:
        llm.close()
    assert "ready" in r.text.lower()
    assert r.prompt_tokens > 0 and r.completion_tokens > 0
