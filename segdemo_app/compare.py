"""Cached evaluation, latency and prediction helpers for the Compare page.

Evaluation results are cached with ``st.cache_data`` per (checkpoint path + mtime, dataset
root + fingerprint, split, image limit), so a second session, or the same selection after
a reload, gets them at once.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit as st

from segdemo.data import open_dataset
from segdemo.evaluate import evaluate_checkpoint
from segdemo.inference import predict_logits, segment_image
from segdemo.models import inference_settings
from segdemo_app import common
from segdemo_app.dataset_picker import folder_stamp

Progress = Callable[[int, int], None]


def _mtime_ns(path: str | Path) -> int:
    return Path(path).stat().st_mtime_ns


@st.cache_resource(show_spinner=False, max_entries=16, ttl=600)
def _dataset(data: str, fmt: str, split: str, label_set: str, stamp: int):
    return open_dataset(data, split, fmt=fmt, label_set=label_set)


def open_eval_dataset(data: str, fmt: str, split: str, label_set: str):
    """The dataset (native size, no augmentation) with ``label_set``; listed once.

    Raises:
        ValueError: the folder is missing or not a dataset (one sentence).
    """
    return _dataset(data, fmt, split, label_set, folder_stamp(data))


def evaluation_key(row: dict, data: str, fmt: str, split: str, limit: int | None) -> tuple:
    """What an evaluation result depends on; raises ValueError for a bad folder."""
    dataset = open_eval_dataset(data, fmt, split, row["label_set"])
    root = data if data == "synthetic" else str(Path(data).resolve())
    return (row["path"], _mtime_ns(row["path"]), root, fmt, dataset.fingerprint(), split, limit)


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluate(
    path: str,
    mtime_ns: int,
    root: str,
    fmt: str,
    fingerprint: str,
    split: str,
    limit: int | None,
    _progress: Progress | None = None,
) -> dict:
    return evaluate_checkpoint(
        path, root, split=split, fmt=fmt, max_items=limit, progress=_progress
    )


def evaluate_cached(key: tuple, progress: Progress | None = None) -> dict:
    """``segdemo.evaluate.evaluate_checkpoint`` for ``evaluation_key(...)``, cached.

    ``progress(done, total)`` may update Streamlit elements created outside: it runs in the
    caller's context, so the cache does not record those updates for replay.
    """
    callback = None
    if progress is not None:
        outside = contextvars.copy_context()

        def callback(done: int, total: int) -> None:
            outside.run(progress, done, total)

    return _evaluate(*key, _progress=callback)


@st.cache_data(show_spinner=False, max_entries=32)
def _level_points(path: str, mtime_ns: int, repeats: int) -> list[dict]:
    import statistics
    import time

    import torch

    ckpt, device, precision = common.load_model(path)
    model = ckpt.model
    x = torch.randn(1, 3, *ckpt.input_size, generator=torch.Generator().manual_seed(0))
    settings = inference_settings(model)
    times: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
    # Round-robin over the settings, so that a busy machine slows every level alike.
    for repeat in range(repeats + 1):
        for mode, level in settings:
            start = time.perf_counter()
            predict_logits(model, x, device, precision, mode=mode, level=level)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if repeat:  # the first round warms up
                times[(mode, level)].append(1000.0 * (time.perf_counter() - start))
    points = []
    for mode, level in settings:
        cost = common.model_cost(path, mode, level)
        points.append(
            {
                "mode": mode,
                "level": level,
                "latency_ms": statistics.median(times[(mode, level)]),
                "params": cost["params"],
                "gflops": cost["gflops"],
            }
        )
    return points


def level_costs(path: str, repeats: int = 9) -> list[dict]:
    """Median latency (batch 1, the checkpoint's input size, this machine's inference path),
    parameters and GFLOPs of a U-Net++ checkpoint at every (mode, level); measured once.

    The settings are timed in turns (after one warm-up round) rather than one after the
    other, so load from other processes spreads over all of them instead of one level.
    """
    return _level_points(path, _mtime_ns(path), repeats)


def tradeoff_points(label: str, result: dict, costs: list[dict]) -> list[dict]:
    """Points of ``segdemo.charts.pruning_tradeoff`` for one evaluated U-Net++."""
    per_level = result.get("per_level", {})
    return [
        {
            "model": label,
            **cost,
            "miou": per_level[cost["mode"]][str(cost["level"])]["miou"],
        }
        for cost in costs
        if str(cost["level"]) in per_level.get(cost["mode"], {})
    ]


@st.cache_data(show_spinner=False, max_entries=128)
def _prediction(path: str, mtime_ns: int, data: str, fmt: str, split: str, index: int, stamp: int):
    ckpt, device, precision = common.load_model(path)
    dataset = open_eval_dataset(data, fmt, split, ckpt.label_set.name)
    image, _ = dataset.read_raw(index)
    return segment_image(ckpt.model, image, ckpt.input_size, device, precision)


def predicted_mask(path: str, data: str, fmt: str, split: str, index: int) -> np.ndarray:
    """Class-index mask of checkpoint ``path`` for item ``index``, at the image's size."""
    return _prediction(path, _mtime_ns(path), data, fmt, split, index, folder_stamp(data))


__all__ = [
    "evaluate_cached",
    "evaluation_key",
    "level_costs",
    "open_eval_dataset",
    "predicted_mask",
    "tradeoff_points",
]
