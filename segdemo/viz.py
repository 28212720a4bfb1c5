"""Drawing masks for people: colour masks, overlays, legends, error maps and the U-Net++
pruning diagram (numpy + Pillow; SVG as text)."""

from __future__ import annotations

import html
from collections.abc import Collection

import numpy as np
from PIL import Image, ImageDraw

from segdemo.images import STRIP_PIXELS, row_strips

# Hidden classes show as ignored pixels do in a colour mask: black.
HIDDEN_COLOR = (0, 0, 0)
# A highlighted class keeps its colours; every other pixel fades this far towards white.
HIGHLIGHT_FADE = 0.7
VIEWS = ("overlay", "mask")


def _select(mask: np.ndarray, train_ids: Collection[int]) -> np.ndarray:
    """Boolean ``(H, W)``: pixels whose train id is one of ``train_ids``."""
    return np.isin(np.asarray(mask), np.fromiter(train_ids, dtype=np.int64, count=len(train_ids)))


def colorize(mask: np.ndarray, label_set, hidden: Collection[int] = ()) -> np.ndarray:
    """Train-id mask ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in the label set's colours.

    The one colouriser is :meth:`LabelSet.colorize` (ignore and out-of-range ids -> black);
    classes in ``hidden`` are black too.
    """
    out = label_set.colorize(mask)
    if hidden:
        out[_select(mask, hidden)] = HIDDEN_COLOR
    return out


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    label_set,
    alpha: float = 0.5,
    hidden: Collection[int] = (),
) -> np.ndarray:
    """Blend the colour mask over the photo; ignored pixels and ``hidden`` classes keep
    the photo."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but mask is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )
    hidden_ids = np.fromiter(hidden, dtype=np.int64, count=len(hidden)) if hidden else None
    out = np.empty((*mask.shape[:2], 3), dtype=np.uint8)
    for rows in row_strips(*mask.shape[:2]):
        labels = np.asarray(mask[rows])
        photo = image[rows, :, :3].astype(np.float32)
        color = label_set.colorize(labels).astype(np.float32)
        valid = labels != label_set.ignore_index
        if hidden_ids is not None:
            valid &= ~np.isin(labels, hidden_ids)
        blended = np.where(valid[..., None], (1 - alpha) * photo + alpha * color, photo)
        out[rows] = blended.round().clip(0, 255).astype(np.uint8)
    return out


def highlight(rgb: np.ndarray, mask: np.ndarray, train_id: int) -> np.ndarray:
    """``rgb`` with every pixel outside class ``train_id`` faded towards white (by
    ``HIGHLIGHT_FADE``), so the class stands out in an overlay or a colour mask."""
    if rgb.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"picture is {rgb.shape[1]}x{rgb.shape[0]} but mask is {mask.shape[1]}x{mask.shape[0]}"
        )
    out = np.empty_like(rgb, dtype=np.uint8)
    for rows in row_strips(*mask.shape[:2]):
        others = (np.asarray(mask[rows]) != train_id)[..., None]
        faded = rgb[rows].astype(np.float32) * (1 - HIGHLIGHT_FADE) + 255 * HIGHLIGHT_FADE
        out[rows] = np.where(others, faded.round(), rgb[rows]).astype(np.uint8)
    return out


def render_view(
    image: np.ndarray,
    mask: np.ndarray,
    label_set,
    view: str = "overlay",
    alpha: float = 0.5,
    hidden: Collection[int] = (),
    highlighted: int | None = None,
) -> np.ndarray:
    """What a person looks at: the ``"overlay"`` or the colour ``"mask"``, with ``hidden``
    classes left out and the ``highlighted`` class (if any) standing out.

    Shape:
        ``(H, W, 3)`` photo and ``(H, W)`` train ids -> ``(H, W, 3)`` uint8.
    """
    if view == "overlay":
        rgb = overlay(image, mask, label_set, alpha, hidden)
    elif view == "mask":
        rgb = colorize(mask, label_set, hidden)
    else:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if highlighted is not None:
        rgb = highlight(rgb, mask, highlighted)
    return rgb


def class_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels per train id, ``(256,)`` int64 (a uint8 mask), counted a strip at a time so
    no int64 copy of a full-size mask is made."""
    flat = np.asarray(mask).reshape(-1)
    if flat.size and (flat.dtype.kind not in "ui" or flat.min() < 0):
        raise ValueError(f"a mask holds train ids (non-negative integers), got {flat.dtype}")
    counts = np.zeros(max(256, int(flat.max()) + 1 if flat.size else 0), dtype=np.int64)
    for start in range(0, flat.size, STRIP_PIXELS):
        chunk = np.bincount(flat[start : start + STRIP_PIXELS], minlength=counts.size)
        counts += chunk
    return counts


