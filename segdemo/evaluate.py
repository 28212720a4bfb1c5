"""Honest evaluation: metrics at the labels' native resolution, image by image.

Images are resized to the model's working size, the logits are scaled back to the size
of the ground-truth mask, and a confusion matrix is kept for every image over every pixel
that is not ignored (:class:`Evaluation`). The split's metrics come from the sum of those
matrices (``segdemo.metrics``: the Cityscapes mIoU), their 95% intervals from resampling
the images (``segdemo.stats``), and two models scored on the same images are compared on
the same resamples (:func:`compare_evaluations`, :func:`compare_checkpoints`).

For a U-Net++ with deep supervision one full forward pass yields every (mode, level)
prediction: the network pruned at level k outputs exactly head k of the full network, and
the accurate mode at level k averages the softmax of heads 1..k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from segdemo import geometry, runtime, stats
from segdemo.inference import prepare_model, preprocess, pruning_kwargs
from segdemo.metrics import confusion_per_image, metrics_from_confusion
from segdemo.models.registry import (
    INFERENCE_MODES,
    forward_kwargs,
    inference_settings,
    pruning_levels,
)
from segdemo.shift import Shift
from segdemo.tta import NO_TTA, TTA, average_probabilities, probabilities


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
    (``inference.preprocess`` at the size ``segdemo.geometry.plan`` chooses under
    ``policy``, then normalisation) and the mask at its native resolution. An unreadable
    file yields None (skipped, noted in the dataset's ``problems``), as in training. With
    a ``shift`` (``segdemo.shift``) the photo is first changed as another camera would
    have taken it, the same way for every model; a shift with several views per photo
    (``geometry``: one per shape) makes that many items of each photo."""

    def __init__(
        self,
        dataset,
        input_size: tuple[int, int] | None,
        shift: Shift | None = None,
        policy: str = geometry.DEFAULT_POLICY,
        frames: geometry.TrainingFrames | None = None,
    ) -> None:
        self.dataset, self.indices = _base_and_indices(dataset)
        self.input_size = None if input_size is None else tuple(input_size)
        self.shift = shift
        self.view_names = (None,) if shift is None else shift.view_names
        self.policy = geometry.check_policy(policy)
        self.frames = frames
        if frames is None and input_size is not None:
            self.frames = geometry.TrainingFrames.pairs(input_size)

    def __len__(self) -> int:
        return len(self.indices) * len(self.view_names)

    def plan(self, photo_size: tuple[int, int], pixel_aspect: float) -> geometry.Plan:
        if self.frames is None:  # no working size: the photo at its own size
            return geometry.Plan("squeeze", tuple(photo_size), tuple(photo_size))
        return geometry.plan(photo_size, self.frames, self.policy, pixel_aspect)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        position, view = divmod(i, len(self.view_names))
        index = self.indices[position]
        try:
            image, mask = self.dataset.read_raw(index)
        except ValueError as exc:
            if getattr(self.dataset, "on_error", "skip") == "raise":
                raise
            self.dataset.mark_unreadable(index, exc)
            return None
        pixel_aspect = getattr(self.dataset, "pixel_aspect", 1.0)
        if self.shift is not None:
            image, mask, pixel_aspect = self.shift.view(image, mask, index, view, pixel_aspect)
        plan = self.plan(image.shape[:2], pixel_aspect)
        return {
            "image": preprocess(image, plan.run_size, self.dataset.normalization)[0],
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "path": self.dataset.item_path(index),
            "position": position,
            "view": view,
            "plan": plan,
        }


Setting = tuple[str | None, int | None]
"""A U-Net++ ``(mode, level)``, or ``(None, None)`` for a model without pruning levels."""


def setting_name(setting: Setting) -> str:
    """``("fast", 3)`` -> ``"fast L3"``; ``""`` for a model without pruning levels."""
    mode, level = setting
    return "" if mode is None else f"{mode} L{level}"


def checkpoint_name(path: str | Path) -> str:
    """A short name for a checkpoint: its stem, or its run folder's name for a run's
    ``best``/``last`` file."""
    path = Path(path)
    return path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem


def resolve_setting(
    settings: Sequence[Setting],
    mode: str | None,
    level: int | None,
    name: str,
    *,
    default_mode: str | None = "accurate",
    among: str = "available",
) -> Setting:
    """The U-Net++ setting ``mode``/``level`` (one of them given) name among ``settings``:
    a mode alone means its deepest level, a level alone ``default_mode`` at that level.

    Raises:
        ValueError: one sentence naming ``name`` and the settings there are.
    """
    levels = [k for m, k in settings if m is not None]
    if not levels:
        raise ValueError(f"{name} has no pruning levels")
    setting = (mode or default_mode, level or max(levels))
    if setting not in settings:
        known = ", ".join(setting_name(s) for s in settings)
        raise ValueError(f"{name} has no {setting_name(setting)} ({among}: {known})")
    return setting


