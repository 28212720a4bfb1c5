"""Segmentation metrics from confusion matrices, with the Cityscapes definition of mIoU.

A confusion matrix counts ``matrix[true, pred]`` over every pixel whose ground truth is not
``ignore_index``. The per-class formulas (IoU, precision, recall) come from
``smp.metrics`` applied to the true/false positive/negative counts read off that matrix.

mIoU follows cityscapesScripts (``evalPixelLevelSemanticLabeling``): the IoU of a class is
``TP / (TP + FP + FN)``; a class with neither ground-truth nor predicted pixels has no IoU
and is left out of the mean, while a class with no ground-truth pixels but false positives
scores 0 and counts. The classes that entered the mean are reported as ``counted_classes``.

``confusion_scores`` takes a single matrix ``(C, C)`` or a stack ``(..., C, C)`` (one per
image, or one per bootstrap resample), so that split, per-image and resampled scores share
one formula.
"""

from __future__ import annotations

import math

import numpy as np
import segmentation_models_pytorch as smp
import torch


def confusion_per_image(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """One confusion matrix per image, in one ``bincount``.

    Shape:
        ``pred``, ``target``: integer ``(N, H, W)`` -> ``(N, C, C)`` int64, rows = ground
        truth, columns = prediction; pixels whose target is ``ignore_index`` are skipped.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    if target.ndim != 3:
        raise ValueError(f"expected (N, H, W) masks, got shape {tuple(target.shape)}")
    n = target.shape[0]
    target = target.to(torch.int64)
    valid = target != ignore_index
    t = target[valid]
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        bad = int(t.max()) if int(t.max()) >= num_classes else int(t.min())
        raise ValueError(f"target holds class {bad} but the label set has {num_classes}")
    p = pred.to(torch.int64)[valid]
    image = torch.arange(n, device=target.device).view(n, 1, 1).expand_as(target)[valid]
    flat = (image * num_classes + t) * num_classes + p
    counts = torch.bincount(flat, minlength=n * num_classes**2)
    return counts.view(n, num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates ``matrix[true, pred]`` pixel counts, skipping ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. Shape: ``pred`` and ``target`` are integer ``(N, H, W)``."""
        per_image = confusion_per_image(pred, target, self.num_classes, self.ignore_index)
        self.matrix += per_image.sum(0).to(self.matrix.device)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Metrics as plain Python values (JSON-able); see :func:`metrics_from_confusion`."""
        return metrics_from_confusion(self.matrix, class_names)


def _counts(matrix: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN per class. Shape: ``(..., C, C)`` -> four ``(..., C)``.

    The reductions run in numpy: on stacks of thousands of matrices they are far cheaper
    there than in torch on a busy CPU."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    predicted = matrix.sum(-2)
    labelled = matrix.sum(-1)
    total = labelled.sum(-1, keepdims=True)
    return tp, predicted - tp, labelled - tp, total - predicted - labelled + tp


def _as_array(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    return np.asarray(matrix, dtype=np.float64)


def confusion_scores(matrix: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Class IoU (NaN for a class absent from both ground truth and prediction), mIoU over
    the counted classes and pixel accuracy (NaN without labelled pixels) of each matrix.

    Shape: ``(..., C, C)`` -> ``per_class_iou (..., C)``, ``miou (...)``,
    ``pixel_accuracy (...)``, float64 arrays.
    """
    counts = _counts(_as_array(matrix))
    tp, fp, fn, tn = (torch.from_numpy(np.ascontiguousarray(c)) for c in counts)
    iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division=math.nan).numpy()
    counted = ~np.isnan(iou)
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = np.where(counted.any(-1), np.nansum(iou, -1) / counted.sum(-1), np.nan)
        accuracy = counts[0].sum(-1) / (counts[0] + counts[2]).sum(-1)
    return {"per_class_iou": iou, "miou": miou, "pixel_accuracy": accuracy}


def metrics_from_confusion(matrix: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Metrics of one accumulated confusion matrix, as plain Python values (JSON-able).

    Returns:
        ``miou`` (Cityscapes definition, see the module docstring), ``pixel_accuracy``,
        ``per_class_iou`` / ``per_class_precision`` (name -> value, ``None`` for a class
        absent from both ground truth and prediction), ``per_class_recall`` (``None`` for a
        class without ground-truth pixels), ``per_class_f1`` (the F1 score, 2PR/(P+R): for a
        binary label set such as ``road``, the KITTI road benchmark's F-measure),
        ``counted_classes`` (the classes in the mean),
        ``confusion_matrix`` (rows = ground truth) and ``pixels`` (labelled pixels).
    """
    counts = _as_array(matrix)
    num_classes = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}x{num_classes} matrix")
    tp, fp, fn, tn = (torch.from_numpy(c[None].copy()) for c in _counts(counts))
    scores = confusion_scores(counts)
    iou = scores["per_class_iou"]
    # A class that is predicted or present has precision 0 when it is never right.
    precision = smp.metrics.precision(tp, fp, fn, tn, reduction="none", zero_division=0.0)[0]
    recall = smp.metrics.recall(tp, fp, fn, tn, reduction="none", zero_division=math.nan)[0]
    f1 = smp.metrics.f1_score(tp, fp, fn, tn, reduction="none", zero_division=math.nan)[0]
    counted = ~np.isnan(iou)
    present = (tp + fn)[0] > 0

    def per_class(values: torch.Tensor, defined: torch.Tensor) -> dict[str, float | None]:
        return {
            name: (float(values[i]) if bool(defined[i]) else None) for i, name in enumerate(names)
        }

    return {
        "miou": float(scores["miou"]),
        "pixel_accuracy": float(scores["pixel_accuracy"]),
        "per_class_iou": per_class(iou, counted),
        "per_class_precision": per_class(precision, counted),
        "per_class_recall": per_class(recall, present),
        "per_class_f1": per_class(f1, counted),
        "counted_classes": [names[i] for i in range(num_classes) if bool(counted[i])],
        "confusion_matrix": counts.astype(np.int64).tolist(),
        "pixels": int(counts.sum()),
    }
