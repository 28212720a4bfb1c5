"""Augmentation and tensor conversion (albumentations; masks always nearest-neighbour)."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from segdemo.config import GEOMETRY_AUGMENT
from segdemo.images import IMAGENET_NORMALIZATION


def resolve_normalization(normalization: dict | None) -> dict[str, tuple[float, float, float]]:
    """``None`` -> ImageNet statistics; otherwise check ``dict(mean=(3,), std=(3,))``."""
    if normalization is None:
        return dict(IMAGENET_NORMALIZATION)
    try:
        mean = tuple(float(v) for v in normalization["mean"])
        std = tuple(float(v) for v in normalization["std"])
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"normalization must be dict(mean=(r, g, b), std=(r, g, b)), got {normalization!r}"
        ) from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization needs 3 means and 3 positive stds, got {normalization!r}")
    return {"mean": mean, "std": std}


PHOTOMETRIC = ("jitter", "strong")
#: ``aspect_scale``: how much wider or narrower a training input's pixels become (4/7..2:
#: the pairs' 2:1 frames then fill an input as 3.5:1..1:1 scenes do when squeezed) and
#: how much larger or smaller its objects (0.5x..2x).
ASPECT_STRETCH = (4 / 7, 2.0)
OBJECT_SCALE = (0.5, 2.0)


def _photometric(kind: str) -> list[A.BasicTransform]:
    """Colour augmentation: ``"jitter"`` a mild colour jitter; ``"strong"`` also varies
    exposure (gamma), blurs (defocus, motion), adds sensor noise and JPEG artefacts, for
    photos from other cameras and light."""
    if kind not in PHOTOMETRIC:
        raise ValueError(f"photometric must be one of {PHOTOMETRIC}, got {kind!r}")
    if kind == "jitter":
        return [A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8)]
    return [
        A.ColorJitter(brightness=0.35, contrast=0.35, saturation=0.35, hue=0.04, p=0.8),
        A.RandomGamma(gamma_limit=(70, 150), p=0.3),
        A.OneOf(
            [A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5)), A.MotionBlur(blur_limit=5)],
            p=0.25,
        ),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.25),
        A.ImageCompression(quality_range=(35, 95), p=0.35),
    ]


def build_transform(
    size: Sequence[int] | None,
    augment: bool,
    scale_range: Sequence[float] | None = None,
    photometric: str = "jitter",
    ignore_index: int = 255,
    geometry: str = "crop",
) -> A.Compose | None:
    """The albumentations pipeline for ``(image, mask)`` pairs.

    Training (``augment=True``): random horizontal flip; then either a random crop of
    35-100% of the area (aspect ratio within 3:4..4:3 of the target's) resized to ``size``,
    or, with ``scale_range=(lo, hi)``, multi-scale training as mmsegmentation's Cityscapes
    pipeline: the frame resized to ``size``, scaled by a random factor in ``[lo, hi]``,
    padded (photo black, mask ``ignore_index``) and randomly cropped back to ``size``; or,
    with ``geometry="aspect_scale"``, robustness to the shapes and sizes of other cameras:
    the frame's width stretched by a random factor in ``ASPECT_STRETCH`` (after the pairs'
    2:1 squeeze, scenes of 1:1 to 3.5:1 in one input, as squeezing such photos gives),
    then scaled by a random factor in ``OBJECT_SCALE`` (objects 0.5x to 2x their size),
    padded and randomly cropped to ``size``; then the ``photometric`` colour augmentation
    (see ``_photometric``). Without ``size`` the
    geometric steps are skipped (items keep their native size). Evaluation: a plain resize
    to ``size``, or nothing. Masks are always resized nearest-neighbour.

    Photos follow segdemo's one resize policy (``segdemo.images.resize_interpolation``):
    pixel-area averaging when shrinking, bilinear when enlarging, so a model sees the same
    pixels in training as in evaluation, ``predict`` and the app.
    """
    if size is not None:
        height, width = (int(s) for s in size)
    if scale_range is not None:
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(
                f"scale_range must be (min, max) with 0 < min <= max, got {scale_range}"
            )
    if geometry not in GEOMETRY_AUGMENT:
        raise ValueError(f"geometry must be one of {GEOMETRY_AUGMENT}, got {geometry!r}")
    if geometry != "crop" and scale_range is not None:
        raise ValueError("scale_range and geometry='aspect_scale' both scale frames: pick one")
    resize = dict(
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST_EXACT,
        area_for_downscale="image",
    )

    def scale_pad_crop(lo: float, hi: float) -> list[A.BasicTransform]:
        """Objects scaled by lo..hi, then a training-size crop (ignored pixels where the
        scaled frame is smaller)."""
        return [
            A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0, **resize),
            A.PadIfNeeded(min_height=height, min_width=width, border_mode=cv2.BORDER_CONSTANT,
                          fill=0, fill_mask=ignore_index),
            A.RandomCrop(height, width),
        ]  # fmt: skip

    steps: list[A.BasicTransform] = []
    if augment:
        steps.append(A.HorizontalFlip(p=0.5))
        if size is not None and scale_range is not None:
            steps += [
                A.Resize(height, width, **resize),
                *scale_pad_crop(lo, hi),
            ]
        elif size is not None and geometry == "aspect_scale":
            lo, hi = OBJECT_SCALE
            steps += [
                A.Affine(
                    scale={"x": ASPECT_STRETCH, "y": (1.0, 1.0)},
                    keep_ratio=False,
                    fit_output=True,
                    interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST,  # Affine takes no _EXACT
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=ignore_index,
                    p=1.0,
                ),
                *scale_pad_crop(lo, hi),
            ]
        elif size is not None:
            aspect = width / height
            steps.append(
                A.RandomResizedCrop(
                    size=(height, width),
                    scale=(0.35, 1.0),
                    ratio=(aspect * 3 / 4, aspect * 4 / 3),
                    p=1.0,
                    **resize,
                )
            )
        steps += _photometric(photometric)
    elif size is not None:
        steps.append(A.Resize(height, width, **resize))
    return A.Compose(steps) if steps else None


def to_tensors(
    image: np.ndarray, mask: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 + ``(H, W)`` uint8 -> normalised float32 ``(3, H, W)`` + int64 ``(H, W)``."""
    scale = np.asarray(std, dtype=np.float32) * 255.0
    offset = np.asarray(mean, dtype=np.float32) * 255.0
    chw = (image.astype(np.float32) - offset) / scale
    image_t = torch.from_numpy(np.ascontiguousarray(chw.transpose(2, 0, 1)))
    mask_t = torch.from_numpy(mask.astype(np.int64))  # a copy: cached masks are read-only
    return image_t, mask_t
