"""Drawing masks for people: colour masks, overlays and legends (numpy + Pillow)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def colorize(mask: np.ndarray, label_set) -> np.ndarray:
    """Train-id mask ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in the label set's colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: label_set.num_classes] = np.asarray(label_set.colors, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, label_set, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the photo; ignored pixels keep the photo."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but mask is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )
    color = colorize(mask, label_set).astype(np.float32)
    out = image[..., :3].astype(np.float32)
    valid = (np.asarray(mask) != label_set.ignore_index)[..., None]
    blended = np.where(valid, (1 - alpha) * out + alpha * color, out)
    return blended.round().clip(0, 255).astype(np.uint8)


def legend_entries(mask: np.ndarray, label_set, min_fraction: float = 0.0) -> list[dict]:
    """Classes present in ``mask``, most frequent first: name, colour (hex) and fraction."""
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=256)
    total = counts[: label_set.num_classes].sum() or 1
    entries = []
    for train_id in np.argsort(-counts[: label_set.num_classes]):
        fraction = counts[train_id] / total
        if counts[train_id] == 0 or fraction < min_fraction:
            continue
        r, g, b = label_set.colors[train_id]
        entries.append(
            {
                "train_id": int(train_id),
                "name": label_set.names[train_id],
                "color": f"#{r:02x}{g:02x}{b:02x}",
                "fraction": float(fraction),
            }
        )
    return entries


def legend_image(entries: list[dict], width: int = 220, row: int = 20) -> np.ndarray:
    """A small RGB picture of a legend, for files written by ``predict``."""
    img = Image.new("RGB", (width, max(row * len(entries), row)), "white")
    draw = ImageDraw.Draw(img)
    for i, e in enumerate(entries):
        y = i * row
        draw.rectangle([4, y + 3, 4 + row - 6, y + row - 3], fill=e["color"], outline="black")
        draw.text((row + 6, y + 4), f"{e['name']} {100 * e['fraction']:.1f}%", fill="black")
    return np.asarray(img)


# --------------------------------------------------------------------------- error maps

# Colours of the error maps (RGB): correct, ignored, and the two-model comparison.
CORRECT_COLOR = (40, 40, 40)
IGNORED_COLOR = (255, 255, 255)
ONLY_A_COLOR = (0, 158, 115)  # bluish green: only model A is right
ONLY_B_COLOR = (230, 159, 0)  # orange: only model B is right
BOTH_COLOR = (40, 40, 40)  # both right: dark, out of the way
NEITHER_COLOR = (213, 0, 50)  # both wrong

ERROR_MAP_LEGEND = {"correct": CORRECT_COLOR, "ignored (no label)": IGNORED_COLOR}
COMPARISON_LEGEND = {
    "only A right": ONLY_A_COLOR,
    "only B right": ONLY_B_COLOR,
    "both right": BOTH_COLOR,
    "both wrong": NEITHER_COLOR,
    "ignored (no label)": IGNORED_COLOR,
}


def _check_same_shape(*masks: np.ndarray) -> None:
    shapes = {np.asarray(m).shape for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks differ in shape: {sorted(shapes)}")


def error_map(prediction: np.ndarray, truth: np.ndarray, label_set) -> np.ndarray:
    """Where one model is right and wrong, as RGB ``(H, W, 3)`` uint8.

    Correct pixels are dark grey, pixels without a label (``ignore_index``) white, and a
    wrong pixel takes the colour of the class the model *predicted* there, so the map
    shows what the mistakes were (a pole called "building" shows in building grey).
    """
    _check_same_shape(prediction, truth)
    truth = np.asarray(truth)
    out = colorize(prediction, label_set)
    out[np.asarray(prediction) == truth] = CORRECT_COLOR
    out[truth == label_set.ignore_index] = IGNORED_COLOR
    return out


def comparison_map(
    prediction_a: np.ndarray, prediction_b: np.ndarray, truth: np.ndarray, label_set
) -> np.ndarray:
    """Where only A is right, only B is right, both or neither: RGB ``(H, W, 3)`` uint8,
    in the colours of ``COMPARISON_LEGEND``."""
    _check_same_shape(prediction_a, prediction_b, truth)
    truth = np.asarray(truth)
    right_a = np.asarray(prediction_a) == truth
    right_b = np.asarray(prediction_b) == truth
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[right_a & right_b] = BOTH_COLOR
    out[right_a & ~right_b] = ONLY_A_COLOR
    out[~right_a & right_b] = ONLY_B_COLOR
    out[~right_a & ~right_b] = NEITHER_COLOR
    out[truth == label_set.ignore_index] = IGNORED_COLOR
    return out