@dataclass
class Evaluation:
    """One pass of a model over a dataset: a confusion matrix per image for every setting.

    Attributes:
        class_names: the label set's ``C`` class names.
        indices: each evaluated image's position in the evaluated dataset (an unreadable
            image is skipped, so positions can have gaps).
        paths: each evaluated image's file.
        confusion: setting -> ``(images, C, C)`` int32 pixel counts, rows = ground truth.
        default: the setting of the headline numbers (accurate at the deepest level for a
            U-Net++ scored at every setting).
        eval_time_s: wall time of the pass.
        info: where the numbers come from (``checkpoint``, ``model``, ``dataset``), for
            checkpoints.
        views: each evaluated item's view of its image under a shift with views (the
            ``geometry`` shift's shape), else empty.
    """

    class_names: list[str]
    indices: list[int]
    paths: list[str]
    confusion: dict[Setting, np.ndarray]
    default: Setting
    eval_time_s: float
    info: dict[str, Any] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.paths)

    @property
    def view_names(self) -> list[str]:
        """The distinct views, in order of first appearance."""
        return list(dict.fromkeys(self.views))

    def view(self, name: str) -> Evaluation:
        """The items of one view (e.g. the ``geometry`` shift's ``"4:3"``) alone."""
        keep = [i for i, v in enumerate(self.views) if v == name]
        if not keep:
            raise ValueError(f"no items of view {name!r}; views: {', '.join(self.view_names)}")
        return Evaluation(
            class_names=self.class_names,
            indices=[self.indices[i] for i in keep],
            paths=[self.paths[i] for i in keep],
            confusion={k: v[keep] for k, v in self.confusion.items()},
            default=self.default,
            eval_time_s=self.eval_time_s,
            info={**self.info, "view": name},
            views=[name] * len(keep),
        )

    @property
    def settings(self) -> list[Setting]:
        return list(self.confusion)

    def resolve(self, mode: str | None = None, level: int | None = None) -> Setting:
        """The setting ``(mode, level)`` names: ``None`` for both is the default; a mode
        alone means its deepest level. Raises ValueError for a setting not evaluated."""
        if mode is None and level is None:
            return self.default
        name = f"this evaluation of {self.info.get('model', 'the model')}"
        return resolve_setting(
            self.settings, mode, level, name, default_mode=self.default[0], among="evaluated"
        )

    def per_image(self, setting: Setting | None = None) -> np.ndarray:
        """``(images, C, C)`` confusion matrices of one setting (default: ``default``)."""
        return self.confusion[self.default if setting is None else setting]

    def metrics(
        self,
        setting: Setting | None = None,
        *,
        resamples: int = stats.DEFAULT_RESAMPLES,
        seed: int = stats.DEFAULT_SEED,
    ) -> dict[str, Any]:
        """Metrics of one setting over every image (``metrics_from_confusion``) and, when
        ``resamples`` > 0, their 95% bootstrap intervals (``miou_ci95``,
        ``pixel_accuracy_ci95``, ``per_class_iou_ci95``)."""
        per_image = self.per_image(setting)
        result = metrics_from_confusion(
            torch.from_numpy(per_image.sum(0, dtype=np.int64)), self.class_names
        )
        if resamples:
            ci = stats.bootstrap_ci(
                per_image, class_names=self.class_names, resamples=resamples, seed=seed
            )
            result.update({k: v for k, v in ci.items() if k.endswith("ci95")})
        return result

    def image_rows(self, setting: Setting | None = None) -> list[dict[str, Any]]:
        """One row per image: ``index``, ``path``, ``miou`` and ``pixel_accuracy`` of that
        image alone (Cityscapes definition over the classes in the image or its
        prediction; None for an image without labelled pixels)."""
        scores = stats.per_image_scores(self.per_image(setting))
        return [
            {
                "index": index,
                "path": path,
                "miou": _finite(miou),
                "pixel_accuracy": _finite(accuracy),
            }
            for index, path, miou, accuracy in zip(
                self.indices, self.paths, scores["miou"], scores["pixel_accuracy"], strict=True
            )
        ]

    def summary(
        self,
        *,
        resamples: int = stats.DEFAULT_RESAMPLES,
        seed: int = stats.DEFAULT_SEED,
        per_image: bool = False,
    ) -> dict[str, Any]:
        """Everything as plain values (JSON-able): the default setting's ``metrics`` and,
        for a U-Net++ scored at every setting, ``per_level[mode][level]`` (``miou``,
        ``miou_ci95``, ``pixel_accuracy``, ``pixel_accuracy_ci95``, ``per_class_iou``,
        ``counted_classes``); ``mode``/``level`` when one setting was scored; under a shift
        with views, ``views`` (per view, the same keys of its items alone); ``images``,
        ``eval_time_s``, ``bootstrap`` (resamples and seed), ``info``'s keys and, with
        ``per_image``, one row per image (``image_rows``)."""
        result = self.metrics(resamples=resamples, seed=seed)
        pruned = [s for s in self.confusion if s[0] is not None]
        if len(pruned) > 1:
            result["per_level"] = {
                mode: {
                    str(level): _compact(
                        self.metrics((mode, level), resamples=resamples, seed=seed)
                    )
                    for m, level in pruned
                    if m == mode
                }
                for mode in INFERENCE_MODES
            }
        elif pruned:
            result["mode"], result["level"] = self.default
        if self.views:
            result["views"] = {
                view: _compact(self.view(view).metrics(resamples=resamples, seed=seed))
                for view in self.view_names
            }
        result["images"] = self.images
        result["eval_time_s"] = self.eval_time_s
        if resamples:
            result["bootstrap"] = {"resamples": resamples, "seed": seed}
        result.update(self.info)
        if per_image:
            result["per_image"] = self.image_rows()
        return result


