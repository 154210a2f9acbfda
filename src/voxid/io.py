"""The one way voxid writes a file: into a temporary file beside it, then renamed over it.

A reader (or a crash at any moment) sees the old file or the new one, never half of one.
Every writer goes through `atomic_write`: checkpoints, ONNX exports, stores, reports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_npz", "atomic_write_text"]


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    tmp: str | os.PathLike[str] | None = None,
    fsync: bool = False,
) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    Arguments:
        path: the file to write; its folder is created.
        write: writes the whole content to the path it is given (it may stream into it).
        tmp: the temporary file's path, when a cleaner must recognise a dead writer's
            leftovers by its name (`.<name>.<pid>.tmp`); default a fresh private name.
        fsync: flush the data to disk before the rename, so a power cut soon after it
            cannot leave the new name with no data.

    The temporary file is removed whatever happens; the file gets the permissions a plain
    `open()` would give.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "a.txt", "hi").read_text()
    'hi'
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        staged = Path(name)
    else:
        staged = Path(tmp)
    try:
        write(staged)
        if fsync:
            with open(staged, "rb+") as f:
                os.fsync(f.fileno())
        # mkstemp makes the file private; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staged, 0o666 & ~umask)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> Path:
    """Write `arrays` as an uncompressed `.npz` atomically (never pickled on load)."""

    def write(tmp: Path) -> None:
        # A file object: given a path without `.npz`, np.savez would append one.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)
