"""Dataset formats: finding image/mask pairs on disk and decoding them to train ids.

Every format is a :class:`SegmentationDataset` subclass that lists its items once (in
``__init__``) and implements ``_load(i) -> (image uint8 HxWx3, train_ids uint8 HxW)``.
The base class adds augmentation, tensor conversion and broken-file handling.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segdemo.data import synthetic
from segdemo.data.cache import cached_mask
from segdemo.data.transforms import build_transform, resolve_normalization, to_tensors
from segdemo.images import resize_mask
from segdemo.labels import LabelSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Every ``VAL_EVERY``-th file (by sorted name, 1-based: the 5th, 10th, ...) is the val split
#: of formats without an official one (KITTI, a ``folder`` without train/ and val/).
VAL_EVERY = 5
#: Nearest-colour tolerance for JPEG-blurred pair labels (RGB distance; 0..441).
PAIRS_MAX_COLOR_DISTANCE = 100.0
#: Tolerance for lossless colour masks in a ``folder`` dataset.
FOLDER_MAX_COLOR_DISTANCE = 60.0


def _numeric_key(path: Path) -> tuple:
    """Natural sort: ``1.jpg, 2.jpg, ..., 10.jpg``."""
    parts = re.split(r"(\d+)", path.name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=_numeric_key,
    )


def _name_some(paths: Sequence[Path | str], root: Path, limit: int = 5) -> str:
    names = []
    for p in list(paths)[:limit]:
        try:
            names.append(str(Path(p).relative_to(root)))
        except ValueError:
            names.append(str(p))
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(names) + more


def _open_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _deterministic_split(items: list, split: str, val_every: int) -> list:
    if split == "val":
        return [it for k, it in enumerate(items) if k % val_every == val_every - 1]
    return [it for k, it in enumerate(items) if k % val_every != val_every - 1]


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: items are ``{"image": (3,H,W) float32, "mask": (H,W) int64, "path": str}``.

    Attributes:
        label_set: the :class:`LabelSet` masks are expressed in.
        format: the format name (``"pairs"``, ``"cityscapes"``, ...).
        root: the dataset folder (or ``"synthetic"``).
        split: ``"train"`` or ``"val"``.
        problems: human-readable notes on skipped or broken files, size mismatches and
            far colours, filled while listing and while reading.
        pixel_aspect: width over height of the scene under one pixel of its photos: 1
            for a camera's frames, 2 for the pairs' 2:1 frames squeezed square
            (``segdemo.geometry``).
    """

    format = "base"
    pixel_aspect = 1.0

    def __init__(
        self,
        root: str | Path,
        split: str,
        label_set: LabelSet,
        size: Sequence[int] | None,
        augment: bool,
        normalization: dict | None,
        on_error: str = "skip",
        cache: bool = True,
        scale_range: Sequence[float] | None = None,
        photometric: str = "jitter",
        geometry_augment: str = "crop",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if size is not None:
            size = tuple(int(s) for s in size)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"size must be (height, width) with positive ints, got {size!r}")
        self.root = root if root == "synthetic" else Path(root)
        self.split = split
        self.label_set = label_set
        self.size = size
        self.augment = augment
        self.normalization = resolve_normalization(normalization)
        self.on_error = on_error
        self.cache = cache
        self._transform = build_transform(
            size, augment, scale_range, photometric, label_set.ignore_index, geometry_augment
        )
        self._transform_seed: int | None = None
        self._problems: list[str] = []
        self._broken: dict[str, str] = {}
        self._far_pixels = 0
        self._far_items = 0
        self._mask_pixels = 0
        self._seen_once: set[str] = set()
        self._max_color_distance: float | None = None

    # -- to implement ------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def item_path(self, index: int) -> str:
        """The file item ``index`` is read from (for messages and the ``"path"`` field)."""
        raise NotImplementedError

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fingerprint_parts(self) -> list[str]:
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------------
    @property
    def problems(self) -> list[str]:
        notes = list(self._problems)
        for path, error in self._broken.items():
            notes.append(f"skipped unreadable file {path}: {error}")
        if self._far_pixels:
            notes.append(
                f"{self._far_pixels} mask pixels in {self._far_items} of the items read so far "
                f"({100 * self._far_pixels / max(self._mask_pixels, 1):.2g}% of their pixels) were "
                f"farther than {self._max_color_distance:g} from every palette colour: "
                "mapped to ignore"
            )
        return notes

    def note_once(self, key: str, message: str) -> None:
        """Record ``message`` in :attr:`problems` and the log the first time ``key`` occurs."""
        if key not in self._seen_once:
            self._seen_once.add(key)
            self._problems.append(message)
            log.warning("%s", message)

    def fingerprint(self) -> str:
        """A short hash of what the dataset reads (files, sizes, mtimes; or generator params)."""
        digest = hashlib.sha1()
        for part in [self.format, self.split, self.label_set.name, *self._fingerprint_parts()]:
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:12]

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` at native size, without augmentation.

        Returns:
            ``(image, train_ids)``: ``(H, W, 3)`` uint8 and ``(H, W)`` uint8 (255 = ignore).

        Raises:
            ValueError: the file is unreadable (truncated, corrupt); the message names it.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        try:
            image, mask = self._load(index)
        except (OSError, ValueError, SyntaxError) as exc:
            path = self.item_path(index)
            raise ValueError(f"cannot read {path}: {exc}") from exc
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            image, mask = self.read_raw(index)
        except ValueError as exc:
            if self.on_error == "raise":
                raise
            self.mark_unreadable(index, exc)
            return None  # dropped by segdemo.data.collate_fn
        if self._transform is not None:
            self._seed_transform()
            out = self._transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t, mask_t = to_tensors(image, mask, **self.normalization)
        return {"image": image_t, "mask": mask_t, "path": self.item_path(index % len(self))}

    def mark_unreadable(self, index: int, exc: Exception) -> None:
        """Note that item ``index`` could not be read (listed once in :attr:`problems`)."""
        path = self.item_path(index % len(self))
        if path not in self._broken:
            self._broken[path] = str(exc.__cause__ or exc)
            log.warning("skipping %s", exc)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"label_set={self.label_set.name!r}, items={len(self)}, size={self.size})"
        )

    def _seed_transform(self) -> None:
        """Seed albumentations from torch, so augmentation follows ``torch.manual_seed``.

        albumentations seeds itself from OS entropy when built, and forked DataLoader workers
        would all inherit that one stream. ``torch.initial_seed()`` is the global seed in the
        main process and ``base_seed + worker_id`` in a worker (new for every epoch's
        iterator), so every worker and every epoch gets its own reproducible stream.
        """
        seed = torch.initial_seed()
        if seed != self._transform_seed:
            self._transform.set_random_seed(seed % 2**32)
            self._transform_seed = seed

    # -- helpers for subclasses ----------------------------------------------------------------
    def _count_far(self, n_far: int, n_pixels: int) -> None:
        self._mask_pixels += n_pixels
        if n_far:
            self._far_pixels += n_far
            self._far_items += 1

    def _fit_mask(self, mask: np.ndarray, image: np.ndarray, mask_path: Path, image_path: Path):
        """Resize a mask that differs in size from its image (``images.resize_mask``,
        nearest neighbour), noting it once."""
        if mask.shape[:2] == image.shape[:2]:
            return mask
        mh, mw = mask.shape[:2]
        ih, iw = image.shape[:2]
        self.note_once(
            "size-mismatch",
            f"some masks differ in size from their images (first: {self._rel(mask_path)} is "
            f"{mw}x{mh} but {self._rel(image_path)} is {iw}x{ih}); they are resized to the "
            "image with nearest neighbour",
        )
        return resize_mask(mask, (ih, iw))

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except (ValueError, TypeError):
            return str(path)

    def _stat_parts(self, paths: Sequence[Path]) -> list[str]:
        parts = []
        for p in paths:
            try:
                st = p.stat()
                parts.append(f"{self._rel(p)}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{self._rel(p)}:missing")
        return parts


# --- pairs --------------------------------------------------------------------------------------


class PairsDataset(SegmentationDataset):
    """Kaggle ``cityscapes-image-pairs``: ``{train,val}/<n>.jpg``, photo left, colour label right.

    Labels are mapped by nearest official Cityscapes colour (so JPEG-blurred edges still
    map); pixels farther than ``max_color_distance`` become ignore and are counted.
    """

    format = "pairs"
    pixel_aspect = 2.0  # 2048x1024 frames squeezed to 256x256

    def __init__(self, root, split, label_set, size, augment, normalization, *,
                 max_color_distance: float = PAIRS_MAX_COLOR_DISTANCE, **kw):  # fmt: skip
        super().__init__(root, split, label_set, size, augment, normalization, **kw)
        self.data_root = pairs_data_root(Path(root))
        folder = self.data_root / split
        if not folder.is_dir():
            raise ValueError(f"{folder} does not exist: a pairs dataset needs {split}/*.jpg")
        self.files = _list_images(folder)
        if not self.files:
            raise ValueError(f"{folder} holds no images: a pairs dataset needs {split}/*.jpg")
        self._max_color_distance = max_color_distance

    def __len__(self) -> int:
        return len(self.files)

    def item_path(self, index: int) -> str:
        return str(self.files[index])

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.files[index]
        pair = _open_rgb(path)
        h, w = pair.shape[:2]
        if w % 2:
            raise ValueError(f"a pair image must be photo|label side by side, but it is {w}x{h}")
        if w != 2 * h:
            self.note_once(
                "pair-aspect",
                f"some pair images are not twice as wide as tall (first: {self._rel(path)} is "
                f"{w}x{h}); they are still split into left photo and right label halves",
            )
        image, color = pair[:, : w // 2], pair[:, w // 2 :]
        variant = f"pairs|{self.label_set.name}|{hash_label_set(self.label_set)}|{self._max_color_distance}"
        mask, n_far = cached_mask(
            path,
            variant,
            lambda: self.label_set.from_colors(color, self._max_color_distance),
            enabled=self.cache,
        )
        self._count_far(n_far, mask.size)
        return np.ascontiguousarray(image), mask

    def _fingerprint_parts(self) -> list[str]:
        return self._stat_parts(self.files)


def pairs_data_root(root: Path) -> Path:
    """``root`` itself, or its ``cityscapes_data/`` child (the Kaggle archive's layout)."""
    nested = root / "cityscapes_data"
    if not any((root / s).is_dir() for s in SPLITS) and nested.is_dir():
        return nested
    return root


def hash_label_set(label_set: LabelSet) -> str:
    return hashlib.sha1(repr(label_set.to_dict()).encode()).hexdigest()[:10]


# --- cityscapes ---------------------------------------------------------------------------------

_CS_IMAGE_SUFFIX = "_leftImg8bit.png"
_CS_LABEL_SUFFIX = "_gtFine_labelIds.png"


class PairedFilesDataset(SegmentationDataset):
    """An image file and a mask file per item: subclasses fill ``self.images`` and
    ``self.masks`` (paired lists of paths) in ``__init__`` and read a pair in ``_load``."""

    images: list[Path]
    masks: list[Path]

    def __len__(self) -> int:
        return len(self.images)

    def item_path(self, index: int) -> str:
        return str(self.images[index])

    def _fingerprint_parts(self) -> list[str]:
        return self._stat_parts(self.images + self.masks)


class LabelIdDataset(PairedFilesDataset):
    """Masks are label-id PNGs (official Cityscapes ids), mapped to the label set."""

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = _open_rgb(self.images[index])
        label_path = self.masks[index]
        with Image.open(label_path) as im:
            ids = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L"))
        mask = self.label_set.from_label_ids(ids)
        return image, self._fit_mask(mask, image, label_path, self.images[index])


class CityscapesDataset(LabelIdDataset):
    """Official Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (city folders optional)."""

    format = "cityscapes"

    def __init__(self, root, split, label_set, size, augment, normalization, **kw):
        super().__init__(root, split, label_set, size, augment, normalization, **kw)
        root = Path(root)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise ValueError(f"{folder} does not exist (cityscapes layout, split {split!r})")
        images = {
            str(p.relative_to(image_dir))[: -len(_CS_IMAGE_SUFFIX)]: p
            for p in image_dir.rglob(f"*{_CS_IMAGE_SUFFIX}")
        }
        labels = {
            str(p.relative_to(label_dir))[: -len(_CS_LABEL_SUFFIX)]: p
            for p in label_dir.rglob(f"*{_CS_LABEL_SUFFIX}")
        }
        if not images and not labels:
            raise ValueError(
                f"{image_dir} holds no *{_CS_IMAGE_SUFFIX} files and {label_dir} no "
                f"*{_CS_LABEL_SUFFIX} files"
            )
        _check_pairing(images, labels, image_dir, label_dir)
        keys = sorted(images)
        self.images = [images[k] for k in keys]
        self.masks = [labels[k] for k in keys]


def _check_pairing(images: dict, labels: dict, image_dir: Path, label_dir: Path) -> None:
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label:
        raise ValueError(
            f"{len(no_label)} images in {image_dir} have no mask in {label_dir}: "
            f"{_name_some([images[k] for k in no_label], image_dir)}"
        )
    if no_image:
        raise ValueError(
            f"{len(no_image)} masks in {label_dir} have no image in {image_dir}: "
            f"{_name_some([labels[k] for k in no_image], label_dir)}"
        )


# --- kitti --------------------------------------------------------------------------------------


class KittiDataset(LabelIdDataset):
    """KITTI semantics: ``training/image_2/*.png`` + ``training/semantic/*.png`` (label ids).

    KITTI has no official val split: every 5th file by sorted name (the 5th, 10th, ...)
    is val, the rest train.
    """

    format = "kitti"

    def __init__(self, root, split, label_set, size, augment, normalization, *,
                 val_every: int = VAL_EVERY, **kw):  # fmt: skip
        super().__init__(root, split, label_set, size, augment, normalization, **kw)
        base = kitti_base(Path(root))
        image_dir, label_dir = base / "image_2", base / "semantic"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise ValueError(
                    f"{folder} does not exist (kitti layout: training/image_2, training/semantic)"
                )
        images = {p.stem: p for p in _list_images(image_dir)}
        labels = {p.stem: p for p in _list_images(label_dir)}
        if not images and not labels:
            raise ValueError(f"{image_dir} and {label_dir} hold no images")
        _check_pairing(images, labels, image_dir, label_dir)
        keys = _deterministic_split(sorted(images), split, val_every)
        self.images = [images[k] for k in keys]
        self.masks = [labels[k] for k in keys]


def kitti_base(root: Path) -> Path:
    """The folder holding ``image_2/`` and ``semantic/``: ``root/training`` or ``root``."""
    return root / "training" if (root / "training").is_dir() else root


# --- folder -------------------------------------------------------------------------------------


class FolderDataset(PairedFilesDataset):
    """``images/`` + ``masks/`` with matching stems (optionally under ``train/`` and ``val/``).

    A mask is read as train ids when it is single-channel (L, P, I) and by nearest colour
    in the label set's palette when it is RGB(A). Without ``train/`` and ``val/`` folders,
    every 5th file by sorted name is val.
    """

    format = "folder"

    def __init__(self, root, split, label_set, size, augment, normalization, *,
                 val_every: int = VAL_EVERY,
                 max_color_distance: float = FOLDER_MAX_COLOR_DISTANCE, **kw):  # fmt: skip
        super().__init__(root, split, label_set, size, augment, normalization, **kw)
        root = Path(root)
        split_dirs = any((root / s / "images").is_dir() for s in SPLITS)
        base = root / split if split_dirs else root
        image_dir, mask_dir = base / "images", base / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise ValueError(f"{folder} does not exist (folder layout: images/ and masks/)")
        images = {p.stem: p for p in _list_images(image_dir)}
        masks = {p.stem: p for p in _list_images(mask_dir)}
        if not images and not masks:
            raise ValueError(f"{image_dir} and {mask_dir} hold no images")
        _check_pairing(images, masks, image_dir, mask_dir)
        keys = sorted(images, key=lambda k: _numeric_key(Path(k)))
        if not split_dirs:
            keys = _deterministic_split(keys, split, val_every)
        self.images = [images[k] for k in keys]
        self.masks = [masks[k] for k in keys]
        self._max_color_distance = max_color_distance

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = _open_rgb(self.images[index])
        mask_path = self.masks[index]
        with Image.open(mask_path) as im:
            if im.mode in ("RGB", "RGBA"):
                color = np.asarray(im.convert("RGB"))
                mode = "color"
            else:
                ids = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L"))
                mode = "ids"
        if mode == "color":
            variant = f"folder|{self.label_set.name}|{hash_label_set(self.label_set)}|{self._max_color_distance}"
            mask, n_far = cached_mask(
                mask_path,
                variant,
                lambda: self.label_set.from_colors(color, self._max_color_distance),
                enabled=self.cache,
            )
            self._count_far(n_far, mask.size)
        else:
            ids = ids.astype(np.int64)
            valid = (ids < self.label_set.num_classes) | (ids == self.label_set.ignore_index)
            valid &= ids >= 0
            if not valid.all():
                self.note_once(
                    "bad-train-ids",
                    f"some train-id masks hold values outside 0..{self.label_set.num_classes - 1} "
                    f"and {self.label_set.ignore_index} (first: {self._rel(mask_path)}: "
                    f"{sorted(set(np.unique(ids[~valid]).tolist()))[:5]}); mapped to ignore",
                )
            mask = np.where(valid, ids, self.label_set.ignore_index).astype(np.uint8)
        return image, self._fit_mask(mask, image, mask_path, self.images[index])


# --- synthetic ----------------------------------------------------------------------------------


class SyntheticDataset(SegmentationDataset):
    """The built-in procedural street scenes (see :mod:`segdemo.data.synthetic`).

    Options: ``length`` (default 512 train / 64 val), ``seed`` (default 0),
    ``native_size`` (default (128, 256)). With ``size`` and no augmentation, scenes are
    drawn directly at ``size``; ``read_raw`` always draws at ``native_size``.
    """

    format = "synthetic"

    def __init__(self, root, split, label_set, size, augment, normalization, *,
                 length: int | None = None, seed: int = synthetic.DEFAULT_SEED,
                 native_size: Sequence[int] = synthetic.DEFAULT_SIZE, **kw):  # fmt: skip
        super().__init__("synthetic", split, label_set, size, augment, normalization, **kw)
        self.length = int(synthetic.DEFAULT_LENGTHS[split] if length is None else length)
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        self.seed = int(seed)
        self.native_size = tuple(int(s) for s in native_size)
        if size is not None and not augment:
            self._transform = None  # drawn at ``size`` directly: no resize blur

    def __len__(self) -> int:
        return self.length

    def item_path(self, index: int) -> str:
        return f"synthetic://{self.split}/{index}?seed={self.seed}"

    def render(self, index: int, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        rng = synthetic.scene_rng(self.seed, self.split, index)
        image, label_ids = synthetic.render_scene(rng, int(size[0]), int(size[1]))
        return image, self.label_set.from_label_ids(label_ids)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.render(index, self.native_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.size is not None and not self.augment:
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} items")
            index %= len(self)
            image, mask = self.render(index, self.size)
            image_t, mask_t = to_tensors(image, mask, **self.normalization)
            return {"image": image_t, "mask": mask_t, "path": self.item_path(index)}
        return super().__getitem__(index)

    def _fingerprint_parts(self) -> list[str]:
        return [f"length={self.length}", f"seed={self.seed}", f"native={self.native_size}",
                f"v{synthetic.GENERATOR_VERSION}"]  # fmt: skip


FORMATS: dict[str, type[SegmentationDataset]] = {
    cls.format: cls
    for cls in (PairsDataset, CityscapesDataset, KittiDataset, FolderDataset, SyntheticDataset)
}


def not_a_dataset_folder(root: str | Path) -> ValueError:
    """The refusal of a dataset argument that is not a folder: missing, or a file."""
    if Path(root).exists():
        return ValueError(f"{root} is a file, not a dataset folder")
    return ValueError(f"dataset folder {root} does not exist")


def detect_format(root: str | Path) -> str:
    """Guess the format of ``root`` from its folder layout.

    Raises:
        ValueError: the folder is missing, empty or matches no known layout.
    """
    if str(root) == "synthetic":
        return "synthetic"
    root = Path(root)
    if not root.is_dir():
        raise not_a_dataset_folder(root)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    base = kitti_base(root)
    if (base / "image_2").is_dir() and (base / "semantic").is_dir():
        return "kitti"
    if (root / "images").is_dir() or any((root / s / "images").is_dir() for s in SPLITS):
        return "folder"
    data_root = pairs_data_root(root)
    for split in SPLITS:
        folder = data_root / split
        if folder.is_dir() and any(p.suffix.lower() in (".jpg", ".jpeg") for p in folder.iterdir()):
            return "pairs"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    found = f"it holds {_name_some(entries, root)}" if entries else "it is empty"
    raise ValueError(
        f"cannot tell the dataset format of {root}: {found}. Expected one of: "
        "pairs (train/*.jpg, val/*.jpg), cityscapes (leftImg8bit/ + gtFine/), "
        "kitti (training/image_2 + training/semantic), folder (images/ + masks/)"
    )
