"""Convert a GGUF file into a Hugging Face model folder that vLLM can load.

Run by ``optiforge serve --model`` with the *vLLM environment's* Python (it needs
transformers, torch, gguf and accelerate there, not in optiforge's environment), so it
imports nothing from optiforge:

    python gguf_to_hf.py MODEL.gguf OUT_DIR

The weights are dequantized (vLLM 0.32 no longer reads GGUF). The folder is written next to
OUT_DIR and renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config)
    # The weights are plain tensors now; a leftover quantizer makes save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "optiforge-converted.json").write_text(
        json.dumps({"source": str(gguf), "seconds": round(time.time() - t0, 1)})
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gguf_to_hf.py MODEL.gguf OUT_DIR", file=sys.stderr)
        return 2
    convert(Path(argv[0]).resolve(), Path(argv[1]).resolve())
    print(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
