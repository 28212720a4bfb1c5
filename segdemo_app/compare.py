"""Cached evaluation, comparison, latency and error-map helpers for the Compare page.

An evaluation (``segdemo.evaluate.Evaluation``: one confusion matrix per image for every
U-Net++ setting) is cached with ``st.cache_data`` per (checkpoint path + mtime, dataset
root + fingerprint, split, image limit), so a second session, or the same selection after
a reload, gets it at once. Comparisons, intervals and per-image scores are computed from
the cached evaluations by ``segdemo.evaluate.compare_evaluations`` (cached too).
"""

from __future__ import annotations

import contextvars
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from segdemo.data import open_dataset
from segdemo.evaluate import (
    Evaluation,
    compare_evaluations,
    evaluate_checkpoint_per_image,
    evaluation_mask,
    setting_name,
)
from segdemo.geometry import TrainingFrames
from segdemo.inference import WarmLatency, predict_logits
from segdemo.models import inference_settings
from segdemo.viz import legend_entries
from segdemo_app import common
from segdemo_app.dataset_picker import folder_stamp

Progress = Callable[[int, int], None]
Setting = tuple[str | None, int | None]

# Resamples of the app's intervals: the library's default, stated on the page.
RESAMPLES = 1000


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
) -> Evaluation:
    return evaluate_checkpoint_per_image(
        path, root, split=split, fmt=fmt, max_items=limit, progress=_progress
    )


def evaluate_cached(key: tuple, progress: Progress | None = None) -> Evaluation:
    """``segdemo.evaluate.evaluate_checkpoint_per_image`` for ``evaluation_key(...)``,
    cached.

    ``progress(done, total)`` may update Streamlit elements created outside: it runs in the
    caller's context, so the cache does not record those updates for replay.
    """
    callback = None
    if progress is not None:
        outside = contextvars.copy_context()

        def callback(done: int, total: int) -> None:
            outside.run(progress, done, total)

    return _evaluate(*key, _progress=callback)


def model_options(
    evaluations: Mapping[str, Evaluation], rows: Mapping[str, dict]
) -> tuple[dict[str, tuple[str, Setting]], list[str]]:
    """The models the page can compare: each checkpoint at each evaluated setting (a
    U-Net++ at one mode and level is a model of its own), and the default choice: each
    checkpoint in the mode the Segment page opens it in, at its deepest level.

    Returns:
        ``({model name: (checkpoint label, setting)}, [default model names])``.
    """
    options: dict[str, tuple[str, Setting]] = {}
    defaults = []
    for label, evaluation in evaluations.items():
        settings = evaluation.settings
        if settings == [(None, None)]:
            options[label] = (label, (None, None))
            defaults.append(label)
            continue
        for setting in settings:
            options[f"{label} · {setting_name(setting)}"] = (label, setting)
        opening = evaluation.resolve(rows[label].get("miou_mode") or evaluation.default[0])
        defaults.append(f"{label} · {setting_name(opening)}")
    return options, defaults


@st.cache_data(show_spinner=False, max_entries=32)
def _comparison(
    spec: tuple, reference: str, resamples: int, _evaluations: dict[tuple, Evaluation]
) -> dict:
    models = [(name, _evaluations[key], setting) for name, key, setting in spec]
    return compare_evaluations(models, reference=reference, resamples=resamples, per_image=True)


def comparison(
    chosen: Sequence[str],
    options: Mapping[str, tuple[str, Setting]],
    keys: Mapping[str, tuple],
    evaluations: Mapping[str, Evaluation],
    reference: str,
    resamples: int = RESAMPLES,
) -> dict:
    """``compare_evaluations`` (with per-image rows) of the ``chosen`` models, cached by
    their evaluation keys and settings.

    Raises:
        ValueError: the models predict different label sets or saw different images.
    """
    spec = tuple((name, keys[options[name][0]], options[name][1]) for name in chosen)
    by_key = {keys[label]: evaluations[label] for label, _ in (options[n] for n in chosen)}
    return _comparison(spec, reference, resamples, by_key)


@st.cache_data(show_spinner=False, max_entries=64)
def _level_metrics(key: tuple, resamples: int, _evaluation: Evaluation) -> dict:
    return {
        setting: _evaluation.metrics(setting, resamples=resamples)
        for setting in _evaluation.settings
    }


def level_metrics(key: tuple, evaluation: Evaluation, resamples: int = RESAMPLES) -> dict:
    """Metrics with 95% intervals of every setting of one evaluation, cached by its key."""
    return _level_metrics(key, resamples, evaluation)


@st.cache_data(show_spinner=False, max_entries=32, ttl=300)
def _level_points(path: str, mtime_ns: int, repeats: int) -> list[dict]:
    import time

    import torch

    ckpt, device, precision = common.load_model(path)
    model = ckpt.model
    x = torch.randn(1, 3, *ckpt.input_size, generator=torch.Generator().manual_seed(0))
    settings = inference_settings(model)
    log = WarmLatency(keep=repeats)

    def run(mode: str, level: int) -> float:
        start = time.perf_counter()
        predict_logits(model, x, device, precision, mode=mode, level=level)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1000.0 * (time.perf_counter() - start)

    # Round-robin over the settings, so that a busy machine slows every level alike; the
    # first round warms up, then each setting runs until its figure holds (the Segment
    # page's rule: WarmLatency.runs_needed), at most ``repeats`` times.
    for _ in range(repeats + 1):
        pending = [s for s in settings if not log.is_warm(s) or log.runs_needed(s)]
        if not pending:
            break
        for setting in pending:
            log.record(setting, run(*setting))
    points = []
    for mode, level in settings:
        cost = common.model_cost(path, mode, level)
        latency = log.latency((mode, level))
        points.append(
            {
                "mode": mode,
                "level": level,
                "latency_ms": latency.median_ms,
                "latency_spread_ms": latency.spread_ms,
                "latency_runs": latency.runs,
                "params": cost["params"],
                "gflops": cost["gflops"],
            }
        )
    return points


