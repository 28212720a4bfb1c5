"""The dataset chooser shared by the Compare, Train and Data pages (widgets only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from segdemo.data import list_formats

SYNTHETIC = "Built-in synthetic street scenes"
FOLDER = "A dataset folder"
SYNTHETIC_NOTE = (
    "The synthetic scenes are drawn by segdemo's generator: their numbers say that a model "
    "runs, not how well it segments real streets. Choose a dataset folder for those."
)


def candidate_folders(training_folders: Sequence[str | None] = ()) -> list[str]:
    """Dataset folders on this machine to offer before the synthetic set: those in
    ``$SEGDEMO_DATA`` (separated by ``os.pathsep``), then the folders the listed
    checkpoints were trained on (``training_folders``), each once, if it exists."""
    found: list[str] = []
    listed = [p for p in os.environ.get("SEGDEMO_DATA", "").split(os.pathsep) if p.strip()]
    for folder in [*listed, *training_folders]:
        if folder and folder != "synthetic" and folder not in found and Path(folder).is_dir():
            found.append(folder)
    return found


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


def dataset_picker(
    prefix: str,
    with_split: bool = True,
    default_split: str = "val",
    candidates: Sequence[str] = (),
):
    """Synthetic or a folder (path + format), and optionally the split.

    Widget keys are ``f"{prefix}_source"``, ``_folder``, ``_format`` and ``_split``. With
    ``candidates`` (real dataset folders found on this machine, :func:`candidate_folders`)
    the picker opens on the first of them rather than the synthetic set, and names them.

    Returns:
        a :class:`DatasetChoice`, or None while the folder path is still empty.
    """
    if candidates:
        st.session_state.setdefault(f"{prefix}_source", FOLDER)
        st.session_state.setdefault(f"{prefix}_folder", candidates[0])
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
        if candidates:
            st.caption("Found on this machine: " + ", ".join(candidates))
        if not data:
            st.info("Type the path of a dataset folder on this machine.")
            return None
    else:
        st.caption(SYNTHETIC_NOTE)
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
