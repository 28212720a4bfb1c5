"""Reading user photos safely: any Pillow format and mode -> RGB uint8, or one clear error.

Handles EXIF orientation, 16-bit, CMYK, palette, grayscale and RGBA images, truncated
files and decompression bombs (Pillow's pixel limit), so the app and ``predict`` never
crash on what a user uploads.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segdemo.limits import PHOTO_MAX_PIXELS

# The mean and std (RGB, in 0..1) of ImageNet photos: how scratch models and most
# pretrained encoders expect a photo normalised.
IMAGENET_NORMALIZATION = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# Pillow's default limit (about 89 Mpx) warns, twice that raises; segdemo refuses both.
MAX_PIXELS = PHOTO_MAX_PIXELS
# Full-size pictures and masks are processed this many pixels at a time (row strips), so
# the wide temporaries (float32 blends, int64 counts) stay a few megabytes whatever the
# photo's size, and a request's memory is a few bytes per photo pixel.
STRIP_PIXELS = 2**20
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """A file that is not a usable photo; the message is one sentence for the user."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the real value range to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # no second copy of a photo


def load_image(source: str | Path | bytes | BinaryIO, name: str | None = None) -> np.ndarray:
    """Decode a photo into an ``(H, W, 3)`` uint8 RGB array, upright per its EXIF tag.

    Raises:
        ImageError: the path is missing or a directory, the file is not an image, is
            truncated or corrupt, or is too large.
    """
    if isinstance(source, (str, Path)):
        name = name or Path(source).name
        opener = source
        if Path(source).is_dir():
            raise ImageError(f"{name} is a directory, not an image file")
        if not Path(source).exists():
            raise ImageError(f"{source} does not exist")
    else:
        name = name or getattr(source, "name", "the upload")
        opener = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opener) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{name} is too large: {width}x{height} pixels, more than the "
                        f"{MAX_PIXELS / 1e6:.0f} megapixels segdemo accepts"
                    )
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no copy of an upright photo
                rgb = _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image segdemo can read (JPG, PNG, WebP, ...)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name} is truncated or corrupt ({e})") from e
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels")
    # Copied a strip at a time: np.array(image) goes through one more full-size copy
    # (Image.tobytes), a third of the memory of decoding a large photo.
    arr = np.empty((height, width, 3), dtype=np.uint8)  # writable, safe to hand to torch
    for rows in row_strips(height, width):
        arr[rows] = np.asarray(rgb.crop((0, rows.start, width, rows.stop)))
    return arr


def pixel_count(data: bytes) -> int | None:
    """The pixels an encoded image says it holds (from its header, nothing decoded), or
    None when the header cannot be read (``load_image`` then names the problem)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return width * height


def row_strips(height: int, width: int, pixels: int = STRIP_PIXELS) -> list[slice]:
    """Row ranges of about ``pixels`` pixels each (at least one row), covering ``height``
    rows of an image ``width`` pixels wide."""
    rows = max(1, pixels // max(1, width))
    return [slice(top, min(top + rows, height)) for top in range(0, height, rows)]


def resize_interpolation(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    """The OpenCV interpolation of segdemo's one resize policy for photos.

    Pixel-area averaging (``INTER_AREA``, antialiased) when the output is smaller than the
    input in either dimension, bilinear (``INTER_LINEAR``) otherwise: the rule of
    albumentations' ``area_for_downscale="image"``, which the training transforms use, so
    training, evaluation, ``predict`` and the app see the same pixels.
    """
    downscale = target_hw[0] < source_hw[0] or target_hw[1] < source_hw[1]
    return cv2.INTER_AREA if downscale else cv2.INTER_LINEAR


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a whole ``(H, W, 3)`` uint8 photo to ``size = (height, width)`` (no crop).

    The same function and arguments as the training pipeline's resize, so a photo reaches
    a model exactly as the training images did (see :func:`resize_interpolation`).
    """
    height, width = (int(s) for s in size)
    if image.shape[:2] == (height, width):
        return image
    interpolation = resize_interpolation(image.shape[:2], (height, width))
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask ``(H, W)`` to ``size = (height, width)`` by nearest neighbour,
    sampling at pixel centres (``INTER_NEAREST_EXACT``, as the training transforms do), so
    labels are never blended into classes that were not there."""
    height, width = (int(s) for s in size)
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
