"""Throughput of optiforge's LLM client against the raw openai client, on the embedded
llama.cpp server; plus the cached re-run time and import/CLI start-up times.

    python benchmarks/llm_throughput.py --json
    python benchmarks/llm_throughput.py --model qwen2.5-coder-1.5b --requests 16 --max-tokens 64

Both clients send the same K concurrent requests (temperature 0, fixed seed) to the same
server; rounds alternate between the two (and which goes first) so that load from other processes
and warm server slots hit both alike; rates are pooled over rounds. ``ratio`` = optiforge_tok_s / raw_tok_s (target >= 0.95).
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


def _canned_server():
    """An instant OpenAI-compatible server, to time the clients without a model."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "canned",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok " * 32},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 32, "total_tokens": 52},
        }
    ).encode()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


async def _client_overhead_ms(settings, k: int, total: int) -> dict[str, float]:
    """Per-request wall time of each client against the instant server (k in flight)."""
    import openai

    from optiforge.llm import LLM

    httpd, url = _canned_server()
    prompts = [[{"role": "user", "content": f"request {i}"}] for i in range(total)]
    raw = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    sem = asyncio.Semaphore(k)

    async def one(m):
        async with sem:
            return await raw.chat.completions.create(model="canned", messages=m, max_tokens=32)

    out = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        ours = LLM("canned", base_url=url, settings=settings, concurrency=k, cache_dir=cache_dir)
        for _ in range(2):  # the first pass warms connections and imports
            t0 = time.perf_counter()
            await asyncio.gather(*(one(m) for m in prompts))
            out["raw_ms_per_request"] = (time.perf_counter() - t0) * 1000 / total
            ours.cache.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(ours.achat(m, max_tokens=32) for m in prompts))
            out["optiforge_ms_per_request"] = (time.perf_counter() - t0) * 1000 / total
        await ours.aclose()
    await raw.close()
    httpd.shutdown()
    return {key: round(v, 3) for key, v in out.items()}


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
    from optiforge.llm.serving.local import ensure_local_server

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
            ours.append((tok, dt))
            cached.append(ms)
            raw.append((tok2, dt2))
            print(
                f"round {i + 1}: optiforge {tok} tok in {dt:.1f} s, raw {tok2} tok in {dt2:.1f} s,"
                f" cached re-run {ms:.1f} ms",
                file=sys.stderr,
            )
        return ours, raw, cached

    ours, raw, cached = asyncio.run(run())
    overhead = asyncio.run(_client_overhead_ms(settings, args.requests, 400))
    ours_rate = sum(t for t, _ in ours) / sum(d for _, d in ours)
    raw_rate = sum(t for t, _ in raw) / sum(d for _, d in raw)
    out = {
        "model": args.model,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "server_slots": server.n_parallel,
        # Pooled over rounds (total tokens / total seconds): with the order alternating,
        # the second client's advantage from warm slots cancels out.
        "optiforge_tok_s": round(ours_rate, 2),
        "raw_tok_s": round(raw_rate, 2),
        "ratio": round(ours_rate / raw_rate, 3),
        "ratio_median_of_rounds": round(
            statistics.median(t / d for t, d in ours) / statistics.median(t / d for t, d in raw), 3
        ),
        "cached_rerun_ms": round(statistics.median(cached), 2),
        # Client cost without a model (instant server, cache on, all misses): the share of
        # a real request's time that the client itself adds.
        "client_overhead": overhead,
        "optiforge_tok_s_rounds": [round(t / d, 2) for t, d in ours],
        "raw_tok_s_rounds": [round(t / d, 2) for t, d in raw],
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
