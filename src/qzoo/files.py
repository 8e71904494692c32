"""Durable file writes: a crash, a kill or a full disk never leaves a half-written file in place.

The sequence is the classic one (write a temporary file, flush, fsync, rename, fsync the folder):
``rename`` is atomic on POSIX file systems, and the two fsyncs make the new name and the new bytes
reach the disk before anything that depends on them is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new or renamed names) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)``: the old file stays whole until the new one is on disk.

    On any error the temporary file is removed and the error propagates (``OSError`` for a full disk).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
