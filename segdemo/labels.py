"""Label sets: class names, colours and the mappings from Cityscapes label ids and colours.

Cityscapes annotations come in two encodings that segdemo reads:

- official *label ids* (0..33, ``*_gtFine_labelIds.png``, KITTI ``semantic/``), and
- *colours* (the Kaggle image pairs, colour masks), which are mapped to the nearest colour
  among **all** official label colours and then to label ids.

A :class:`LabelSet` turns label ids into its own *train ids* (``0..num_classes-1``, plus
``ignore_index`` for void and for classes it does not train on).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segdemo.files import atomic_writer

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label table (``cityscapesscripts.helpers.labels``)."""

    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


# fmt: off
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled",             0, 255, "void",         (0, 0, 0)),
    CityscapesLabel("ego vehicle",           1, 255, "void",         (0, 0, 0)),
    CityscapesLabel("rectification border",  2, 255, "void",         (0, 0, 0)),
    CityscapesLabel("out of roi",            3, 255, "void",         (0, 0, 0)),
    CityscapesLabel("static",                4, 255, "void",         (0, 0, 0)),
    CityscapesLabel("dynamic",               5, 255, "void",         (111, 74, 0)),
    CityscapesLabel("ground",                6, 255, "void",         (81, 0, 81)),
    CityscapesLabel("road",                  7,   0, "flat",         (128, 64, 128)),
    CityscapesLabel("sidewalk",              8,   1, "flat",         (244, 35, 232)),
    CityscapesLabel("parking",               9, 255, "flat",         (250, 170, 160)),
    CityscapesLabel("rail track",           10, 255, "flat",         (230, 150, 140)),
    CityscapesLabel("building",             11,   2, "construction", (70, 70, 70)),
    CityscapesLabel("wall",                 12,   3, "construction", (102, 102, 156)),
    CityscapesLabel("fence",                13,   4, "construction", (190, 153, 153)),
    CityscapesLabel("guard rail",           14, 255, "construction", (180, 165, 180)),
    CityscapesLabel("bridge",               15, 255, "construction", (150, 100, 100)),
    CityscapesLabel("tunnel",               16, 255, "construction", (150, 120, 90)),
    CityscapesLabel("pole",                 17,   5, "object",       (153, 153, 153)),
    CityscapesLabel("polegroup",            18, 255, "object",       (153, 153, 153)),
    CityscapesLabel("traffic light",        19,   6, "object",       (250, 170, 30)),
    CityscapesLabel("traffic sign",         20,   7, "object",       (220, 220, 0)),
    CityscapesLabel("vegetation",           21,   8, "nature",       (107, 142, 35)),
    CityscapesLabel("terrain",              22,   9, "nature",       (152, 251, 152)),
    CityscapesLabel("sky",                  23,  10, "sky",          (70, 130, 180)),
    CityscapesLabel("person",               24,  11, "human",        (220, 20, 60)),
    CityscapesLabel("rider",                25,  12, "human",        (255, 0, 0)),
    CityscapesLabel("car",                  26,  13, "vehicle",      (0, 0, 142)),
    CityscapesLabel("truck",                27,  14, "vehicle",      (0, 0, 70)),
    CityscapesLabel("bus",                  28,  15, "vehicle",      (0, 60, 100)),
    CityscapesLabel("caravan",              29, 255, "vehicle",      (0, 0, 90)),
    CityscapesLabel("trailer",              30, 255, "vehicle",      (0, 0, 110)),
    CityscapesLabel("train",                31,  16, "vehicle",      (0, 80, 100)),
    CityscapesLabel("motorcycle",           32,  17, "vehicle",      (0, 0, 230)),
    CityscapesLabel("bicycle",              33,  18, "vehicle",      (119, 11, 32)),
    CityscapesLabel("license plate",        -1,  -1, "vehicle",      (0, 0, 142)),
)
# fmt: on

#: Official label ids 0..33 (license plate, id -1, never occurs in label-id images).
NUM_LABEL_IDS = 34


def _cityscapes19_train_ids() -> tuple[int, ...]:
    return tuple(label.train_id for label in CITYSCAPES_LABELS if label.id >= 0)


def _road_train_ids() -> tuple[int, ...]:
    # Void labels (category "void": unlabeled, ego vehicle, border, out of roi, static,
    # dynamic, ground) are ignored; every other annotated class is "not road".
    mapping = []
    for label in CITYSCAPES_LABELS:
        if label.id < 0:
            continue
        if label.category == "void":
            mapping.append(IGNORE_INDEX)
        else:
            mapping.append(1 if label.name == "road" else 0)
    return tuple(mapping)


