"""Accurate mode as a weighted mean of the heads, weights chosen on the training split.

The U-Net++ paper's accurate mode averages the heads' class probabilities. When the
shallow heads are weak, that plain mean scores below the deepest head alone (segdemo's
first study: fast L4 beat accurate L4 by a point). ``--accurate-weights fit`` chooses, for
every level ``k >= 2``, weights ``w_1..w_k`` (non-negative, summing to 1) of the heads'
probabilities by the mIoU they reach on training images, after training:

- the candidates are every point of the simplex on a grid of step ``1/grid`` (``grid=4``:
  35 candidates at level 4), the deepest head alone and the other heads alone among them,
  plus the plain mean; on the training split, the chosen weights therefore score at least
  as high as both the plain mean and the deepest head alone (fast mode);
- the plain mean is tried first and kept unless a candidate scores strictly higher, so a
  model whose plain mean is already best keeps the paper's accurate mode;
- the training images are read without augmentation at the training size, every
  ``pixel_stride``-th pixel of each row and column (about 32x32 per image), at most 200
  images evenly spaced over the split; never the val split, which scores the result.

The weights are stored in the checkpoint's metadata (``accurate_weights``) and used by the
model's accurate mode (``segdemo.models.unetpp``).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from segdemo import runtime
from segdemo.metrics import confusion_per_image, confusion_scores

MAX_FIT_IMAGES = 200


def simplex_grid(parts: int, grid: int) -> list[tuple[float, ...]]:
    """Every ``parts``-tuple of multiples of ``1/grid`` that sums to 1."""
    points = []
    for cuts in itertools.combinations(range(grid + parts - 1), parts - 1):
        bounds = (-1, *cuts, grid + parts - 1)
        points.append(tuple((bounds[i + 1] - bounds[i] - 1) / grid for i in range(parts)))
    return points


@torch.no_grad()
def _head_probabilities(
    model,
    dataset,
    device,
    precision: str,
    max_items: int,
    pixel_stride: int,
    batch_size: int,
    ignore_index: int,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per head, the class probabilities ``(P, C)`` of the sampled labelled pixels, and
    their labels ``(P,)``."""
    from segdemo.data import collate_fn

    count = min(max_items, len(dataset))
    indices = sorted({round(i * len(dataset) / count) for i in range(count)})
    items = [dataset[i] for i in indices]
    items = [item for item in items if item is not None]
    heads: list[list[torch.Tensor]] = []
    labels = []
    model.eval()
    for start in range(0, len(items), batch_size):
        batch = collate_fn(items[start : start + batch_size])
        images = batch["image"].to(device)
        target = batch["mask"][:, ::pixel_stride, ::pixel_stride].reshape(-1)
        valid = target != ignore_index
        with runtime.autocast(device, precision):
            outputs = model.forward_heads(images)
        for j, logits in enumerate(outputs):
            probs = torch.softmax(logits.float(), dim=1)[:, :, ::pixel_stride, ::pixel_stride]
            probs = probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1]).cpu()[valid]
            if j == len(heads):
                heads.append([])
            heads[j].append(probs)
        labels.append(target[valid])
    return [torch.cat(h) for h in heads], torch.cat(labels)


def _miou(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    pred = probs.argmax(1).view(1, 1, -1)
    matrix = confusion_per_image(pred, labels.view(1, 1, -1), num_classes)
    return float(confusion_scores(matrix[0])["miou"])


def fit_accurate_weights(
    model,
    dataset,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_items: int = MAX_FIT_IMAGES,
    grid: int = 4,
    pixel_stride: int | None = None,
    batch_size: int = 8,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Choose accurate mode's head weights for every level ``2..L`` of ``model``.

    Args:
        model: a U-Net++ with deep supervision (``forward_heads`` returns ``L`` heads).
        dataset: training images without augmentation, at the training size.
        ignore_index: the label of unlabelled pixels (left out).
        max_items: at most this many images, evenly spaced over the split.
        pixel_stride: every n-th pixel of a row and column (default: about 32x32 pixels
            of each image).

    Returns:
        ``weights`` (``{"k": [w_1..w_k]}``, JSON-able, for the checkpoint's metadata) and
        ``scores`` (per level the training-split mIoU of the plain mean, of the deepest
        head alone and of the chosen weights).
    """
    device = torch.device(device)
    if pixel_stride is None:
        first = dataset[0]["image"]
        pixel_stride = max(1, min(first.shape[-2:]) // 32)
    probs, labels = _head_probabilities(
        model, dataset, device, precision, max_items, pixel_stride, batch_size, ignore_index
    )
    num_classes = probs[0].shape[1]
    weights, scores = {}, {}
    for level in range(2, len(probs) + 1):
        uniform = (1.0 / level,) * level
        best_w = uniform
        best = plain = _miou(sum(probs[:level]) / level, labels, num_classes)
        for candidate in simplex_grid(level, grid):
            mixed = sum(w * p for w, p in zip(candidate, probs[:level], strict=True) if w > 0)
            score = _miou(mixed, labels, num_classes)
            if score > best:
                best, best_w = score, candidate
        weights[str(level)] = list(best_w)
        scores[str(level)] = {
            "plain_mean": plain,
            "deepest": _miou(probs[level - 1], labels, num_classes),
            "chosen": best,
        }
    return {"weights": weights, "scores": scores}
