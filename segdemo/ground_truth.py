"""A photo's ground truth from a user: reading a mask file in any encoding the datasets
use, and scoring masks against it.

The encoding is detected from the file, and named (:data:`ENCODINGS`), so that a page can
say how it read the mask:

- a single-channel image (L, P, I; a palette PNG by its indices, as segdemo writes train
  ids) holds **train ids** when every labelled value is a class of the label set, and
  official **Cityscapes label ids** (``*_gtFine_labelIds.png``, 0..33, read as the
  ``cityscapes`` dataset format reads them) when values above the classes stay within
  0..33 (or the file is named ``*labelIds*``);
- an RGB(A) image holds label colours, mapped by nearest colour as the ``folder`` and
  ``pairs`` formats map them: **Cityscapes colours** when every pixel is exactly one
  (``*_gtFine_color.png``), else **nearest label colours** (the colour halves of the image
  pairs, JPEG-compressed), with pixels far from every label colour ignored.

A mask that fits none (values beyond every id range, or mostly colours far from every
label colour, such as a photo) is refused in one sentence.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from segdemo.data.formats import FOLDER_MAX_COLOR_DISTANCE
from segdemo.images import MAX_PIXELS, ImageError, row_strips
from segdemo.labels import NUM_LABEL_IDS
from segdemo.metrics import ConfusionMatrix

ASPECT_TOLERANCE = 0.02  # a mask this close to the photo's aspect ratio is scaled to it
# The encodings a ground-truth mask is read in, as a page names them.
ENCODINGS = {
    "train_ids": "train ids",
    "label_ids": "Cityscapes label ids",
    "colors": "Cityscapes colours",
    "nearest_colors": "nearest label colours",
}
# A train-id mask may hold a few stray values (read as unlabelled); more, and it is not one.
MAX_STRAY_SHARE = 0.05
# A colour mask may hold some off-palette pixels (edges of a JPEG); more, and it is not one.
MAX_FAR_SHARE = 0.25


@dataclass(frozen=True)
class GroundTruth:
    """A mask as train ids, and the encoding it was read from (a key of ENCODINGS)."""

    mask: np.ndarray = field(repr=False)  # (H, W) uint8 train ids, ignore_index unlabelled
    encoding: str

    @property
    def description(self) -> str:
        return ENCODINGS[self.encoding]


def _from_ids(ids: np.ndarray, label_set, name: str) -> GroundTruth:
    """Train ids or Cityscapes label ids, told apart by their values (and the file name);
    converted a strip of rows at a time (no wide temporaries of a whole large mask)."""
    ignore, classes = label_set.ignore_index, label_set.num_classes
    low = top = None
    valid_count = 0
    strips = row_strips(*ids.shape[:2])
    for rows in strips:
        strip = ids[rows].astype(np.int64)
        labelled = strip[strip != ignore]
        if labelled.size:
            low = int(labelled.min()) if low is None else min(low, int(labelled.min()))
            top = int(labelled.max()) if top is None else max(top, int(labelled.max()))
        valid_count += int(((strip >= 0) & ((strip < classes) | (strip == ignore))).sum())
    low, top = low or 0, top or 0
    fits_label_ids = bool(label_set.label_id_to_train_id) and low >= 0 and top < NUM_LABEL_IDS
    named_label_ids = "labelids" in name.lower()
    mask = np.empty(ids.shape[:2], dtype=np.uint8)
    if fits_label_ids and (top >= classes or named_label_ids):
        for rows in strips:
            mask[rows] = label_set.from_label_ids(ids[rows])
        return GroundTruth(mask, "label_ids")
    if valid_count < (1 - MAX_STRAY_SHARE) * mask.size:
        ranges = f"train ids are 0..{classes - 1} and {ignore}"
        if label_set.label_id_to_train_id:
            ranges += f", Cityscapes label ids 0..{NUM_LABEL_IDS - 1}"
        raise ImageError(
            f"{name} fits no ground-truth format: its values run from {low} to {top} ({ranges})"
        )
    for rows in strips:
        strip = ids[rows].astype(np.int64)
        valid = (strip >= 0) & ((strip < classes) | (strip == ignore))
        mask[rows] = np.where(valid, strip, ignore)
    return GroundTruth(mask, "train_ids")


def _from_colours(colours: np.ndarray, label_set, name: str) -> GroundTruth:
    """Nearest label colours, a strip of rows at a time; exact Cityscapes colours when
    every pixel is one."""
    mask = np.empty(colours.shape[:2], dtype=np.uint8)
    far = inexact = 0
    for rows in row_strips(*colours.shape[:2]):
        mask[rows], strip_far = label_set.from_colors(colours[rows], FOLDER_MAX_COLOR_DISTANCE)
        far += strip_far
        if not inexact:
            inexact += label_set.from_colors(colours[rows], 0.0)[1]
    if far > MAX_FAR_SHARE * mask.size:
        raise ImageError(
            f"{name} fits no ground-truth format: {100 * far / mask.size:.0f}% of its pixels "
            "are far from every label colour (a photo rather than a mask?)"
        )
    return GroundTruth(mask, "nearest_colors" if inexact else "colors")


def read_mask(
    source: str | Path | bytes | BinaryIO,
    label_set,
    name: str | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """:func:`read_ground_truth`'s mask alone."""
    return read_ground_truth(source, label_set, name, size).mask