def _finite(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _compact(metrics: dict) -> dict:
    keys = ("miou", "miou_ci95", "pixel_accuracy", "pixel_accuracy_ci95", "per_class_iou")
    return {k: metrics[k] for k in (*keys, "counted_classes") if k in metrics}


def _predictions(model, images: torch.Tensor, per_level: bool, setting: Setting) -> dict:
    """Class probabilities keyed by setting: every ``(mode, level)`` from one pass over the
    heads when ``per_level``, else the one ``setting``."""
    if per_level:
        probs = [probabilities(h) for h in model.forward_heads(images)]
        out = {}
        running = torch.zeros_like(probs[0])
        mixture = getattr(model, "head_mixture", lambda level: None)
        for k, p in enumerate(probs, start=1):
            running += p
            out[("fast", k)] = p
            weights = mixture(k)
            if weights is None:
                out[("accurate", k)] = running / k
            else:  # the checkpoint's accurate-mode weights (a weighted mean of the heads)
                out[("accurate", k)] = sum(w * q for w, q in zip(weights, probs[:k], strict=True))
        return out
    return {setting: probabilities(model(images, **forward_kwargs(*setting)))}


def _native_labels(
    model, images: torch.Tensor, per_level: bool, setting: Setting, native_size, device,
    precision, tta: TTA = NO_TTA, plan: geometry.Plan | None = None,
) -> dict[Setting, torch.Tensor]:  # fmt: skip
    """Predicted classes at the labels' resolution: the class probabilities (averaged over
    the test-time views of ``tta``, in the windows of ``plan`` if it has them) are scaled
    back (bilinear, ``geometry.labels_at``) before the argmax.

    Shape: ``(N, 3, h, w)`` -> ``(N, H, W)`` int64 on CPU."""
    if precision == "bf16":
        images = images.contiguous(memory_format=torch.channels_last)

    def predict(x: torch.Tensor) -> dict:
        if precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, precision):
            return _predictions(model, x, per_level, setting)

    def with_tta(x: torch.Tensor) -> dict:
        return average_probabilities(predict, x, tta) if tta.enabled else predict(x)

    if plan is None:
        plan = geometry.Plan("squeeze", tuple(native_size), tuple(images.shape[-2:]))
    scores = geometry.windowed(with_tta, images, plan)
    return {
        key: geometry.labels_at(score, native_size).long().cpu() for key, score in scores.items()
    }


