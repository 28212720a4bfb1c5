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
