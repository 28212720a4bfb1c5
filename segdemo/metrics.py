"""Segmentation metrics over an accumulated confusion matrix.

The confusion matrix is accumulated over a whole split (ignored pixels excluded); the
per-class formulas (IoU, precision, recall) come from ``smp.metrics`` applied to the
true/false positive/negative counts read off that matrix.
"""

from __future__ import annotations

import math

import segmentation_models_pytorch as smp
import torch


class ConfusionMatrix:
    """Accumulates ``matrix[true, pred]`` pixel counts, skipping ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. Shape: ``pred`` and ``target`` are integer ``(N, H, W)``."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}"
            )
        valid = target != self.ignore_index
        t = target[valid].to(self.matrix.device, torch.int64)
        p = pred[valid].to(self.matrix.device, torch.int64)
        if t.numel() and (int(t.max()) >= self.num_classes or int(t.min()) < 0):
            raise ValueError(
                f"target holds class {int(t.max())} but the label set has {self.num_classes}"
            )
        idx = t * self.num_classes + p
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix.to(self.matrix.device)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Metrics as plain Python values (JSON-able).

        Returns:
            ``miou`` (mean IoU over classes with ground-truth pixels), ``pixel_accuracy``,
            ``per_class_iou`` / ``per_class_precision`` / ``per_class_recall`` (name -> value,
            ``None`` for a class with no ground-truth pixels), ``confusion_matrix`` (rows =
            ground truth) and ``present_classes``.
        """
        return metrics_from_confusion(self.matrix, class_names)


def metrics_from_confusion(matrix: torch.Tensor, class_names: list[str] | None = None) -> dict:
    matrix = matrix.to("cpu", torch.int64)
    num_classes = matrix.shape[0]
    names = class_names or [str(i) for i in range(num_classes)]
    tp = matrix.diag()
    fp = matrix.sum(0) - tp
    fn = matrix.sum(1) - tp
    tn = matrix.sum() - tp - fp - fn
    # smp.metrics expects (batch, classes) statistics; one "image" holds the whole split.
    stats = [s.unsqueeze(0) for s in (tp, fp, fn, tn)]
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=math.nan)[0]
    # A present class that is never predicted has precision 0, not "undefined".
    precision = smp.metrics.precision(*stats, reduction="none", zero_division=0.0)[0]
    recall = smp.metrics.recall(*stats, reduction="none", zero_division=math.nan)[0]
    present = (tp + fn) > 0
    total = int(matrix.sum())
    pixel_accuracy = float(tp.sum()) / total if total else math.nan

    def per_class(values: torch.Tensor) -> dict[str, float | None]:
        return {
            name: (float(v) if bool(present[i]) and not math.isnan(float(v)) else None)
            for i, (name, v) in enumerate(zip(names, values, strict=True))
        }

    miou = float(iou[present].nan_to_num(0.0).mean()) if bool(present.any()) else math.nan
    return {
        "miou": miou,
        "pixel_accuracy": pixel_accuracy,
        "per_class_iou": per_class(iou),
        "per_class_precision": per_class(precision),
        "per_class_recall": per_class(recall),
        "present_classes": [names[i] for i in range(num_classes) if bool(present[i])],
        "confusion_matrix": matrix.tolist(),
        "pixels": total,
    }
