"""Throughput of optiforge's LLM client against the raw openai client, on the embedded
llama.cpp server; plus the cached re-run time and import/CLI start-up times.

    python benchmarks/llm_throughput.py --json
    python benchmarks/llm_throughput.py --model qwen2.5-coder-1.5b --requests 16 --max-tokens 64

Both clients send the same K concurrent requests (temperature 0, fixed seed) to the same
server; rounds alternate between the two so that load from other processes hits both alike,
and medians are reported. ``ratio`` = optiforge_tok_s / raw_tok_s (target >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time


def _startup_s(argv: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def _prompts(k: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write a short paragraph about the number {i}."}]
        for i in range(k)
    ]


async def _raw_round(base_url: str, model: str, prompts, max_tokens: int) -> tuple[int, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    resps = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=model, messages=m, max_tokens=max_tokens, temperature=0.0, seed=1
            )
            for m in prompts
        )
    )
    dt = time.perf_counter() - t0
    await client.close()
    return sum(r.usage.completion_tokens for r in resps), dt


async def _optiforge_round(settings, base_url, prompts, max_tokens: int, k: int):
    from optiforge.llm import LLM

    with tempfile.TemporaryDirectory() as cache_dir:
        llm = LLM(settings=settings, base_url=base_url, concurrency=k, cache_dir=cache_dir)
        t0 = time.perf_counter()
        res = await asyncio.gather(
            *(llm.achat(m, max_tokens=max_tokens, temperature=0.0, seed=1) for m in prompts)
        )
        dt = time.perf_counter() - t0
        tokens = sum(r.completion_tokens for r in res)
        # The same K requests again: all from the cache.
        t1 = time.perf_counter()
        again = await asyncio.gather(
            *(llm.achat(m, max_tokens=max_tokens, temperature=0.0, seed=1) for m in prompts)
        )
        cached_ms = (time.perf_counter() - t1) * 1000
        assert all(r.cached for r in again), "re-run was not served from the cache"
        await llm.aclose()
    return tokens, dt, cached_ms


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", default="smollm2-135m", help="store name served by the embedded server"
    )
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from optiforge.config import load_settings
    from optiforge.llm.local import ensure_local_server

    settings = dataclasses.replace(load_settings(), model=args.model, base_url=None)
    server = ensure_local_server(args.model, settings, progress=not args.json)
    prompts = _prompts(args.requests)

    async def run():
        await _raw_round(server.base_url, server.alias, prompts, args.max_tokens)  # warm-up
        ours, raw, cached = [], [], []
        for i in range(args.rounds):
            # Alternate who goes first, so neither client gets the other's warm slots.
            if i % 2:
                tok2, dt2 = await _raw_round(
                    server.base_url, server.alias, prompts, args.max_tokens
                )
            tok, dt, ms = await _optiforge_round(
                settings, server.base_url, prompts, args.max_tokens, args.requests
            )
            if not i % 2:
                tok2, dt2 = await _raw_round(
                    server.base_url, server.alias, prompts, args.max_tokens
                )
            ours.append(tok / dt)
            cached.append(ms)
            raw.append(tok2 / dt2)
            print(
                f"round {i + 1}: optiforge {tok} tok in {dt:.1f} s, raw {tok2} tok in {dt2:.1f} s,"
                f" cached re-run {ms:.1f} ms",
                file=sys.stderr,
            )
        return ours, raw, cached

    ours, raw, cached = asyncio.run(run())
    out = {
        "model": args.model,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "server_slots": server.n_parallel,
        "optiforge_tok_s": round(statistics.median(ours), 2),
        "raw_tok_s": round(statistics.median(raw), 2),
        "ratio": round(statistics.median(ours) / statistics.median(raw), 3),
        "cached_rerun_ms": round(statistics.median(cached), 2),
        "optiforge_tok_s_rounds": [round(x, 2) for x in ours],
        "raw_tok_s_rounds": [round(x, 2) for x in raw],
        "import_optiforge_s": round(_startup_s([sys.executable, "-c", "import optiforge"]), 3),
        "import_optiforge_llm_s": round(
            _startup_s([sys.executable, "-c", "from optiforge.llm import LLM"]), 3
        ),
        "cli_help_s": round(_startup_s([sys.executable, "-m", "optiforge", "--help"]), 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
