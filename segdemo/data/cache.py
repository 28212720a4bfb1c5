"""On-disk cache of decoded colour masks, so only the first epoch pays for colour mapping.

An entry is a single-channel PNG of train ids, keyed by the source file's absolute path,
size and mtime plus everything that changes the result (label set, crop, max distance).
The number of far-from-palette pixels travels in a PNG text chunk. Writes are atomic
(temporary file + ``os.replace``); an unreadable entry is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from segdemo.files import atomic_writer
from segdemo.labels import cache_dir

log = logging.getLogger(__name__)

#: Bump when the cached representation or the mapping changes.
CACHE_VERSION = 1


def mask_cache_path(source: Path, variant: str) -> Path:
    """Where the mapped mask of ``source`` is cached; ``variant`` names the mapping."""
    st = source.stat()
    key = f"v{CACHE_VERSION}|{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{variant}"
    digest = hashlib.sha1(key.encode()).hexdigest()
    return cache_dir() / "masks" / digest[:2] / f"{digest}.png"


def _read_entry(path: Path) -> tuple[np.ndarray, int] | None:
    try:
        with Image.open(path) as im:
            im.load()
            n_far = int(im.text.get("n_far", "-1"))
            if im.mode != "L" or n_far < 0:
                raise ValueError(f"mode {im.mode}, n_far {n_far}")
            return np.asarray(im), n_far
    except FileNotFoundError:
        return None
    except Exception as exc:  # corrupt or foreign file: recompute
        log.warning("ignoring corrupt cache entry %s (%s)", path, exc)
        return None


def _write_entry(path: Path, mask: np.ndarray, n_far: int) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("n_far", str(int(n_far)))
    try:
        with atomic_writer(path) as f:
            Image.fromarray(mask).save(f, format="PNG", pnginfo=info, compress_level=1)
    except OSError as exc:  # a read-only or full disk must not stop training
        log.warning("could not write mask cache entry %s: %s", path, exc)


def cached_mask(
    source: Path,
    variant: str,
    compute: Callable[[], tuple[np.ndarray, int]],
    enabled: bool = True,
) -> tuple[np.ndarray, int]:
    """Return ``compute()`` for ``source``, from the cache when a valid entry exists.

    Args:
        source: the file the mask is decoded from (its path, size and mtime form the key).
        variant: a string naming the mapping (label set, crop, max distance).
        compute: returns ``(train_ids uint8 HxW, n_far_pixels)``.
        enabled: False bypasses the cache entirely.
    """
    if not enabled:
        return compute()
    path = mask_cache_path(source, variant)
    entry = _read_entry(path)
    if entry is not None:
        return entry
    mask, n_far = compute()
    _write_entry(path, np.ascontiguousarray(mask, dtype=np.uint8), n_far)
    return mask, n_far