def legend_entries(mask: np.ndarray, label_set, min_fraction: float = 0.0) -> list[dict]:
    """Classes present in ``mask``, most frequent first: name, colour (hex) and fraction."""
    counts = class_counts(mask)
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


# --------------------------------------------------------------------- U-Net++ pruning grid


def unetpp_nodes(num_levels: int, mode: str | None = None, level: int | None = None) -> list[dict]:
    """Every node ``X^{i,j}`` of a U-Net++ with ``num_levels`` levels, and what runs at one
    inference setting (see ``segdemo.models.unetpp``).

    At level ``k`` the nodes with ``i + j <= k`` are computed and the rest are pruned; the
    heads sit on ``X^{0,1..L}``: ``mode="fast"`` uses head ``k`` alone, ``"accurate"``
    averages heads ``1..k``. ``mode=None`` is a network without deep supervision: the full
    grid and its one head on ``X^{0,L}``.

    Returns:
        One dict per node, encoder column first: ``i``, ``j``, ``computed`` (bool),
        ``head`` (``X^{0,j>=1}``: a head sits here), ``output`` (that head is used).
    """
    if num_levels < 1:
        raise ValueError(f"a U-Net++ has at least one level, got {num_levels}")
    level = num_levels if level is None or mode is None else int(level)
    if not 1 <= level <= num_levels:
        raise ValueError(f"level must be in 1..{num_levels}, got {level}")
    if mode is None:
        outputs = {num_levels}
    elif mode == "fast":
        outputs = {level}
    elif mode == "accurate":
        outputs = set(range(1, level + 1))
    else:
        raise ValueError(f"mode must be 'fast', 'accurate' or None, got {mode!r}")
    return [
        {
            "i": i,
            "j": j,
            "computed": i + j <= level,
            "head": i == 0 and j >= 1,
            "output": i == 0 and j in outputs,
        }
        for j in range(num_levels + 1)
        for i in range(num_levels + 1 - j)
    ]


# Colours of the diagram: computed nodes, pruned ones, and the heads that make the output.
GRID_COLORS = {"computed": "#2f6fb3", "pruned": "#d5d9e0", "output": "#e69f00"}

# Layout of the diagram, in SVG pixels.
_GRID_STEP, _GRID_RADIUS = 34, 12  # between neighbouring columns and rows; a node's radius
_GRID_TOP, _GRID_LEFT = 30, 16  # margins above row 0 (room for the heads) and at the sides
_IDLE_EDGE_COLOR = "#c4c9d1"  # an edge that touches a pruned node; an unused head's outline


def unetpp_grid_svg(nodes: list[dict], title: str = "") -> str:
    """The pruning diagram of :func:`unetpp_nodes` as an inline SVG (the paper's figure):
    node ``X^{i,j}`` at column ``i + 2j``, row ``i``, so the encoder runs down the left
    edge and each decoder column climbs back to a head on row 0.

    Each node carries ``data-node="i,j"`` and ``data-state="computed"|"pruned"``; each head
    ``data-head="j"`` and ``data-state="used"|"unused"``; a legend names the colours.
    """
    num_levels = max(n["i"] + n["j"] for n in nodes)
    width = _GRID_LEFT * 2 + _GRID_STEP * 2 * num_levels
    grid_height = _GRID_TOP + _GRID_STEP * num_levels + _GRID_RADIUS
    height = grid_height + 28
    by_ij = {(n["i"], n["j"]): n for n in nodes}
    parts = _grid_edges(by_ij) + _grid_nodes(by_ij) + _grid_legend(grid_height + 14)
    label = f' aria-label="{html.escape(title)}"' if title else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width * 1.25:.0f}px" role="img"{label} '
        'font-family="sans-serif">' + "".join(parts) + "</svg>"
    )


