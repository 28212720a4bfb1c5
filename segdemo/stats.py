"""Confidence intervals and paired comparisons by bootstrap over images.

An evaluation keeps one confusion matrix per image, ``(images, C, C)``. A bootstrap
resample draws ``images`` images with replacement; its metrics come from the sum of the
drawn images' matrices, exactly as the point estimate comes from the sum of all of them
(so mIoU stays the Cityscapes mIoU of a pooled matrix, not a mean of per-image scores).
The resamples are vectorised: a ``(resamples, images)`` matrix of draw counts times the
``(images, C*C)`` matrices gives every resampled matrix in one product.

A 95% interval is the 2.5th to 97.5th percentile of the resampled values (the percentile
bootstrap). Two models scored on the same images are compared on the *same* resamples
(the paired bootstrap), so the interval of their difference reflects only how differently
they do on the same images, not how hard the images happen to be.

Every function returns plain Python values (JSON-able); per-class values are keyed by class
name, ``None`` where a class has no IoU (absent from ground truth and prediction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from segdemo.config import DEFAULT_RESAMPLES, DEFAULT_SEED  # noqa: F401 - declared there
from segdemo.metrics import confusion_scores

# The keys say "ci95": the level is fixed so that a key always means what it says.
PERCENTILES = (2.5, 97.5)


def _stack(per_image) -> np.ndarray:
    matrices = np.asarray(per_image)
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
        raise ValueError(
            f"expected per-image confusion matrices (images, C, C), got {matrices.shape}"
        )
    if matrices.shape[0] == 0:
        raise ValueError("no images to resample")
    return matrices


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def resample_counts(images: int, resamples: int, seed: int) -> np.ndarray:
    """How often each image is drawn in each resample.

    Shape: ``(resamples, images)`` int64; every row sums to ``images``. The same
    ``(images, resamples, seed)`` always gives the same draws.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(resamples, images))
    rows = np.arange(resamples)[:, None] * images
    return np.bincount((draws + rows).ravel(), minlength=resamples * images).reshape(
        resamples, images
    )


def resampled_confusion(per_image, counts: np.ndarray) -> np.ndarray:
    """The summed confusion matrix of every resample.

    Shape: ``per_image (n, C, C)``, ``counts (B, n)`` -> ``(B, C, C)`` float64 (exact: the
    counts stay far below 2**53).
    """
    matrices = _stack(per_image)
    n, c, _ = matrices.shape
    flat = matrices.reshape(n, c * c).astype(np.float64)
    return (counts.astype(np.float64) @ flat).reshape(-1, c, c)


def scores(matrices) -> dict[str, np.ndarray]:
    """mIoU, pixel accuracy and class IoU of each matrix in a stack
    (``metrics.confusion_scores``).

    Shape: ``(..., C, C)`` -> ``miou (...)``, ``pixel_accuracy (...)``,
    ``per_class_iou (..., C)``; NaN where undefined.
    """
    return confusion_scores(matrices)


def per_image_scores(per_image) -> dict[str, np.ndarray]:
    """Each image's own mIoU, pixel accuracy and class IoU (NaN where undefined).

    Shape: ``(n, C, C)`` -> ``miou (n,)``, ``pixel_accuracy (n,)``, ``per_class_iou (n, C)``.
    """
    return scores(_stack(per_image))


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _interval(values: np.ndarray) -> list | None:
    """Percentile interval over the first axis, ignoring undefined (NaN) resamples.

    Shape: ``(B,)`` -> ``[low, high]`` or None; ``(B, C)`` -> a list of C of those.
    """
    if values.ndim == 2:
        return [_interval(values[:, i]) for i in range(values.shape[1])]
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, PERCENTILES)
    return [float(low), float(high)]