def level_costs(path: str, repeats: int = 9) -> list[dict]:
    """Latency (the median of warm runs, with half its interquartile range as spread; batch
    1, the checkpoint's input size, this machine's inference path), parameters and GFLOPs
    of a U-Net++ checkpoint at every (mode, level); measured again after five minutes.

    The settings are timed in turns (after one warm-up round) rather than one after the
    other, so load from other processes spreads over all of them instead of one level;
    each gets at least three warm runs, more (up to ``repeats``) while they disagree, by
    the rule the Segment page uses (``segdemo.inference.WarmLatency``).
    """
    return _level_points(path, _mtime_ns(path), repeats)


def tradeoff_points(label: str, metrics: Mapping[Setting, dict], costs: list[dict]) -> list[dict]:
    """Points of ``segdemo.charts.pruning_tradeoff`` for one evaluated U-Net++, with the
    mIoU intervals of ``level_metrics``."""
    return [
        {
            "model": label,
            **cost,
            "miou": metrics[(cost["mode"], cost["level"])]["miou"],
            "miou_ci95": metrics[(cost["mode"], cost["level"])].get("miou_ci95"),
        }
        for cost in costs
        if (cost["mode"], cost["level"]) in metrics
    ]


def short_verdict(comparison: Mapping) -> str:
    """The paired sentence without its numbers' interval: ``"A is better than B by +1.2
    points"`` or ``"no clear difference between A and B"`` (the full sentence is one
    click away)."""
    sentence = comparison["sentence"]
    low, high = comparison["miou_diff_ci95"]
    if low > 0 or high < 0:
        return sentence.split(" (95% CI")[0]
    return sentence.split(": ")[0]


def image_table(
    result: dict, reference: str, other: str | None, order: str
) -> list[dict[str, object]]:
    """Per-image rows of a comparison, for the page's table: ``index``, ``file``, each
    model's mIoU on that image and, with ``other``, ``other - reference``.

    ``order`` is ``"worst"`` (the reference's lowest mIoU first; images without labelled
    pixels last) or ``"disagreement"`` (the largest ``|other - reference|`` first).
    """
    names = [m["name"] for m in result["models"]]
    rows = []
    for row in result["per_image"]:
        entry: dict[str, object] = {"index": row["index"], "file": Path(row["path"]).name}
        entry.update({name: row["miou"][name] for name in names})
        if other is not None:
            a, b = row["miou"][other], row["miou"][reference]
            entry["difference"] = None if a is None or b is None else a - b
        rows.append(entry)
    if order == "disagreement" and other is not None:

        def key(r):
            return -abs(r["difference"]) if r["difference"] is not None else np.inf

    else:

        def key(r):
            return r[reference] if r[reference] is not None else np.inf

    return sorted(rows, key=key)


@st.cache_data(show_spinner=False, max_entries=128)
def _prediction(
    path: str,
    mtime_ns: int,
    data: str,
    fmt: str,
    split: str,
    index: int,
    stamp: int,
    setting: Setting,
):
    ckpt, device, precision = common.load_model(path)
    dataset = open_eval_dataset(data, fmt, split, ckpt.label_set.name)
    image, _ = dataset.read_raw(index)
    frames = TrainingFrames.of_checkpoint(ckpt.metadata)
    return evaluation_mask(ckpt.model, image, ckpt.input_size, setting, device, precision,
                           frames=frames)  # fmt: skip


def predicted_mask(
    path: str, data: str, fmt: str, split: str, index: int, setting: Setting = (None, None)
) -> np.ndarray:
    """Class-index mask of checkpoint ``path`` at ``setting`` for item ``index``, at the
    labels' size: exactly the pixels its evaluation counted."""
    stamp = folder_stamp(data)
    return _prediction(path, _mtime_ns(path), data, fmt, split, index, stamp, tuple(setting))


def wrong_classes(
    prediction: np.ndarray, truth: np.ndarray, label_set, top: int = 4
) -> dict[str, tuple[int, int, int]]:
    """The classes most often predicted on wrong pixels (the colours of the error map's
    mistakes), with their share of the wrong pixels: ``{"car 41%": (r, g, b), ...}``."""
    wrong = (prediction != truth) & (truth != label_set.ignore_index)
    entries = legend_entries(prediction[wrong], label_set)[:top]
    return {
        f"{e['name']} {100 * e['fraction']:.0f}%": label_set.colors[e["train_id"]] for e in entries
    }


def legend_html(entries: Mapping[str, Sequence[int]]) -> str:
    """A one-line legend, a coloured square before each name (for ``st.markdown`` with
    ``unsafe_allow_html``)."""
    items = []
    for name, (r, g, b) in entries.items():
        swatch = (
            f'<span style="display:inline-block;width:0.9em;height:0.9em;'
            f"background:#{r:02x}{g:02x}{b:02x};border:1px solid #888;"
            f'vertical-align:middle;margin-right:0.3em"></span>'
        )
        items.append(
            f'<span style="margin-right:1.2em;white-space:nowrap">{swatch}{html.escape(name)}</span>'
        )
    return "".join(items)


__all__ = [
    "RESAMPLES",
    "comparison",
    "evaluate_cached",
    "evaluation_key",
    "image_table",
    "legend_html",
    "level_costs",
    "level_metrics",
    "model_options",
    "open_eval_dataset",
    "predicted_mask",
    "short_verdict",
    "tradeoff_points",
    "wrong_classes",
]
