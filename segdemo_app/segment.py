"""Helpers of the Segment page: photos in, masks and pictures out (thin, no page layout).

Photos are decoded once per upload (``st.cache_resource`` keyed by the upload's file id)
and never mutated; each keeps a display copy (at most ``DISPLAY_MAX_SIDE`` pixels on its
long side) so the browser gets light images while masks and downloads stay at full size.
"""

from __future__ import annotations

import html
import io
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from segdemo.images import ImageError, load_image
from segdemo.inference import pruning_kwargs, segment_image
from segdemo.viz import colorize, legend_entries, overlay

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp"]
DISPLAY_MAX_SIDE = 1024
MIN_PHOTO_SIDE = 16  # smaller "photos" (icons, 1x1 pixels) cannot show a street scene
EXAMPLE_COUNT = 4
EXAMPLE_SIZE = (256, 512)  # (H, W) of the synthetic gallery scenes
MASK_CACHE_BYTES = 256 * 2**20  # masks kept per session (uint8 at photo size)


@dataclass(frozen=True)
class Photo:
    """A decoded photo: ``image`` at full size, ``display`` scaled for the browser."""

    key: str
    name: str
    image: np.ndarray = field(repr=False)
    display: np.ndarray = field(repr=False)

    @property
    def size_text(self) -> str:
        height, width = self.image.shape[:2]
        return f"{width}×{height}"

    @property
    def stem(self) -> str:
        return Path(self.name).stem or "photo"


@dataclass(frozen=True)
class SegmentResult:
    """One model's mask of one photo, with the time ``segment_image`` took."""

    mask: np.ndarray = field(repr=False)  # (H, W) uint8 train ids at photo size
    inference_ms: float
    legend: list[dict]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared between reruns: nobody may change it
    return array


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 ``(H, W)`` label map to ``size = (H, W)``."""
    if labels.shape[:2] == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def display_copy(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """``image`` scaled down (never up) so that its long side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def make_photo(key: str, name: str, image: np.ndarray) -> Photo:
    height, width = image.shape[:2]
    if min(height, width) < MIN_PHOTO_SIDE:
        raise ImageError(
            f"{name} is only {width}x{height} pixels; a photo needs at least "
            f"{MIN_PHOTO_SIDE}x{MIN_PHOTO_SIDE} to be segmented"
        )
    if not image.flags.writeable:
        image = image.copy()  # torch warns about read-only arrays (np.asarray of a PIL image)
    # Only the display copy is frozen, for the same reason.
    return Photo(key, name, image, _frozen(display_copy(image).copy()))


@st.cache_resource(show_spinner=False, max_entries=8)
def read_upload(file_id: str, name: str, _data: bytes) -> Photo:
    """Decode an upload once (keyed by its file id; the bytes are not hashed).

    Raises:
        ImageError: one sentence naming the file (not an image, truncated, too large,
            too small).
    """
    return make_photo(file_id, name, load_image(_data, name=name))


@st.cache_resource(show_spinner=False)
def example_photos() -> list[Photo]:
    """The gallery shown before anything is uploaded: built-in synthetic street scenes."""
    from segdemo.data import open_dataset

    dataset = open_dataset("synthetic", "val", length=EXAMPLE_COUNT, native_size=EXAMPLE_SIZE)
    return [
        make_photo(f"example-{i}", f"example-{i + 1}.png", dataset.read_raw(i)[0])
        for i in range(len(dataset))
    ]


def default_checkpoints(rows: Sequence[dict], most: int = 3) -> list[str]:
    """Checkpoints selected before the user picks: the bundled ones of the richest label
    set (mIoUs of different label sets do not compare; a binary road model stays in the
    picker), most accurate first (the pretrained flagship leads, the from-scratch pair
    follows for comparison), else the newest checkpoint of each architecture (``best``
    before ``last``), at most ``most``, and at least two when two exist."""
    bundled = [row for row in rows if row["bundled"]]
    if bundled:
        richest = max(row.get("num_classes") or 0 for row in bundled)
        bundled = [row for row in bundled if (row.get("num_classes") or 0) == richest]
        bundled.sort(key=lambda row: -(row.get("miou") or 0.0))
        return [row["path"] for row in bundled[:4]]
    newest = sorted(
        rows,
        key=lambda row: (row["created"] or "", Path(row["path"]).stem == "best"),
        reverse=True,
    )
    picked: list[str] = []
    models: set[str] = set()
    for row in newest:
        if row["model"] not in models and len(picked) < most:
            picked.append(row["path"])
            models.add(row["model"])
    for row in newest:
        if len(picked) >= min(2, len(rows)):
            break
        if row["path"] not in picked:
            picked.append(row["path"])
    return picked