def bootstrap_ci(
    per_image,
    *,
    class_names: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Point estimates and 95% bootstrap intervals of mIoU, pixel accuracy and class IoU.

    Args:
        per_image: ``(images, C, C)`` confusion matrices, rows = ground truth.
        class_names: ``C`` names for the per-class keys (default "0", "1", ...).
        resamples, seed: the bootstrap; the same seed gives the same intervals.

    Returns:
        ``miou``, ``miou_ci95``, ``pixel_accuracy``, ``pixel_accuracy_ci95``,
        ``per_class_iou`` and ``per_class_iou_ci95`` (name -> value / ``[low, high]``, or
        None), ``counted_classes``, ``images``, ``resamples``, ``seed``.
    """
    matrices = _stack(per_image)
    names = _names(class_names, matrices.shape[1])
    point = scores(matrices.sum(0, dtype=np.int64))
    sampled = scores(resampled_confusion(matrices, resample_counts(len(matrices), resamples, seed)))
    point_iou = point["per_class_iou"].tolist()
    class_ci = _interval(sampled["per_class_iou"])
    return {
        "miou": _number(point["miou"]),
        "miou_ci95": _interval(sampled["miou"]),
        "pixel_accuracy": _number(point["pixel_accuracy"]),
        "pixel_accuracy_ci95": _interval(sampled["pixel_accuracy"]),
        "per_class_iou": {n: _number(v) for n, v in zip(names, point_iou, strict=True)},
        "per_class_iou_ci95": {
            n: (ci if not math.isnan(v) else None)
            for n, v, ci in zip(names, point_iou, class_ci, strict=True)
        },
        "counted_classes": [n for n, v in zip(names, point_iou, strict=True) if not math.isnan(v)],
        "images": len(matrices),
        "resamples": resamples,
        "seed": seed,
    }


def paired_difference(
    per_image_a,
    per_image_b,
    *,
    class_names: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Model A minus model B, scored on the same images, with paired-bootstrap intervals.

    Both stacks must hold the same images in the same order: each resample draws the same
    images for both models.

    Returns:
        ``miou_diff``, ``miou_diff_ci95``, ``miou_diff_sign_flip`` (the share of resamples
        whose difference does not have the sign of ``miou_diff``: near 0 means the order of
        the two models is stable), ``pixel_accuracy_diff`` and its ``_ci95``,
        ``per_class_iou_diff`` and ``per_class_iou_diff_ci95`` (None where either model has
        no IoU for the class), ``images``, ``resamples``, ``seed``. Differences are in
        metric units (0.012 = 1.2 points).
    """
    a, b = _stack(per_image_a), _stack(per_image_b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired comparison needs the same images and classes: {a.shape} against {b.shape}"
        )
    names = _names(class_names, a.shape[1])
    counts = resample_counts(len(a), resamples, seed)
    point_a = scores(a.sum(0, dtype=np.int64))
    point_b = scores(b.sum(0, dtype=np.int64))
    sampled_a = scores(resampled_confusion(a, counts))
    sampled_b = scores(resampled_confusion(b, counts))
    diff = {k: point_a[k] - point_b[k] for k in point_a}
    sampled = {k: sampled_a[k] - sampled_b[k] for k in sampled_a}
    miou_diff = float(diff["miou"])
    # sign(0) = 0: a model against itself has differences of exactly 0 and no flips.
    flipped = float((np.sign(sampled["miou"]) != np.sign(miou_diff)).mean())
    class_diff = diff["per_class_iou"].tolist()
    class_ci = _interval(sampled["per_class_iou"])
    return {
        "miou_diff": _number(miou_diff),
        "miou_diff_ci95": _interval(sampled["miou"]),
        "miou_diff_sign_flip": flipped,
        "pixel_accuracy_diff": _number(diff["pixel_accuracy"]),
        "pixel_accuracy_diff_ci95": _interval(sampled["pixel_accuracy"]),
        "per_class_iou_diff": {n: _number(v) for n, v in zip(names, class_diff, strict=True)},
        "per_class_iou_diff_ci95": {
            n: (ci if not math.isnan(v) else None)
            for n, v, ci in zip(names, class_diff, class_ci, strict=True)
        },
        "images": len(a),
        "resamples": resamples,
        "seed": seed,
    }


def spread_text(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """``"0.283 ± 0.002"``; the mean alone without a std (one seed), ``"-"`` without a mean."""
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def spread_over(result: dict) -> str:
    """``"mean ± std over 3 seeds"`` for a study report (``study.json``), counting the seeds
    that have finished: a report written while the study trains stands on fewer than the
    study's seeds."""
    finished: dict[str, int] = {m["name"]: 0 for m in result["models"]}
    for run in result["runs"]:
        finished[run["model"]] = finished.get(run["model"], 0) + 1
    counts = sorted({n for n in finished.values() if n})
    if counts == [1]:
        return "one seed per model so far (no spread yet)"
    if len(counts) == 1:
        return f"mean ± std over {counts[0]} seeds"
    return f"mean ± std over each model's finished seeds ({counts[0]} to {counts[-1]})"


def describe_difference(name_a: str, name_b: str, diff: float, ci95: Sequence[float]) -> str:
    """One plain sentence about an mIoU difference ``a - b`` and its 95% interval, in points.

    "A is better than B by +1.2 points (95% CI +0.4 to +2.0)" when the interval excludes
    zero (B first when B is the better one), else "no clear difference between A and B:
    A - B = +0.3 points (95% CI -0.8 to +1.4)".
    """
    low, high = (100 * float(v) for v in ci95)
    points = 100 * float(diff)
    # One decimal, more where a non-zero number would read as 0.0.
    digits = 1
    while digits < 4 and any(v and round(abs(v), digits) == 0 for v in (points, low, high)):
        digits += 1

    def fmt(value: float) -> str:
        return f"{value:+.{digits}f}"

    if low > 0 or high < 0:
        if high < 0:
            name_a, name_b, points, low, high = name_b, name_a, -points, -high, -low
        return (
            f"{name_a} is better than {name_b} by {fmt(points)} points "
            f"(95% CI {fmt(low)} to {fmt(high)})"
        )
    return (
        f"no clear difference between {name_a} and {name_b}: {name_a} - {name_b} = "
        f"{fmt(points)} points (95% CI {fmt(low)} to {fmt(high)})"
    )


def pooled_paired_difference(
    pairs: Sequence[tuple],
    *,
    class_names: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Model A minus model B over several seeds, on the same images: the mean over seeds of
    each seed's difference, with a paired-bootstrap interval over the images.

    Args:
        pairs: one ``(per_image_a, per_image_b)`` per seed, ``(images, C, C)`` each, every
            stack on the same images in the same order (A and B trained with that seed).

    Every resample draws the same images for every seed and both models, and its value is
    the mean over seeds of A - B on those images; the interval therefore covers the choice
    of images, with the seeds averaged (their spread is ``miou_diff_seed_std``).

    Returns:
        ``miou_diff`` and its ``_ci95`` and ``_sign_flip`` (as ``paired_difference``),
        ``miou_diff_per_seed``, ``miou_diff_seed_std`` (sample standard deviation; None for
        one seed), ``per_class_iou_diff`` and its ``_ci95``, ``seeds``, ``images``,
        ``resamples``, ``seed``.
    """
    if not pairs:
        raise ValueError("no seeds to pool")
    stacks = [(_stack(a), _stack(b)) for a, b in pairs]
    shapes = {s.shape for pair in stacks for s in pair}
    if len(shapes) != 1:
        raise ValueError(f"every seed and model must be scored on the same images: {shapes}")
    images, num_classes = stacks[0][0].shape[:2]
    names = _names(class_names, num_classes)
    counts = resample_counts(images, resamples, seed)
    point_miou, point_class, sampled_miou, sampled_class = [], [], [], []
    for a, b in stacks:
        pa, pb = scores(a.sum(0, dtype=np.int64)), scores(b.sum(0, dtype=np.int64))
        sa, sb = scores(resampled_confusion(a, counts)), scores(resampled_confusion(b, counts))
        point_miou.append(pa["miou"] - pb["miou"])
        point_class.append(pa["per_class_iou"] - pb["per_class_iou"])
        sampled_miou.append(sa["miou"] - sb["miou"])
        sampled_class.append(sa["per_class_iou"] - sb["per_class_iou"])
    miou_diff = float(np.mean(point_miou))
    sampled = np.mean(sampled_miou, axis=0)
    class_diff = np.mean(point_class, axis=0).tolist()
    class_ci = _interval(np.mean(sampled_class, axis=0))
    return {
        "miou_diff": _number(miou_diff),
        "miou_diff_ci95": _interval(sampled),
        "miou_diff_sign_flip": float((np.sign(sampled) != np.sign(miou_diff)).mean()),
        "miou_diff_per_seed": [_number(v) for v in point_miou],
        "miou_diff_seed_std": _number(np.std(point_miou, ddof=1)) if len(pairs) > 1 else None,
        "per_class_iou_diff": {n: _number(v) for n, v in zip(names, class_diff, strict=True)},
        "per_class_iou_diff_ci95": {
            n: (ci if not math.isnan(v) else None)
            for n, v, ci in zip(names, class_diff, class_ci, strict=True)
        },
        "seeds": len(pairs),
        "images": int(images),
        "resamples": resamples,
        "seed": seed,
    }
