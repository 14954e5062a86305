"""What produced a run: code, environment, settings, model server and model file.

Each eval session records :func:`code_provenance` (optiforge's version, the git commit and
whether the tree was dirty, Python and key package versions); the CLI adds the model side
(:func:`optiforge.cli.common.llm_provenance`, built from :func:`server_info`,
:func:`model_file_info` and :func:`settings_dict`: the server's URL and kind, the model file
and its sha256, the settings without secrets). ``run.json`` keeps both per session, since a resumed run may
continue on other code or another server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from optiforge.evals.records import portable_text

#: Packages whose versions change what a run does (read from metadata, never imported).
KEY_PACKAGES = (
    "openai",
    "httpx",
    "pydantic",
    "xllamacpp",
    "litellm",
    "vllm",
    "pyomo",
    "highspy",
    "pyscipopt",
    "numpy",
)

#: Settings fields never written to disk (substring match on the field name).
_SECRET_WORDS = ("key", "token", "secret", "password")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(path: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout holding ``path`` (default: this package) and whether
    tracked files differ from it. Empty for an installed wheel (no checkout)."""
    here = Path(path) if path else Path(__file__).resolve().parents[1]
    top = _git(["rev-parse", "--show-toplevel"], here)
    if not top or not (Path(top) / "optiforge").is_dir():
        return {}
    commit = _git(["rev-parse", "HEAD"], here)
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    out: dict[str, Any] = {"git_commit": commit}
    if status is not None:
        out["git_dirty"] = bool(status)
        if status:
            out["git_dirty_files"] = [line[3:] for line in status.splitlines()][:50]
    return out


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (missing packages left out)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def code_provenance() -> dict[str, Any]:
    """optiforge's version and git state, Python, the platform and key package versions."""
    from optiforge import __version__

    return {
        "optiforge_version": __version__,
        **git_state(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }


def settings_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data, with secrets (API keys, tokens) left out."""
    if settings is None:
        return {}
    if dataclasses.is_dataclass(settings):
        raw = dataclasses.asdict(settings)
    elif hasattr(settings, "model_dump"):
        raw = settings.model_dump()
    else:
        raw = dict(vars(settings))
    out = {}
    for k, v in raw.items():
        if any(w in k.lower() for w in _SECRET_WORDS):
            out[k] = "<set>" if v else None
            continue
        if isinstance(v, (int, float, bool, type(None))):
            out[k] = v
        else:  # paths: this machine's home and install folders become placeholders
            out[k] = portable_text(str(v))
    return json.loads(json.dumps(out, default=str))


def model_file_info(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of a model file: from the store's verification note when it
    still matches the file (size and mtime), else computed now."""
    path = Path(path)
    info: dict[str, Any] = {"file": path.name}
    try:
        st = path.stat()
    except OSError:
        return info
    info["size"] = st.st_size
    note = path.with_name(path.name + ".verified")
    try:
        data = json.loads(note.read_text())
        if data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns:
            info["sha256"] = data["sha256"]
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    info["sha256"] = h.hexdigest()
    return info


def server_info(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """What an OpenAI-compatible server says about itself: its kind (``llama.cpp``,
    ``vllm`` or ``openai-compatible``), the served model ids and, for llama.cpp, the
    model file (hashed when it is on this machine)."""
    import httpx

    out: dict[str, Any] = {"url": base_url, "kind": "openai-compatible"}
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        models = httpx.get(base_url.rstrip("/") + "/models", timeout=timeout).json()
        data = models.get("data") or []
        out["served_models"] = [m.get("id") for m in data if isinstance(m, dict)][:10]
        owners = {str(m.get("owned_by", "")).lower() for m in data if isinstance(m, dict)}
        if "llamacpp" in owners:
            out["kind"] = "llama.cpp"
        elif "vllm" in owners:
            out["kind"] = "vllm"
            roots = [m.get("root") for m in data if isinstance(m, dict) and m.get("root")]
            if roots:
                out["model_root"] = roots[0]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return out
    if out["kind"] == "llama.cpp":
        try:
            props = httpx.get(root + "/props", timeout=timeout).json()
            model_path = props.get("model_path")
            if model_path:
                p = Path(model_path)
                out["model"] = model_file_info(p) if p.exists() else {"file": p.name}
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
    return out


def python_executable() -> str:
    """The interpreter's name only (a full path would name this machine's folders)."""
    return Path(sys.executable).name
