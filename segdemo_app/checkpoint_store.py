"""Checkpoint files the app manages: validated uploads, renames and deletions.

No Streamlit here. Nothing is ever overwritten: new names are claimed with ``os.link``,
which fails when the name exists, so two uploads of ``model.safetensors`` give
``model.safetensors`` and ``model-2.safetensors``. An upload of at most
:data:`MAX_UPLOAD_MB` is written to a private temporary folder and loaded with
``load_checkpoint`` (the safe loader: it refuses pickles that would run code, metadata
that breaks the schema, models over the size limits and weights that do not fit) before
anything appears in the checkpoints folder, so a bad upload leaves nothing behind. A kept
upload gets the mode of a trained checkpoint (``CHECKPOINT_FILE_MODE``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from segdemo import limits
from segdemo.checkpoints import (
    CHECKPOINT_FILE_MODE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
#: The largest checkpoint the Checkpoints page accepts (a 200 M-parameter model in fp16
#: takes 400 MB; the bundled ones take 4 to 14 MB).
MAX_UPLOAD_MB = limits.CHECKPOINT_MAX_MB
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str) -> str:
    """A file stem made of letters, digits, ``.``, ``_`` and ``-`` (no path, no suffix)."""
    stem = _UNSAFE.sub("_", Path(name).stem).strip("._")
    return stem[: limits.CHECKPOINT_NAME_MAX_CHARS] or "checkpoint"


def _claim(source: Path, folder: Path, stem: str) -> Path:
    """Give ``source`` (a file inside ``folder``) the first free name ``stem[-n].safetensors``."""
    for n in range(1, 1000):
        target = folder / (f"{stem}.safetensors" if n == 1 else f"{stem}-{n}.safetensors")
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        source.unlink()
        return target
    raise CheckpointError(f"{folder} already holds too many checkpoints named {stem}")


def import_checkpoint(
    data: bytes, filename: str, folder: str | Path, max_mb: int = MAX_UPLOAD_MB
) -> Path:
    """Validate an uploaded checkpoint and keep it in ``folder`` as ``.safetensors``.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)`` and converted.

    Args:
        max_mb: the largest file accepted, in MiB (the Checkpoints page's stated limit).

    Returns:
        The path of the new file (a free name: an existing file is never replaced).

    Raises:
        CheckpointError: one sentence: wrong suffix, over ``max_mb``, or
            anything ``load_checkpoint`` refuses.
    """
    folder = Path(folder)
    suffix = Path(filename).suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(
            f"{filename} is not a checkpoint file; upload a {', '.join(CHECKPOINT_SUFFIXES)} file"
        )
    if len(data) > max_mb * 2**20:
        raise CheckpointError(
            f"{filename} is {len(data) / 2**20:,.1f} MB; uploads may be at most {max_mb} MB"
        )
    stem = safe_stem(filename)
    with tempfile.TemporaryDirectory(prefix="segdemo-upload-") as scratch:
        candidate = Path(scratch) / f"{stem}{suffix}"
        candidate.write_bytes(data)
        checkpoint = load_checkpoint(candidate)  # raises CheckpointError
        folder.mkdir(parents=True, exist_ok=True)
        # A hidden name inside the folder, so the final link is on the same file system;
        # listings only see *.safetensors.
        fd, staged = tempfile.mkstemp(prefix=f".{stem}.", suffix=".upload", dir=folder)
        os.close(fd)
        staged = Path(staged)
        try:
            if suffix == ".safetensors":
                shutil.copyfile(candidate, staged)
                os.chmod(staged, CHECKPOINT_FILE_MODE)  # mkstemp made it private
            else:
                save_checkpoint(staged, checkpoint.model, checkpoint.metadata)
            return _claim(staged, folder, stem)
        finally:
            staged.unlink(missing_ok=True)


def rename_checkpoint(path: str | Path, new_name: str) -> Path:
    """Rename a checkpoint within its folder; refuses a name that is taken.

    Raises:
        CheckpointError: the new name is empty, too long, unchanged or already used, or
            the file system refuses the rename.
    """
    path = Path(path)
    stem = _UNSAFE.sub("_", new_name.strip().removesuffix(".safetensors")).strip("._")
    if not stem:
        raise CheckpointError("the new name is empty; use letters, digits, '.', '_' or '-'")
    if len(stem) > limits.CHECKPOINT_NAME_MAX_CHARS:
        raise CheckpointError(
            f"the new name is {len(stem)} characters long; a checkpoint's name may be at "
            f"most {limits.CHECKPOINT_NAME_MAX_CHARS}"
        )
    target = path.with_name(f"{stem}.safetensors")
    if target == path:
        raise CheckpointError(f"{path.name} already has that name")
    try:
        os.link(path, target)
    except FileExistsError as e:
        raise CheckpointError(f"{target.name} already exists; pick another name") from e
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path.name} no longer exists") from e
    except OSError as e:
        raise CheckpointError(f"{path.name} could not be renamed: {e.strerror}") from e
    path.unlink()
    return target


def delete_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint file.

    Raises:
        CheckpointError: the file no longer exists.
    """
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path.name} no longer exists") from e
