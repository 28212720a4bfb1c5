"""A photo's ground truth from a user: reading a mask file, and scoring masks against it.

A mask is read the way the ``folder`` dataset format reads one: a single-channel image
(L, P, I; a palette PNG by its indices, as segdemo writes train ids) holds train ids (values outside the label set become ``ignore_index``), an RGB(A)
image holds label colours, mapped by nearest colour (Cityscapes ``*_gtFine_color.png`` and
the colour halves of the image pairs), with pixels far from every label colour ignored.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from segdemo.data.formats import FOLDER_MAX_COLOR_DISTANCE
from segdemo.images import MAX_PIXELS, ImageError, row_strips
from segdemo.metrics import ConfusionMatrix

ASPECT_TOLERANCE = 0.02  # a mask this close to the photo's aspect ratio is scaled to it


def read_mask(
    source: str | Path | bytes | BinaryIO,
    label_set,
    name: str | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a ground-truth mask into ``(H, W)`` uint8 train ids (``ignore_index`` where
    unlabelled).

    Args:
        source: a path, the file's bytes or a binary file.
        label_set: the classes the mask is read into.
        name: the file's name in messages.
        size: ``(H, W)`` of the photo; a mask of another size but the same aspect ratio is
            scaled to it (nearest neighbour), any other size is an error.

    Raises:
        ImageError: not an image, truncated, too large, or not the photo's shape; one
            sentence naming the file.
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
    source = colours if ids is None else ids
    mask = np.empty(source.shape[:2], dtype=np.uint8)
    for rows in row_strips(*source.shape[:2]):  # wide temporaries a strip at a time
        if ids is None:
            mask[rows], _ = label_set.from_colors(colours[rows], FOLDER_MAX_COLOR_DISTANCE)
        else:
            strip = ids[rows].astype(np.int64)
            valid = (strip >= 0) & (
                (strip < label_set.num_classes) | (strip == label_set.ignore_index)
            )
            mask[rows] = np.where(valid, strip, label_set.ignore_index)
    if size is not None and mask.shape != tuple(size):
        mh, mw = mask.shape
        ph, pw = size
        if abs((mw / mh) / (pw / ph) - 1) > ASPECT_TOLERANCE:
            raise ImageError(f"{name} is {mw}x{mh} but the photo is {pw}x{ph}")
        mask = np.asarray(Image.fromarray(mask).resize((pw, ph), Image.Resampling.NEAREST))
    return mask


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