@torch.inference_mode()
def evaluation_mask(
    model: torch.nn.Module,
    image_rgb_uint8: np.ndarray,
    input_size: tuple[int, int] | None,
    setting: Setting = (None, None),
    device: str | torch.device = "auto",
    precision: str = "auto",
    tta: TTA = NO_TTA,
    policy: str = geometry.DEFAULT_POLICY,
    frames: geometry.TrainingFrames | None = None,
    pixel_aspect: float = 1.0,
) -> np.ndarray:
    """The mask evaluation scores for one photo (the same preparation, geometry, resizing
    and argmax as :func:`evaluate_per_image`), so an error map drawn from it shows exactly
    the pixels counted in that image's confusion matrix.

    Shape: ``(H, W, 3)`` uint8 -> ``(H, W)`` int64.
    """
    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    photo_size = tuple(image_rgb_uint8.shape[:2])
    if input_size is None:
        plan = geometry.Plan("squeeze", photo_size, photo_size)
    else:
        frames = frames or geometry.TrainingFrames.pairs(input_size)
        plan = geometry.plan(photo_size, frames, policy, pixel_aspect)
    x = preprocess(image_rgb_uint8, plan.run_size, model.normalization).to(device)
    labels = _native_labels(model, x, False, setting, photo_size, device, precision, tta, plan)
    return labels[setting][0].numpy()