@dataclass(frozen=True)
class LabelSet:
    """The classes a model predicts, and how annotations map onto them.

    Attributes:
        name: registry name, e.g. ``"cityscapes19"``.
        names: class names indexed by train id.
        colors: RGB colour per train id (used by :meth:`colorize` and :meth:`from_colors`).
        ignore_index: the train id of void / unused pixels (ignored by losses and metrics).
        label_id_to_train_id: train id for each official Cityscapes label id 0..33.
    """

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    label_id_to_train_id: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(
                f"label set {self.name!r} has {len(self.names)} names but {len(self.colors)} colours"
            )
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < len(self.names):
            raise ValueError(
                f"label set {self.name!r}: ignore_index {self.ignore_index} must be in "
                f"{len(self.names)}..255"
            )
        if self.label_id_to_train_id and len(self.label_id_to_train_id) != NUM_LABEL_IDS:
            raise ValueError(
                f"label set {self.name!r}: label_id_to_train_id needs {NUM_LABEL_IDS} entries, "
                f"got {len(self.label_id_to_train_id)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    # -- label ids -------------------------------------------------------------------------
    @functools.cached_property
    def _label_id_lut(self) -> np.ndarray:
        if not self.label_id_to_train_id:
            raise ValueError(f"label set {self.name!r} has no mapping from Cityscapes label ids")
        lut = np.full(256, self.ignore_index, dtype=np.uint8)
        for label_id, train_id in enumerate(self.label_id_to_train_id):
            lut[label_id] = train_id if 0 <= train_id < self.num_classes else self.ignore_index
        return lut

    def from_label_ids(self, ids: np.ndarray) -> np.ndarray:
        """Map official Cityscapes label ids to train ids; unknown ids become ``ignore_index``.

        Shape: any integer array -> same shape, uint8.
        """
        ids = np.asarray(ids)
        lut = self._label_id_lut
        if ids.dtype == np.uint8:
            return lut[ids]
        valid = (ids >= 0) & (ids < 256)
        return np.where(valid, lut[np.clip(ids, 0, 255).astype(np.intp)], self.ignore_index).astype(
            np.uint8
        )

    # -- colours ---------------------------------------------------------------------------
    @functools.cached_property
    def _palette(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique palette colours (K, 3) and the train id of each (K,).

        The label set's own colours come first, then every official Cityscapes colour (mapped
        through its label id), so ties go to the train class: pole beats polegroup, car beats
        license plate, and black resolves to "unlabeled" (ignore).
        """
        entries: dict[tuple[int, int, int], int] = {}
        for train_id, color in enumerate(self.colors):
            entries.setdefault(tuple(int(c) for c in color), train_id)
        if self.label_id_to_train_id:
            lut = self._label_id_lut
            for label in CITYSCAPES_LABELS:
                if label.id >= 0:
                    entries.setdefault(label.color, int(lut[label.id]))
        else:
            entries.setdefault((0, 0, 0), self.ignore_index)
        colors = np.array(list(entries.keys()), dtype=np.uint8)
        train_ids = np.array(list(entries.values()), dtype=np.uint8)
        return colors, train_ids

    def from_colors(
        self, rgb: np.ndarray, max_distance: float | None = None
    ) -> tuple[np.ndarray, int]:
        """Map a colour-coded mask to train ids by nearest palette colour.

        Args:
            rgb: ``(H, W, 3)`` uint8 colour mask.
            max_distance: pixels whose Euclidean RGB distance to the nearest palette colour
                exceeds this become ``ignore_index``; None accepts every pixel.

        Returns:
            ``(train_ids, n_far)``: ``(H, W)`` uint8 train ids and the number of pixels that
            were farther than ``max_distance`` from every palette colour.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise ValueError(f"from_colors expects an HxWx3 colour mask, got shape {rgb.shape}")
        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        colors, train_ids = self._palette
        lut = nearest_color_lut(colors)
        key = (
            (rgb[..., 0].astype(np.uint32) << 16)
            | (rgb[..., 1].astype(np.uint32) << 8)
            | rgb[..., 2]
        )
        nearest = lut[key]
        out = train_ids[nearest]
        n_far = 0
        if max_distance is not None:
            diff = rgb.astype(np.int32) - colors[nearest].astype(np.int32)
            far = np.einsum("...c,...c->...", diff, diff) > max_distance * max_distance
            n_far = int(far.sum())
            if n_far:
                out[far] = self.ignore_index
        return out, n_far

    def colorize(self, train_ids: np.ndarray) -> np.ndarray:
        """Colour a train-id mask with the label set's colours; ignore and unknown ids -> black.

        Shape: ``(H, W)`` -> ``(H, W, 3)`` uint8.
        """
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.array(self.colors, dtype=np.uint8)
        ids = np.asarray(train_ids)
        if ids.dtype != np.uint8:
            ids = np.where((ids >= 0) & (ids < 256), ids, self.ignore_index).astype(np.uint8)
        return palette[ids]

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, stored in checkpoint metadata."""
        return {
            "name": self.name,
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
            "label_id_to_train_id": list(self.label_id_to_train_id),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSet:
        """Rebuild a label set written by :meth:`to_dict`."""
        try:
            return cls(
                name=str(d["name"]),
                names=tuple(str(n) for n in d["names"]),
                colors=tuple(tuple(int(c) for c in color) for color in d["colors"]),
                ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
                label_id_to_train_id=tuple(int(t) for t in d.get("label_id_to_train_id", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a label-set dict (needs name, names, colors): {exc}") from exc


# --- nearest-colour lookup table -------------------------------------------------------------


def cache_dir() -> Path:
    """Root of segdemo's on-disk cache: ``$SEGDEMO_CACHE`` or ``~/.cache/segdemo``."""
    env = os.environ.get("SEGDEMO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "segdemo"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy``, never half-written (``files.atomic_writer``)."""
    with atomic_writer(path) as f:
        np.save(f, array, allow_pickle=False)


def _build_lut(colors: np.ndarray) -> np.ndarray:
    """Index of the nearest colour for every 24-bit RGB value: ``(256**3,)`` uint8.

    Squared distance is separable per channel, so one red slice at a time costs a
    (256, 256, K) add and an argmin (about 1 s in total for the Cityscapes palette).
    """
    levels = np.arange(256, dtype=np.int32)[:, None]
    per_channel = [(levels - colors[:, c].astype(np.int32)[None, :]) ** 2 for c in range(3)]
    dr, dg, db = per_channel
    gb = dg[:, None, :] + db[None, :, :]  # (256, 256, K)
    lut = np.empty((256, 256 * 256), dtype=np.uint8)
    for r in range(256):
        lut[r] = np.argmin(gb + dr[r], axis=-1).reshape(-1)
    return lut.reshape(-1)


_LUTS: dict[bytes, np.ndarray] = {}


def nearest_color_lut(colors: np.ndarray) -> np.ndarray:
    """The RGB -> nearest-palette-index table for ``colors`` (K, 3), built once.

    Kept in memory and on disk under ``cache_dir()/lut`` (16 MiB per palette); a missing or
    corrupt file is rebuilt.
    """
    colors = np.ascontiguousarray(colors, dtype=np.uint8)
    if len(colors) > 255:
        raise ValueError(f"a palette may hold at most 255 colours, got {len(colors)}")
    key = colors.tobytes()
    lut = _LUTS.get(key)
    if lut is not None:
        return lut
    digest = hashlib.sha1(key).hexdigest()[:16]
    path = cache_dir() / "lut" / f"rgb_{digest}.npy"
    try:
        lut = np.load(path, allow_pickle=False)
        if lut.shape != (256**3,) or lut.dtype != np.uint8:
            raise ValueError("wrong shape")
    except FileNotFoundError:
        lut = None
    except Exception as exc:  # corrupt cache entry: rebuild it
        log.warning("rebuilding corrupt colour lookup table %s (%s)", path, exc)
        lut = None
    if lut is None:
        lut = _build_lut(colors)
        try:
            atomic_save_npy(path, lut)
        except OSError as exc:
            log.warning("could not cache the colour lookup table at %s: %s", path, exc)
    _LUTS[key] = lut
    return lut


# --- registry -----------------------------------------------------------------------------------

CITYSCAPES19 = LabelSet(
    name="cityscapes19",
    names=tuple(label.name for label in CITYSCAPES_LABELS if 0 <= label.train_id < 255),
    colors=tuple(label.color for label in CITYSCAPES_LABELS if 0 <= label.train_id < 255),
    label_id_to_train_id=_cityscapes19_train_ids(),
)

ROAD = LabelSet(
    name="road",
    names=("not road", "road"),
    colors=((64, 64, 64), (128, 64, 128)),
    label_id_to_train_id=_road_train_ids(),
)

LABEL_SETS: dict[str, LabelSet] = {ls.name: ls for ls in (CITYSCAPES19, ROAD)}


def list_label_sets() -> list[str]:
    """Names accepted by :func:`get_label_set`."""
    return sorted(LABEL_SETS)


def get_label_set(name: str | LabelSet) -> LabelSet:
    """The registered label set called ``name`` (a :class:`LabelSet` is passed through)."""
    if isinstance(name, LabelSet):
        return name
    try:
        return LABEL_SETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown label set {name!r}; valid names: {', '.join(list_label_sets())}"
        ) from None