def _grid_xy(i: int, j: int) -> tuple[float, float]:
    """The centre of node ``X^{i,j}`` in the diagram: column ``i + 2j``, row ``i``."""
    return _GRID_LEFT + _GRID_STEP * (i + 2 * j), _GRID_TOP + _GRID_STEP * i


def _edge_color(*ends: dict) -> str:
    return GRID_COLORS["computed"] if all(e["computed"] for e in ends) else _IDLE_EDGE_COLOR


def _grid_edges(by_ij: dict[tuple[int, int], dict]) -> list[str]:
    """SVG lines between the nodes: the encoder's down-sampling, each decoder node's
    up-sampling from the row beneath and its nested skip along its row (dashed)."""
    parts = []
    for (i, j), node in by_ij.items():
        x, y = _grid_xy(i, j)
        if j == 0 and (i + 1, 0) in by_ij:  # encoder: down-sampling
            below = by_ij[i + 1, 0]
            x1, y1 = _grid_xy(i + 1, 0)
            parts.append(
                f'<line x1="{x}" y1="{y}" x2="{x1}" y2="{y1}" '
                f'stroke="{_edge_color(node, below)}" stroke-width="2"/>'
            )
        if j >= 1:
            below = by_ij[i + 1, j - 1]  # up-sampling from the row beneath
            x1, y1 = _grid_xy(i + 1, j - 1)
            parts.append(
                f'<line x1="{x1}" y1="{y1}" x2="{x}" y2="{y}" '
                f'stroke="{_edge_color(node, below)}" stroke-width="2"/>'
            )
            left_node = by_ij[i, j - 1]  # the nested skip along row i
            x0, _ = _grid_xy(i, j - 1)
            parts.append(
                f'<line x1="{x0}" y1="{y}" x2="{x}" y2="{y}" '
                f'stroke="{_edge_color(node, left_node)}" stroke-width="1.5" '
                'stroke-dasharray="3 2"/>'
            )
    return parts


def _grid_nodes(by_ij: dict[tuple[int, int], dict]) -> list[str]:
    """An SVG circle per node, coloured computed or pruned, and above each head a box,
    filled where the output is that head's."""
    parts = []
    for (i, j), node in by_ij.items():
        x, y = _grid_xy(i, j)
        state = "computed" if node["computed"] else "pruned"
        fill = GRID_COLORS[state]
        text = "#ffffff" if node["computed"] else "#8a919c"
        parts.append(
            f'<g data-node="{i},{j}" data-state="{state}"><title>X^{{{i},{j}}} {state}</title>'
            f'<circle cx="{x}" cy="{y}" r="{_GRID_RADIUS}" fill="{fill}"/>'
            f'<text x="{x}" y="{y + 3.5}" font-size="9.5" text-anchor="middle" '
            f'fill="{text}">{i},{j}</text></g>'
        )
        if node["head"]:
            used = "used" if node["output"] else "unused"
            color = GRID_COLORS["output"] if node["output"] else "#ffffff"
            stroke = GRID_COLORS["output"] if node["output"] else _IDLE_EDGE_COLOR
            parts.append(
                f'<rect data-head="{j}" data-state="{used}" x="{x - 5}" '
                f'y="{y - _GRID_RADIUS - 13}" width="10" height="8" rx="1.5" fill="{color}" '
                f'stroke="{stroke}"><title>head {j} {used}</title></rect>'
            )
    return parts


def _grid_legend(y: float) -> list[str]:
    """The legend's SVG swatches and names in one row, text baseline at ``y``."""
    legend = [
        ("computed", GRID_COLORS["computed"], "circle"),
        ("pruned", GRID_COLORS["pruned"], "circle"),
        ("head used", GRID_COLORS["output"], "rect"),
    ]
    parts = []
    x = _GRID_LEFT - 6
    for name, color, shape in legend:
        if shape == "circle":
            parts.append(f'<circle cx="{x + 5}" cy="{y - 4}" r="5" fill="{color}"/>')
        else:
            parts.append(f'<rect x="{x}" y="{y - 8}" width="10" height="8" fill="{color}"/>')
        parts.append(f'<text x="{x + 13}" y="{y}" font-size="11" fill="#1d2430">{name}</text>')
        x += 14 + 7 * len(name) + 10
    return parts
