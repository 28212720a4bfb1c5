"""Datasets for street-scene segmentation: five on-disk formats and a synthetic generator.

>>> ds = open_dataset("synthetic", split="train", size=(128, 256), augment=True)
>>> item = ds[0]  # {"image": (3,H,W) float32, "mask": (H,W) int64, "path": str}

Pass :func:`collate_fn` to every ``DataLoader``: it drops items whose file could not be
read (``dataset[i]`` returns None for those; see ``dataset.problems``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segdemo.data.formats import (
    FORMATS,
    CityscapesDataset,
    FolderDataset,
    KittiDataset,
    PairsDataset,
    SegmentationDataset,
    SyntheticDataset,
    detect_format,
    not_a_dataset_folder,
)
from segdemo.data.inspection import class_frequencies, format_inspection, inspect_dataset
from segdemo.labels import LabelSet, get_label_set

__all__ = [
    "FORMATS",
    "CityscapesDataset",
    "FolderDataset",
    "KittiDataset",
    "PairsDataset",
    "SegmentationDataset",
    "SyntheticDataset",
    "class_frequencies",
    "collate_fn",
    "detect_format",
    "format_inspection",
    "inspect_dataset",
    "list_formats",
    "open_dataset",
]


def list_formats() -> list[str]:
    """Format names accepted by :func:`open_dataset` (besides ``"auto"``)."""
    return list(FORMATS)


def open_dataset(
    root: str | Path,
    split: str = "train",
    fmt: str = "auto",
    label_set: str | LabelSet = "cityscapes19",
    size: Sequence[int] | None = None,
    augment: bool = False,
    normalization: dict | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Open one split of a segmentation dataset as a torch ``Dataset``.

    Args:
        root: dataset folder, or ``"synthetic"`` for the built-in generator.
        split: ``"train"`` or ``"val"``.
        fmt: ``"auto"`` (detect from the folder) or one of :func:`list_formats`.
        label_set: a registered label-set name or a :class:`LabelSet`.
        size: ``(H, W)`` every item is resized (or, with ``augment``, cropped) to; None keeps
            the native size.
        augment: training augmentation (flip, random resized crop to ``size``, colour jitter).
        normalization: ``dict(mean=(r, g, b), std=(r, g, b))`` in 0..1 units; None = ImageNet.
        **options: format options: ``length``, ``seed``, ``native_size`` (synthetic);
            ``max_color_distance`` (pairs, folder); ``val_every`` (kitti, folder);
            ``on_error`` (``"skip"`` or ``"raise"``); ``cache`` (bool, colour-mask cache);
            augmentation options of every format: ``scale_range`` (multi-scale training,
            e.g. ``(0.5, 2.0)``) and ``photometric`` (``"jitter"`` or ``"strong"``), see
            ``segdemo.data.transforms.build_transform``.

    Returns:
        a :class:`SegmentationDataset`; items are ``{"image": (3, H, W) float32,
        "mask": (H, W) int64 train ids (255 = ignore), "path": str}``.

    Raises:
        ValueError: unknown format, label set or option; empty or unrecognised folder;
            images without masks or masks without images (the message names them).
    """
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
    if fmt != "synthetic" and str(root) != "synthetic" and not Path(root).is_dir():
        raise not_a_dataset_folder(root)
    cls = FORMATS[fmt]
    try:
        return cls(root, split, get_label_set(label_set), size, augment, normalization, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ValueError(f"{fmt} datasets do not take that option: {exc}") from None
        raise


def collate_fn(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``default_collate`` after dropping None items (unreadable files).

    Returns None when every item of the batch was dropped: skip such a batch.
    """
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
