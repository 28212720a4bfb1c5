"""Cached dataset inspection and listing for the Data page."""

from __future__ import annotations

import numpy as np
import streamlit as st

from segdemo.data import class_frequencies, inspect_dataset, open_dataset
from segdemo_app.dataset_picker import folder_stamp


@st.cache_data(show_spinner="Inspecting the dataset…", max_entries=16, ttl=300)
def _inspect(data: str, fmt: str, label_set: str, stamp: int) -> dict:
    return inspect_dataset(data, fmt=fmt, label_set=label_set)


def inspect(data: str, fmt: str, label_set: str) -> dict:
    """``segdemo.data.inspect_dataset``, cached per folder version (5 min at most).

    Raises:
        ValueError: the folder is missing or not a dataset (one sentence).
    """
    return _inspect(data, fmt, label_set, folder_stamp(data))


@st.cache_resource(show_spinner=False, max_entries=8, ttl=300)
def _dataset(data: str, fmt: str, split: str, label_set: str, stamp: int):
    return open_dataset(data, split, fmt=fmt, label_set=label_set)


def open_browse_dataset(data: str, fmt: str, split: str, label_set: str):
    """One split at native size, no augmentation (``read_raw`` gives what is on disk)."""
    return _dataset(data, fmt, split, label_set, folder_stamp(data))


@st.cache_data(show_spinner=False, max_entries=32)
def _counts(fingerprint: str, max_items: int, _dataset) -> np.ndarray:
    return class_frequencies(_dataset, max_items=max_items)


def class_counts(dataset, max_items: int) -> np.ndarray:
    """Pixels per class over ``max_items`` evenly spaced masks, cached per dataset version."""
    return _counts(dataset.fingerprint(), int(max_items), dataset)
