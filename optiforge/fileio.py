"""Writing files so that a reader never sees half of one (standard library only).

Every layer may import this module, like :mod:`optiforge.errors`: state files, journals'
run metadata, reports, saved graphs, prompt files and model-store notes all go through
:func:`write_text_atomic`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) in one rename, and return the path.

    The text goes to a temporary file beside ``path`` (made with a unique name, so two
    writers never share it), is flushed (and fsynced unless ``fsync=False``), then renamed
    over ``path``; on any error the temporary file is removed and ``path`` is untouched.
    Parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
