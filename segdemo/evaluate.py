"""Honest evaluation: metrics at the labels' native resolution over a whole split.

Images are resized to the model's working size, the logits are scaled back to the size
of the ground-truth mask, and a confusion matrix is accumulated over every pixel that is
not ignored. For a U-Net++ with deep supervision one full forward pass yields every
(mode, level) prediction: the network pruned at level k outputs exactly head k of the full
network, and the accurate mode at level k averages the softmax of heads 1..k.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from segdemo import runtime
from segdemo.inference import preprocess, pruning_kwargs
from segdemo.metrics import ConfusionMatrix
from segdemo.models.registry import INFERENCE_MODES, pruning_levels


def _list_collate(items):
    return [item for item in items if item is not None]


def _base_and_indices(dataset) -> tuple[Any, list[int]]:
    """The dataset under any ``Subset`` wrappers, and the indices the wrappers select."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _label_set_of(dataset):
    return _base_and_indices(dataset)[0].label_set


class _EvalItems(torch.utils.data.Dataset):
    """Items for evaluation: the photo prepared as ``predict`` and the app prepare it
    (``inference.preprocess``: the one resize policy, then normalisation) and the mask at
    its native resolution. An unreadable file yields None (skipped, noted in the
    dataset's ``problems``), as in training."""

    def __init__(self, dataset, input_size: tuple[int, int] | None) -> None:
        self.dataset, self.indices = _base_and_indices(dataset)
        self.input_size = None if input_size is None else tuple(input_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        index = self.indices[i]
        try:
            image, mask = self.dataset.read_raw(index)
        except ValueError as exc:
            if getattr(self.dataset, "on_error", "skip") == "raise":
                raise
            self.dataset.mark_unreadable(index, exc)
            return None
        return {
            "image": preprocess(image, self.input_size, self.dataset.normalization)[0],
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "path": self.dataset.item_path(index),
        }


def _predictions(model, images: torch.Tensor, per_level: bool, mode, level) -> dict:
    """Argmax predictions keyed by ``(mode, level)``; ``("default", 0)`` for plain models."""
    if per_level:
        heads = model.forward_heads(images)
        probs = [h.float().softmax(1) for h in heads]
        out = {}
        running = torch.zeros_like(probs[0])
        for k, p in enumerate(probs, start=1):
            running += p
            out[("fast", k)] = p
            out[("accurate", k)] = running / k
        return out
    kwargs = {} if mode is None else {"mode": mode, "level": level}
    return {(mode or "default", level or 0): model(images, **kwargs).float()}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    dataset,
    *,
    input_size: tuple[int, int] | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int = 8,
    workers: int = 0,
    mode: str | None = None,
    level: int | None = None,
    max_items: int | None = None,
    distributed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (a dataset from ``open_dataset``, any ``size``: items
    are read at native size with ``read_raw``).

    Args:
        input_size: (H, W) the model works at; ``None`` feeds images at their own size.
            Photos are read as uint8 and prepared by ``inference.preprocess``, exactly as
            ``predict`` and the app prepare them.
        mode, level: evaluate one U-Net++ setting only. When both are ``None`` and the model
            supports pruning, the result also holds ``per_level[mode][level]`` for fast and
            accurate L1..L4, and the top-level numbers are the default (accurate, L4).
        distributed: shard the split across ``torch.distributed`` ranks and sum the matrices.
        progress: called with ``(done, total)`` images after every batch.

    Returns:
        ``miou``, ``pixel_accuracy``, ``per_class_iou`` (name -> IoU), precision, recall,
        ``confusion_matrix``, ``images``, ``eval_time_s`` and, for U-Net++, ``per_level``.
    """
    start = time.perf_counter()
    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    label_set = _label_set_of(dataset)
    names = list(label_set.names)
    if max_items is not None:
        dataset = Subset(dataset, range(min(max_items, len(dataset))))
    total = len(dataset)
    if distributed and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        dataset = Subset(dataset, range(rank, total, world))
    dataset = _EvalItems(dataset, input_size)

    was_training = model.training
    model.eval()
    levels = pruning_levels(model)
    if mode is not None or level is not None:
        if not levels:
            raise ValueError(f"{getattr(model, 'model_name', 'this model')} has no pruning levels")
        mode, level = pruning_kwargs(model, mode, level).values()
    per_level = levels > 0 and mode is None
    matrices: dict[tuple[str, int], ConfusionMatrix] = {}

    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=_list_collate
    )
    done = 0
    for items in loader:
        # Group by native size so that every group stacks into one batch.
        groups: dict[tuple[int, int], list] = {}
        for item in items:
            groups.setdefault(tuple(item["mask"].shape[-2:]), []).append(item)
        for native_size, group in groups.items():
            images = torch.stack([it["image"] for it in group]).to(device)
            target = torch.stack([it["mask"] for it in group]).to(device)
            if precision == "bf16":
                images = images.contiguous(memory_format=torch.channels_last)
            with runtime.autocast(device, precision):
                scores = _predictions(model, images, per_level, mode, level)
            for key, score in scores.items():
                if tuple(score.shape[-2:]) != native_size:
                    score = F.interpolate(score, size=native_size, mode="bilinear")
                cm = matrices.setdefault(
                    key, ConfusionMatrix(len(names), label_set.ignore_index, device="cpu")
                )
                cm.update(score.argmax(1).cpu(), target.cpu())
        done += len(items)
        if progress is not None:
            progress(done, len(dataset))
    model.train(was_training)

    if distributed and dist.is_initialized():
        for cm in matrices.values():
            dist.all_reduce(cm.matrix)
        done = total

    if per_level:
        default_key = ("accurate", levels)
    else:
        default_key = next(iter(matrices)) if matrices else ("default", 0)
    if default_key not in matrices:
        raise ValueError("the evaluation set yielded no readable images")
    result = matrices[default_key].compute(names)
    if per_level:
        result["per_level"] = {
            m: {
                str(k): _compact(cm.compute(names))
                for (mm, k), cm in sorted(matrices.items())
                if mm == m
            }
            for m in INFERENCE_MODES
        }
    if mode is not None:
        result["mode"], result["level"] = mode, level
    result["images"] = done
    result["eval_time_s"] = time.perf_counter() - start
    return result


def _compact(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("miou", "pixel_accuracy", "per_class_iou")}


def evaluate_checkpoint(
    ckpt_path: str | Path,
    data: str,
    split: str = "val",
    fmt: str = "auto",
    **kwargs,
) -> dict[str, Any]:
    """Load a checkpoint and evaluate it on ``data`` with the checkpoint's label set,
    working size and normalisation. ``kwargs`` go to :func:`evaluate`."""
    from segdemo.checkpoints import load_checkpoint
    from segdemo.data import open_dataset

    ckpt = load_checkpoint(ckpt_path)
    dataset = open_dataset(
        data,
        split,
        fmt=fmt,
        label_set=ckpt.metadata["label_set"]["name"],
        size=None,
        augment=False,
        normalization=ckpt.normalization,
        **kwargs.pop("data_options", {}),
    )
    kwargs.setdefault("input_size", ckpt.input_size)
    result = evaluate(ckpt.model, dataset, **kwargs)
    result["checkpoint"] = str(ckpt_path)
    result["model"] = ckpt.metadata["model"]
    result["dataset"] = {
        "root": str(data),
        "split": split,
        "format": getattr(dataset, "format", fmt),
    }
    return result