_WARM_MODELS: weakref.WeakSet = weakref.WeakSet()


def _warm_up(checkpoint, device, precision) -> None:
    """One untimed pass of the full network on a blank image the first time a model is
    used, so the latency shown for the first photo is not the kernels' start-up cost."""
    model = checkpoint.model
    if model in _WARM_MODELS:
        return
    height, width = checkpoint.input_size
    blank = np.zeros((height, width, 3), dtype=np.uint8)
    segment_image(model, blank, checkpoint.input_size, device, precision)
    _WARM_MODELS.add(model)


def run_model(
    checkpoint,
    device,
    precision: str,
    photo: Photo,
    mode: str | None,
    level: int | None,
    cache: dict,
) -> SegmentResult:
    """Segment ``photo`` with a loaded checkpoint, remembering the result in ``cache``.

    ``cache`` is the session's bounded dict (a level switched back to shows at once).
    """
    path = Path(checkpoint.path)
    key = (str(path), path.stat().st_mtime_ns, photo.key, mode, level)
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cache[key]
    model = checkpoint.model
    kwargs = pruning_kwargs(model, mode, level) if level is not None else {}
    _warm_up(checkpoint, device, precision)
    start = time.perf_counter()
    mask = segment_image(model, photo.image, checkpoint.input_size, device, precision, **kwargs)
    inference_ms = 1000 * (time.perf_counter() - start)
    mask = _frozen(mask.astype(np.uint8))
    result = SegmentResult(mask, inference_ms, legend_entries(mask, checkpoint.label_set))
    cache[key] = result
    while len(cache) > 1 and sum(r.mask.nbytes for r in cache.values()) > MASK_CACHE_BYTES:
        cache.pop(next(iter(cache)))  # least recently used first
    return result


def render_view(photo: Photo, mask: np.ndarray, label_set, view: str, alpha: float) -> bytes:
    """What the page shows, encoded: the colour mask (PNG) or the overlay (JPEG), at
    display size.

    Encoded here rather than by ``st.image``: its default PNG compression of a 1024 px
    overlay takes longer than a small model's inference (about 370 ms against 2 ms for
    this JPEG on a loaded 2-core CPU), and it sits between a level switch and its mask.
    """
    small = resize_nearest(mask, photo.display.shape[:2])
    buffer = io.BytesIO()
    if view == "mask":
        # Flat colours: fast, lossless, small.
        Image.fromarray(colorize(small, label_set)).save(buffer, "PNG", compress_level=1)
    else:
        # 4:4:4 chroma keeps class boundaries crisp.
        Image.fromarray(overlay(photo.display, small, label_set, alpha)).save(
            buffer, "JPEG", quality=92, subsampling=0
        )
    return buffer.getvalue()


def mask_png(mask: np.ndarray, label_set) -> bytes:
    """The mask as a palette PNG: pixel values are train ids (255 = ignore), and viewers
    show the label set's colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: label_set.num_classes] = np.asarray(label_set.colors, dtype=np.uint8)
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").convert("P")
    image.putpalette(palette.ravel().tolist())
    return _png(image)


def overlay_png(photo: Photo, mask: np.ndarray, label_set, alpha: float) -> bytes:
    """The overlay at the photo's full size, as PNG bytes."""
    return _png(Image.fromarray(overlay(photo.image, mask, label_set, alpha)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def legend_html(entries: Sequence[dict]) -> str:
    """Colour swatches, class names and shares, as one line of wrapped HTML."""
    items = []
    for entry in entries:
        percent = 100 * entry["fraction"]
        share = f"{percent:.1f}%" if percent >= 0.1 else "<0.1%"
        items.append(
            '<span style="white-space:nowrap">'
            f'<span style="display:inline-block;width:0.85em;height:0.85em;'
            f"background:{html.escape(entry['color'])};border:1px solid rgba(0,0,0,.35);"
            'vertical-align:-0.1em;margin-right:0.3em"></span>'
            f"{html.escape(entry['name'])} {html.escape(share)}</span>"
        )
    return (
        '<div style="display:flex;flex-wrap:wrap;gap:0.15rem 0.8rem;font-size:0.85rem">'
        + "".join(items)
        + "</div>"
    )


def markdown_text(text: str) -> str:
    """``text`` shown literally inside Markdown (file names may contain ``*``, ``_``, ...)."""
    return "".join("\\" + c if c in "\\`*_{}[]<>()#+-.!|~" else c for c in text)


def format_params(count: float) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count / 1e3:.1f} k"
