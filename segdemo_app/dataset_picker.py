"""The dataset chooser shared by the Compare, Train and Data pages (widgets only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from segdemo.data import list_formats

SYNTHETIC = "Built-in synthetic street scenes"
FOLDER = "A dataset folder"


@dataclass(frozen=True)
class DatasetChoice:
    data: str  # "synthetic" or the folder path as typed
    fmt: str  # "auto" or one of segdemo.data.list_formats()
    split: str | None

    @property
    def is_synthetic(self) -> bool:
        return self.data == "synthetic"

    @property
    def description(self) -> str:
        name = "synthetic scenes" if self.is_synthetic else self.data
        return f"{name} ({self.split})" if self.split else name


def dataset_picker(prefix: str, with_split: bool = True, default_split: str = "val"):
    """Synthetic or a folder (path + format), and optionally the split.

    Widget keys are ``f"{prefix}_source"``, ``_folder``, ``_format`` and ``_split``.

    Returns:
        a :class:`DatasetChoice`, or None while the folder path is still empty.
    """
    source = st.radio("Dataset", [SYNTHETIC, FOLDER], horizontal=True, key=f"{prefix}_source")
    data, fmt = "synthetic", "auto"
    if source == FOLDER:
        left, right = st.columns([3, 1])
        data = left.text_input(
            "Folder",
            key=f"{prefix}_folder",
            placeholder="/data/cityscapes",
            help="pairs (train/*.jpg), cityscapes (leftImg8bit/ + gtFine/), kitti "
            "(training/image_2 + training/semantic) or folder (images/ + masks/)",
        ).strip()
        formats = ["auto", *[f for f in list_formats() if f != "synthetic"]]
        fmt = right.selectbox("Format", formats, key=f"{prefix}_format")
        if not data:
            st.info("Type the path of a dataset folder on this machine.")
            return None
    split = None
    if with_split:
        splits = ["train", "val"]
        split = st.radio(
            "Split",
            splits,
            index=splits.index(default_split),
            horizontal=True,
            key=f"{prefix}_split",
        )
    return DatasetChoice(data, fmt, split)


def folder_stamp(data: str) -> int:
    """Part of cache keys: changes when entries are added to or removed from the top of a
    dataset folder (deeper edits are picked up when the cache entry expires)."""
    if data == "synthetic":
        return 0
    try:
        return Path(data).stat().st_mtime_ns
    except OSError:
        return -1
