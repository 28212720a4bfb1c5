"""Writing a file so that it is never seen half-written: one helper for every writer; and
the checks of a folder or file a user names for output.

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


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` if it is a folder or can be made one; refuse a file, or a file on its way.

    Raises:
        ValueError: one sentence naming ``what`` (the flag) and the file in the way.
    """
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return path
            if existing == path:
                raise ValueError(f"{what} {path} is a file, not a folder")
            raise ValueError(f"{what} {path} cannot be a folder: {existing} is a file")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """``path`` if a file can be written there: not a folder, and no file on its way.

    Raises:
        ValueError: one sentence naming ``what`` (the flag).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    check_output_folder(path.parent, what=f"{what} {path}: its folder")
    return path


# --------------------------------------------------------------------------- run lock
#: A run folder's lock: the training process holds an exclusive ``flock`` on this file for
#: as long as it lives, and the OS releases it when the process ends, however it ends
#: (exit, crash, SIGKILL). Whether a run is alive is whether its lock is held: sure, not
#: guessed from a pid that the system may have given to another program since.
RUN_LOCK_FILE = ".train.lock"
#: Set by a launcher that took a run folder's lock and passed it to the trainer it
#: started (``segdemo.runs``), so the run is alive from its first instant.
RUN_LOCK_FD_ENV = "SEGDEMO_RUN_LOCK_FD"


def run_lock_holder(run_dir: str | Path) -> str | None:
    """Who holds ``run_dir``'s lock now (``"pid 123"``), or None when no process does."""
    import fcntl

    try:
        fd = os.open(Path(run_dir) / RUN_LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no run ever trained here with a lock
        return None
    try:
        try:
            # Shared and for an instant: a trainer taking the lock meanwhile waits for it
            # (take_run_lock), it is never refused because someone looked.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 200).decode("utf-8", "replace").strip()
            return text or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def take_run_lock(run_dir: str | Path, wait_s: float = 2.0):
    """Take ``run_dir``'s lock, exclusive, for as long as the returned file stays open; None
    when another process holds it (after waiting up to ``wait_s`` for a mere look).

    A lock that this process inherited from its launcher (``RUN_LOCK_FD_ENV``) for this
    very folder is adopted rather than taken again."""
    import fcntl
    import time

    run_dir = Path(run_dir)
    inherited = _inherited_lock(run_dir)
    if inherited is not None:
        return inherited
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = (run_dir / RUN_LOCK_FILE).open("a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() >= deadline:
                lock.close()
                return None
            time.sleep(0.05)


def _inherited_lock(run_dir: Path):
    fd = os.environ.pop(RUN_LOCK_FD_ENV, None)
    if fd is None:
        return None
    try:
        held, target = os.fstat(int(fd)), os.stat(run_dir / RUN_LOCK_FILE)
    except (ValueError, OSError):
        return None
    if (held.st_dev, held.st_ino) != (target.st_dev, target.st_ino):
        return None  # a lock of another folder: not ours to adopt
    return os.fdopen(int(fd), "a+")
