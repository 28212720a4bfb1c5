"""Writing a file so that it is never seen half-written: one helper for every writer.

The data goes to a temporary file beside the target (``.<name>.<random>.tmp``), which then
replaces the target in one ``os.replace``; on any error the temporary file is removed and
the target is untouched. ``durable=True`` also flushes the data and the rename to disk
(checkpoints, run records); caches skip that cost.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644  # what a plain write under the default umask gives: readable by all


@contextlib.contextmanager
def atomic_writer(
    path: str | Path, *, mode: int = FILE_MODE, durable: bool = False
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; it becomes ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp creates 0600
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(
    path: str | Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, durable=durable) as f:
        f.write(data)
