"""The large before/after view of the Segment page, a Streamlit component (components v2).

Its JavaScript and CSS ship in ``segdemo_app/frontend/`` and are handed to Streamlit as
text: no build step, no CDN, nothing fetched. Pictures and train-id masks travel as data
URLs in the component's data, so the browser reads the class under the pointer from the
mask itself, and highlights a class (hover or click on a legend entry) without a rerun.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

FRONTEND = Path(__file__).resolve().parent / "frontend"

_component = st.components.v2.component(
    "segdemo_before_after",
    html='<div class="sv"></div>',
    css=(FRONTEND / "before_after.css").read_text(encoding="utf-8"),
    js=(FRONTEND / "before_after.js").read_text(encoding="utf-8"),
)


@dataclass(frozen=True)
class Side:
    """One side of the view: its label, the picture, and the train ids behind it (None
    for the photo itself)."""

    label: str
    picture: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) uint8 train ids


def data_url(image: np.ndarray, fmt: str = "JPEG") -> str:
    """``image`` encoded as a ``data:`` URL: JPEG for pictures, PNG for masks (exact)."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(buffer, "JPEG", quality=90, subsampling=0)
        mime = "image/jpeg"
    else:
        Image.fromarray(image).save(buffer, "PNG", compress_level=1)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def view_data(
    left: Side, right: Side, classes: list[dict], ignore_index: int, view_key: str
) -> dict:
    """The component's data (JSON): both sides, the legend and the picture size.

    ``classes`` are legend entries (``train_id``, ``name``, ``color``, optional
    ``shares`` text); ``view_key`` changes when the photo or the sides change (a pinned
    highlight is then let go).
    """
    height, width = right.picture.shape[:2]
    for side in (left, right):
        if side.picture.shape[:2] != (height, width):
            raise ValueError("both sides of the view must be pictures of one size")

    def encode(side: Side) -> dict:
        return {
            "label": side.label,
            "src": data_url(side.picture, "JPEG"),
            "mask": None if side.mask is None else data_url(side.mask.astype(np.uint8), "PNG"),
        }

    return {
        "key": view_key,
        "width": width,
        "height": height,
        "ignore_index": ignore_index,
        "left": encode(left),
        "right": encode(right),
        "classes": [
            {
                "id": int(entry["train_id"]),
                "name": entry["name"],
                "color": entry["color"],
                "shares": entry.get("shares", ""),
            }
            for entry in classes
        ],
    }


def before_after(data: dict, key: str) -> None:
    """Mount the view (see :func:`view_data` for ``data``)."""
    _component(data=data, key=key, width="stretch", height="content")
