"""Installed size of optiforge: fresh venvs, ``pip install -e .`` and ``-e '.[local,dev]'``.

    python benchmarks/install_size.py                      # the working tree
    python benchmarks/install_size.py --ref eb7611d         # a commit (git archive)
    python benchmarks/install_size.py --extras core local,dev --keep /tmp/sizes

For each extras set: a new venv under a temporary folder (``--keep DIR`` keeps them), the
editable install from a clean copy of the tree (``git archive`` of ``--ref``, default the
working tree as committed: HEAD), then the size of site-packages (``du``-style: file sizes
summed, pip and setuptools included as in any venv), the number of distributions, and the
largest top-level entries. Prints one JSON document. It downloads from the package index
the venv's pip is configured with, so it needs the same network access as an install.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _measure(src: Path, extras: str, work: Path) -> dict:
    venv = work / f"venv-{extras.replace(',', '-')}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    target = str(src) if extras == "core" else f"{src}[{extras}]"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", target],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pip install -e {target} failed:\n{proc.stderr[-3000:]}")
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    dists = json.loads(
        subprocess.run(
            [str(py), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    entries = sorted(
        ((p.name, _tree_size(p) if p.is_dir() else p.stat().st_size) for p in site.iterdir()),
        key=lambda kv: -kv[1],
    )
    return {
        "command": f"pip install -e {'.' if extras == 'core' else repr('.[' + extras + ']')}",
        "site_packages_mb": round(_tree_size(site) / 2**20, 1),
        "distributions": len(dists),
        "names": sorted(d["name"].lower() for d in dists),
        "largest_mb": {name: round(size / 2**20, 1) for name, size in entries[:12]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="HEAD", help="git ref to measure (default HEAD)")
    ap.add_argument("--extras", nargs="+", default=["core", "local,dev"])
    ap.add_argument("--keep", type=Path, help="keep the venvs in this folder")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="optiforge-size-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        results = {extras: _measure(src, extras, work) for extras in args.extras}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "ref": args.ref,
                "commit": commit,
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