def _gather(local: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's per-image results, on every rank. Each rank enters the same one
    collective, also a rank whose shard is empty (its lists are empty)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [local]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def _shard(dataset, max_items: int | None, distributed: bool) -> tuple[Any, int, int]:
    """The images this rank scores, with its ``rank`` and the ``world`` size: the first
    ``max_items`` images and, under an initialised ``torch.distributed``, every
    ``world``-th of them from ``rank`` (else all of them, as rank 0 of 1)."""
    if max_items is not None:
        dataset = Subset(dataset, range(min(max_items, len(dataset))))
    total = len(dataset)
    rank, world = 0, 1
    if distributed and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        dataset = Subset(dataset, range(rank, total, world))
    return dataset, rank, world


def _requested_setting(model: torch.nn.Module, mode: str | None, level: int | None) -> Setting:
    """The one U-Net++ setting ``mode`` and ``level`` ask for (``pruning_kwargs`` fills in
    a missing one); ``(None, None)`` when neither is given.

    Raises:
        ValueError: a mode or level for a model without pruning levels.
    """
    if mode is None and level is None:
        return (None, None)
    if not pruning_levels(model):
        raise ValueError(f"{getattr(model, 'model_name', 'this model')} has no pruning levels")
    kwargs = pruning_kwargs(model, mode, level)
    return (kwargs["mode"], kwargs["level"])


def _score_items(
    items: _EvalItems,
    labels_of: Callable[[torch.Tensor, tuple[int, int], geometry.Plan], dict],
    label_set,
    device: torch.device,
    *,
    rank: int,
    world: int,
    batch_size: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """This rank's per-item results, in the order read: ``positions`` in the whole
    evaluation set, ``paths``, ``views`` and ``confusion`` (setting -> ``(items, C, C)``
    int32).

    ``labels_of(images, native_size, plan)`` gives every setting's predicted classes at
    the labels' resolution (:func:`_native_labels`)."""
    local: dict[str, Any] = {"positions": [], "paths": [], "views": [], "confusion": {}}
    views = len(items.view_names)
    loader = DataLoader(items, batch_size=batch_size, num_workers=workers, collate_fn=_list_collate)
    done = 0
    for batch in loader:
        # Group by native size and geometry so that every group stacks into one batch.
        groups: dict[tuple, list] = {}
        for item in batch:
            groups.setdefault((tuple(item["mask"].shape[-2:]), item["plan"]), []).append(item)
        for (native_size, plan), group in groups.items():
            images = torch.stack([it["image"] for it in group]).to(device)
            target = torch.stack([it["mask"] for it in group])
            for key, labels in labels_of(images, native_size, plan).items():
                matrices = confusion_per_image(
                    labels, target, len(label_set.names), label_set.ignore_index
                )
                # int32 holds the pixel count of any photo (2**31 pixels is 46k x 46k).
                local["confusion"].setdefault(key, []).append(matrices.numpy().astype(np.int32))
            # A rank's i-th image is the (rank + i * world)-th of the whole evaluation set.
            local["positions"] += [
                (rank + it["position"] * world) * views + it["view"] for it in group
            ]
            local["paths"] += [it["path"] for it in group]
            local["views"] += [items.view_names[it["view"]] for it in group]
        done += len(batch)
        if progress is not None:
            progress(done, len(items))
    local["confusion"] = {k: np.concatenate(v) for k, v in local["confusion"].items()}
    return local


def _merge(
    parts: list[dict[str, Any]],
) -> tuple[list[int], list[str], dict[Setting, np.ndarray], list]:
    """Every rank's results (:func:`_score_items`) as one evaluation set, in its order:
    the images' positions, their paths and the confusion matrices of every setting.

    Raises:
        ValueError: no rank read a single image.
    """
    positions = [p for part in parts for p in part["positions"]]
    if not positions:
        raise ValueError("the evaluation set yielded no readable images")
    order = np.argsort(positions, kind="stable")
    keys = next(part["confusion"] for part in parts if part["confusion"]).keys()
    confusion = {
        key: np.concatenate([part["confusion"][key] for part in parts if part["positions"]])[order]
        for key in keys
    }
    paths = [p for part in parts for p in part["paths"]]
    views = [v for part in parts for v in part.get("views", [None] * len(part["paths"]))]
    return (
        [positions[i] for i in order], [paths[i] for i in order], confusion,
        [views[i] for i in order],
    )  # fmt: skip


@torch.inference_mode()
def evaluate_per_image(
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
    tta: TTA = NO_TTA,
    shift: str | None = None,
    engine: str = "torch",
    geometry_policy: str = geometry.DEFAULT_POLICY,
    frames: geometry.TrainingFrames | None = None,
) -> Evaluation:
    """Score ``model`` on ``dataset`` (a dataset from ``open_dataset``, any ``size``: items
    are read at native size with ``read_raw``), keeping one confusion matrix per image.

    Args:
        input_size: (H, W) the model works at; ``None`` feeds images at their own size.
            Photos are read as uint8 and prepared by ``inference.preprocess``, exactly as
            ``predict`` and the app prepare them.
        mode, level: score one U-Net++ setting only. When both are ``None`` and the model
            has pruning levels, every ``(mode, level)`` is scored from one forward pass, and
            the default is accurate at the deepest level.
        max_items: score the first N images only.
        distributed: shard the images across ``torch.distributed`` ranks; every rank gets
            every image's matrices back (ranks with no images included).
        progress: called with ``(done, total)`` images of this rank after every batch.
        tta: test-time augmentation (``segdemo.tta``): the probabilities of every setting
            are averaged over its views before the argmax.
        shift: score on the photos changed by ``segdemo.shift.Shift(shift)`` (e.g.
            ``"camera"``: other cameras and light; ``"geometry"``: four views of other
            shapes and resolutions per image), each image the same way for every model.
        geometry_policy: how each photo is sized for the model (``segdemo.geometry``),
            from ``frames``, the model's training geometry (default: the pairs' frames at
            ``input_size``).
        engine: ``"torch"``, ``"openvino"`` or ``"auto"`` (``inference.prepare_model``).

    Returns:
        An :class:`Evaluation`.
    """
    start = time.perf_counter()
    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    label_set = _label_set_of(dataset)
    names = list(label_set.names)
    dataset, rank, world = _shard(dataset, max_items, distributed)
    items = _EvalItems(
        dataset, input_size, None if shift is None else Shift(shift), geometry_policy, frames
    )

    was_training = model.training
    model.eval()
    if engine != "torch":
        model, device, precision = prepare_model(model, device, precision, engine)
    levels = pruning_levels(model)
    setting = _requested_setting(model, mode, level)
    per_level = levels > 0 and setting == (None, None)

    def labels_of(images: torch.Tensor, size: tuple[int, int], plan) -> dict:
        return _native_labels(model, images, per_level, setting, size, device, precision, tta, plan)

    local = _score_items(
        items, labels_of, label_set, device, rank=rank, world=world, batch_size=batch_size,
        workers=workers, progress=progress,
    )  # fmt: skip
    model.train(was_training)

    indices, paths, confusion, views = _merge(_gather(local) if distributed else [local])
    if per_level:
        confusion = {s: confusion[s] for s in inference_settings(model)}
    return Evaluation(
        class_names=names,
        indices=indices,
        paths=paths,
        confusion=confusion,
        default=("accurate", levels) if per_level else setting,
        eval_time_s=time.perf_counter() - start,
        info={
            **({"tta": tta.describe()} if tta.enabled else {}),
            **({"shift": shift} if shift is not None else {}),
            **({"geometry": geometry_policy} if geometry_policy != geometry.DEFAULT_POLICY else {}),
        },  # fmt: skip
        views=views if items.view_names != (None,) else [],
    )


def evaluate(
    model: torch.nn.Module,
    dataset,
    *,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    per_image: bool = False,
    **kwargs,
) -> dict[str, Any]:
    """:func:`evaluate_per_image`, summarised (``Evaluation.summary``) as plain values.

    Returns:
        ``miou`` (Cityscapes definition), ``miou_ci95``, ``pixel_accuracy`` (+ ``_ci95``),
        ``per_class_iou`` (+ ``_ci95``), ``per_class_precision``, ``per_class_recall``,
        ``counted_classes``, ``confusion_matrix``, ``pixels``, ``images``, ``eval_time_s``,
        ``bootstrap`` and, for a U-Net++, ``per_level`` (or ``mode``/``level``). With
        ``resamples=0`` no intervals are computed.
    """
    evaluation = evaluate_per_image(model, dataset, **kwargs)
    return evaluation.summary(resamples=resamples, seed=seed, per_image=per_image)


def evaluate_checkpoint_per_image(
    ckpt_path: str | Path,
    data: str,
    split: str = "val",
    fmt: str = "auto",
    **kwargs,
) -> Evaluation:
    """Load a checkpoint and score it on ``data`` with the checkpoint's label set, working
    size and normalisation. ``kwargs`` go to :func:`evaluate_per_image` (``data_options``
    to ``open_dataset``). ``info`` holds ``checkpoint``, ``model`` and ``dataset``."""
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
    kwargs.setdefault("frames", geometry.TrainingFrames.of_checkpoint(ckpt.metadata))
    evaluation = evaluate_per_image(ckpt.model, dataset, **kwargs)
    evaluation.info = {
        **evaluation.info,
        "checkpoint": str(ckpt_path),
        "model": ckpt.metadata["model"],
        "dataset": {"root": str(data), "split": split, "format": getattr(dataset, "format", fmt)},
    }
    return evaluation


def evaluate_checkpoint(
    ckpt_path: str | Path,
    data: str,
    split: str = "val",
    fmt: str = "auto",
    *,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    per_image: bool = False,
    **kwargs,
) -> dict[str, Any]:
    """:func:`evaluate_checkpoint_per_image`, summarised as plain values (see
    :func:`evaluate`), with ``checkpoint``, ``model`` and ``dataset``."""
    evaluation = evaluate_checkpoint_per_image(ckpt_path, data, split, fmt, **kwargs)
    return evaluation.summary(resamples=resamples, seed=seed, per_image=per_image)


# --------------------------------------------------------------------------- comparison


def compare_evaluations(
    models: Sequence[tuple[str, Evaluation, Setting]],
    *,
    reference: str | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    per_image: bool = False,
) -> dict[str, Any]:
    """Models scored on the same images, each against a reference, with paired intervals.

    Args:
        models: ``(name, evaluation, setting)`` per model; a U-Net++ at two settings is two
            models (one evaluation serves both).
        reference: the name every other model is compared with (default: the first).

    Returns:
        Plain values: ``images``, ``class_names``, ``reference``, ``bootstrap``, ``models``
        (per model: ``name``, ``checkpoint``, ``model``, ``mode``, ``level``, ``miou``,
        ``miou_ci95``, ``pixel_accuracy``, ``pixel_accuracy_ci95``, ``per_class_iou``,
        ``per_class_iou_ci95``, ``counted_classes``), ``comparisons`` (per model other than
        the reference: ``name``, ``reference``, the ``stats.paired_difference`` keys and
        ``sentence``) and, with ``per_image``, ``per_image`` (``index``, ``path``, and
        ``miou`` / ``pixel_accuracy`` as name -> value).

    Raises:
        ValueError: fewer than one model, duplicate names, or models scored on different
            images or label sets.
    """
    reference = _check_comparable(models, reference)
    first = models[0][1]
    class_names = first.class_names
    rows = [
        _model_row(name, evaluation, setting, class_names, resamples, seed)
        for name, evaluation, setting in models
    ]
    by_name = {name: (evaluation, setting) for name, evaluation, setting in models}
    ref_evaluation, ref_setting = by_name[reference]
    ref_matrices = ref_evaluation.per_image(ref_setting)
    comparisons = [
        _comparison_row(name, evaluation, setting, reference, ref_matrices, class_names,
                        resamples, seed)
        for name, evaluation, setting in models
        if name != reference
    ]  # fmt: skip
    result = {
        "images": first.images,
        "class_names": list(class_names),
        "reference": reference,
        "bootstrap": {"resamples": resamples, "seed": seed},
        "models": rows,
        "comparisons": comparisons,
    }
    if per_image:
        result["per_image"] = _paired_image_rows(models)
    return result


def _check_comparable(
    models: Sequence[tuple[str, Evaluation, Setting]], reference: str | None
) -> str:
    """The reference's name (default: the first model's), once the models are known to be
    comparable: at least one, distinct names, the same images and label set.

    Raises:
        ValueError: naming what differs.
    """
    if not models:
        raise ValueError("nothing to compare")
    names = [name for name, _, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ: {names}")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not one of {names}")
    first_name, first, _ = models[0]
    for name, evaluation, _ in models[1:]:
        if evaluation.class_names != first.class_names:
            raise ValueError(
                f"{name} predicts {len(evaluation.class_names)} classes "
                f"({', '.join(evaluation.class_names[:3])}, ...) but {first_name} predicts "
                f"{len(first.class_names)} ({', '.join(first.class_names[:3])}, ...)"
            )
        if evaluation.paths != first.paths:
            raise ValueError(
                f"{name} was scored on {evaluation.images} images and {first_name} on "
                f"{first.images}, not the same ones: compare models on the same images"
            )
    return reference


def _model_row(
    name: str,
    evaluation: Evaluation,
    setting: Setting,
    class_names: list[str],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """One model's entry of ``models``: where it comes from, its setting and its metrics
    with bootstrap intervals (``_MODEL_KEYS``)."""
    ci = stats.bootstrap_ci(
        evaluation.per_image(setting), class_names=class_names, resamples=resamples, seed=seed
    )
    return {
        "name": name,
        "checkpoint": evaluation.info.get("checkpoint"),
        "model": evaluation.info.get("model"),
        "mode": setting[0],
        "level": setting[1],
        **{k: ci[k] for k in _MODEL_KEYS},
    }


def _comparison_row(
    name: str,
    evaluation: Evaluation,
    setting: Setting,
    reference: str,
    ref_matrices: np.ndarray,
    class_names: list[str],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """One model against the reference's per-image matrices: the paired differences
    (``stats.paired_difference``) and a sentence that reads them."""
    diff = stats.paired_difference(
        evaluation.per_image(setting),
        ref_matrices,
        class_names=class_names,
        resamples=resamples,
        seed=seed,
    )
    return {
        "name": name,
        "reference": reference,
        **{k: v for k, v in diff.items() if k not in ("images", "resamples", "seed")},
        "sentence": stats.describe_difference(
            name, reference, diff["miou_diff"], diff["miou_diff_ci95"]
        ),
    }


def _paired_image_rows(
    models: Sequence[tuple[str, Evaluation, Setting]],
) -> list[dict[str, Any]]:
    """One row per image: ``index``, ``path``, and ``miou`` / ``pixel_accuracy`` as
    model name -> that image's score."""
    names = [name for name, _, _ in models]
    first = models[0][1]
    scores = {
        name: stats.per_image_scores(evaluation.per_image(setting))
        for name, evaluation, setting in models
    }
    return [
        {
            "index": index,
            "path": path,
            **{
                metric: {name: _finite(scores[name][metric][i]) for name in names}
                for metric in ("miou", "pixel_accuracy")
            },
        }
        for i, (index, path) in enumerate(zip(first.indices, first.paths, strict=True))
    ]


_MODEL_KEYS = (
    "miou",
    "miou_ci95",
    "pixel_accuracy",
    "pixel_accuracy_ci95",
    "per_class_iou",
    "per_class_iou_ci95",
    "counted_classes",
)


def compare_checkpoints(
    checkpoints: Sequence[str | Path | tuple[str | Path, str | None, int | None]],
    data: str,
    split: str = "val",
    fmt: str = "auto",
    *,
    reference: str | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    per_image: bool = False,
    policies: Sequence[str] | None = None,
    **kwargs,
) -> dict[str, Any]:
    """Score checkpoints on the same images and compare each with the first.

    Args:
        checkpoints: paths, or ``(path, mode, level)`` to pick a U-Net++ setting (``None``
            for both: the default, accurate at the deepest level). A checkpoint named
            several times is scored once: one pass gives every setting.
        policies: geometry policies (``segdemo.geometry``); with more than one, every
            checkpoint is scored under each, as a model of its own named ``name [policy]``
            (default: the default policy).
        kwargs: go to :func:`evaluate_checkpoint_per_image` (``max_items``, ``device``, ...).

    Returns:
        :func:`compare_evaluations`' dict with ``dataset`` (root, split, format),
        ``geometry`` (the policies) and, under a shift with views (``geometry``: one per
        shape), ``views``: per view, :func:`compare_evaluations`' dict of its items alone
        (the top-level numbers pool every view).
    """
    from segdemo.checkpoints import checkpoint_settings

    policies = list(policies or [geometry.DEFAULT_POLICY])
    for policy in policies:
        geometry.check_policy(policy)
    specs = [(c, None, None) if isinstance(c, str | Path) else tuple(c) for c in checkpoints]
    # every file is sound and has the setting asked of it before minutes of scoring start
    paths = dict.fromkeys(str(path) for path, _, _ in specs)
    settings = {path: checkpoint_settings(path) for path in paths}
    for path, mode, level in specs:
        if mode is not None or level is not None:
            resolve_setting(settings[str(path)], mode, level, Path(path).name)
    # A checkpoint asked for at one setting only is scored at that one (one head's
    # forward pass), otherwise at every setting from one pass over the heads.
    asked = {path: {(m, k) for p, m, k in specs if str(p) == path} for path in paths}
    evaluations: dict[tuple[str, str], Evaluation] = {}
    for path, _, _ in specs:
        only = next(iter(asked[str(path)])) if len(asked[str(path)]) == 1 else (None, None)
        for policy in policies:
            if (str(path), policy) not in evaluations:
                evaluations[(str(path), policy)] = evaluate_checkpoint_per_image(
                    path, data, split, fmt, geometry_policy=policy, mode=only[0],
                    level=only[1], **kwargs,
                )  # fmt: skip
    models = []
    for path, mode, level in specs:
        for policy in policies:
            evaluation = evaluations[(str(path), policy)]
            setting = evaluation.resolve(mode, level)
            name = checkpoint_name(path)
            if setting[0] is not None:
                name = f"{name} {setting_name(setting)}"
            if len(policies) > 1:
                name = f"{name} [{policy}]"
            taken = {m[0] for m in models}
            unique, k = name, 2
            while unique in taken:
                unique, k = f"{name} ({k})", k + 1
            models.append((unique, evaluation, setting))
    options = dict(reference=reference, resamples=resamples, seed=seed, per_image=per_image)
    result = compare_evaluations(models, **options)
    first = models[0][1]
    if first.views:
        result["views"] = {
            view: compare_evaluations(
                [(name, evaluation.view(view), setting) for name, evaluation, setting in models],
                **options,
            )
            for view in first.view_names
        }
    info = next(iter(evaluations.values())).info
    result["dataset"] = info["dataset"]
    result["geometry"] = policies
    result.update({key: info[key] for key in ("tta", "shift") if key in info})
    return result


# ------------------------------------------------------------------ stored in a checkpoint

# What of an evaluation goes into a checkpoint's metadata (``metrics.evaluated``).
_STORED_KEYS = ("miou", "miou_ci95", "pixel_accuracy", "pixel_accuracy_ci95", "per_class_iou",
                "counted_classes", "images", "pixels")  # fmt: skip
_STORED_LEVEL_KEYS = ("miou", "miou_ci95", "pixel_accuracy", "pixel_accuracy_ci95")


def store_evaluation(
    ckpt_path: str | Path,
    result: dict[str, Any],
    max_items: int | None,
    out: str | Path | None = None,
) -> Path:
    """Write an evaluation (``evaluate_checkpoint``'s result, all settings of a U-Net++,
    without TTA or a shift) into a ``.safetensors`` checkpoint's metadata as
    ``metrics.evaluated``, with the split and image limit it was measured on; the weights
    stay byte-identical (:func:`segdemo.checkpoints.rewrite_metadata`).

    Args:
        out: write a copy there instead of replacing ``ckpt_path``.

    Raises:
        ValueError: the result is of one setting, with TTA or shifted (not the model's
            plain figure), or the file is not a ``.safetensors`` checkpoint.
    """
    from segdemo.checkpoints import read_metadata, rewrite_metadata

    ckpt_path = Path(ckpt_path)
    if ckpt_path.suffix != ".safetensors":
        raise ValueError(
            f"{ckpt_path.name}: only a .safetensors checkpoint can store an evaluation"
        )
    if result.get("tta") or result.get("shift") or "mode" in result:
        raise ValueError(
            "only a plain evaluation (every setting, no --mode/--level, --tta or --shift) "
            "is stored in a checkpoint"
        )
    dataset = result.get("dataset") or {}
    root = str(dataset.get("root", ""))
    folder = root if root == "synthetic" else Path(root).name
    record: dict[str, Any] = {key: result[key] for key in _STORED_KEYS if key in result}
    if result.get("per_level"):
        record["per_level"] = {
            mode: {
                level: {k: m[k] for k in _STORED_LEVEL_KEYS if k in m}
                for level, m in levels.items()
            }
            for mode, levels in result["per_level"].items()
        }
    fmt = dataset.get("format")
    record.update(
        split=dataset.get("split", "val"),
        max_items=max_items,
        dataset=f"{fmt} · {folder}" if fmt and fmt != "auto" and folder != "synthetic" else folder,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    metadata = read_metadata(ckpt_path)
    metrics = dict(metadata.get("metrics") or {})
    metrics["evaluated"] = record
    return rewrite_metadata(ckpt_path, {**metadata, "metrics": metrics}, out)