def read_ground_truth(
    source: str | Path | bytes | BinaryIO,
    label_set,
    name: str | None = None,
    size: tuple[int, int] | None = None,
) -> GroundTruth:
    """Decode a ground-truth mask into ``(H, W)`` uint8 train ids (``ignore_index`` where
    unlabelled), detecting its encoding (see the module's docstring).

    Args:
        source: a path, the file's bytes or a binary file.
        label_set: the classes the mask is read into.
        name: the file's name in messages.
        size: ``(H, W)`` of the photo; a mask of another size but the same aspect ratio is
            scaled to it (nearest neighbour), any other size is an error.

    Raises:
        ImageError: not an image, truncated, too large, in no known encoding, or not the
            photo's shape; one sentence naming the file.
    """
    if isinstance(source, (str, Path)):
        name = name or Path(source).name
    name = name or "the mask"
    opener = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(opener) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{name} is too large: {width}x{height} pixels")
            image.load()
            if image.mode in ("RGB", "RGBA"):
                colours = np.asarray(image.convert("RGB"))
                ids = None
            else:
                ids = np.asarray(
                    image if image.mode in ("L", "P", "I", "I;16") else image.convert("L")
                )
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image segdemo can read as a mask (PNG)") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{name} is truncated or corrupt ({e})") from e
    truth = (
        _from_colours(colours, label_set, name) if ids is None else _from_ids(ids, label_set, name)
    )
    mask = truth.mask
    if size is not None and mask.shape != tuple(size):
        mh, mw = mask.shape
        ph, pw = size
        if abs((mw / mh) / (pw / ph) - 1) > ASPECT_TOLERANCE:
            raise ImageError(f"{name} is {mw}x{mh} but the photo is {pw}x{ph}")
        mask = np.asarray(Image.fromarray(mask).resize((pw, ph), Image.Resampling.NEAREST))
    return GroundTruth(mask, truth.encoding)


def photo_scores(prediction: np.ndarray, truth: np.ndarray, label_set) -> dict:
    """mIoU and pixel accuracy of one mask against its ground truth (ignored pixels left
    out; mIoU over the classes present in the ground truth)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction is {prediction.shape} but the ground truth is {truth.shape}")
    confusion = ConfusionMatrix(label_set.num_classes, label_set.ignore_index)
    for rows in row_strips(*truth.shape[:2]):  # no int64 copy of a full-size mask
        confusion.update(
            torch.from_numpy(np.asarray(prediction[rows], dtype=np.int64))[None],
            torch.from_numpy(np.asarray(truth[rows], dtype=np.int64))[None],
        )
    return confusion.compute(list(label_set.names))
