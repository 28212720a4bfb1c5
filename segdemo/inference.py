"""Inference: the fast path (bf16 autocast + channels_last) and the helpers around it.

One way to predict, used by the CLI, the app, evaluation and the benchmark::

    model, device, precision = prepare_model(model)          # once, after loading
    x = preprocess(photo, size=(256, 512), normalization=model.normalization)
    mask = predict_mask(model, x, device, precision, **pruning_kwargs(model, "fast", 2))
    mask = mask_to_size(mask[0], photo.shape[:2])             # back to the photo

``precision`` is ``"bf16"`` (fast path) or ``"fp32"``; ``runtime.resolve_precision`` picks
bf16 only where the hardware runs it natively (AVX512-BF16/AMX CPUs, bf16 CUDA GPUs).
``prepare_model(model, engine="openvino")`` hands the model to OpenVINO instead
(``segdemo.engine``); everything below runs it the same way.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdemo import runtime
from segdemo.geometry import DEFAULT_POLICY, Plan, TrainingFrames, labels_at, windowed
from segdemo.geometry import plan as geometry_plan
from segdemo.images import resize_image
from segdemo.models.registry import forward_kwargs, pruning_levels
from segdemo.tta import NO_TTA, TTA, average_probabilities, probabilities

log = logging.getLogger(__name__)

__all__ = [
    "Segmenter",
    "WarmLatency",
    "mask_to_size",
    "predict_logits",
    "predict_mask",
    "prepare_model",
    "preprocess",
    "pruning_kwargs",
    "segment_image",
]


def prepare_model(
    model: nn.Module,
    device: str | torch.device = "auto",
    precision: str = "auto",
    engine: str = "torch",
) -> tuple[nn.Module, torch.device, str]:
    """Put ``model`` in eval mode on ``device``, in ``channels_last`` on the fast path, or
    hand it to OpenVINO (``segdemo.engine``).

    The model is changed in place (and returned, or wrapped): call this once after loading.

    Args:
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ...
        precision: ``"auto"`` (bf16 where native, else fp32), ``"bf16"`` or ``"fp32"``.
        engine: ``"torch"``, ``"openvino"`` (CPU only) or ``"auto"`` (OpenVINO on the CPU
            when installed). Where OpenVINO is unavailable torch runs, and the reason is
            logged as one warning line.

    Returns:
        ``(model, device, precision)`` with device and precision resolved; ``model`` is an
        ``engine.OpenVINOModel`` (called the same way) when OpenVINO runs it.
    """
    from segdemo.engine import OpenVINOModel, resolve_engine

    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    engine, note = resolve_engine(engine, device)
    if note:
        log.warning(note)
    if engine == "openvino":
        return OpenVINOModel(model, precision), torch.device("cpu"), precision
    model = model.eval().to(device)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    return model, device, precision


def pruning_kwargs(
    model: nn.Module, mode: str | None = "accurate", level: int | None = None
) -> dict:
    """Forward keyword arguments selecting a U-Net++ pruning ``mode``/``level``.

    ``level=None`` means the full network. Empty for models without pruning levels (they
    take no ``mode``/``level``), so callers can pass the result to any model; asking such a
    model for a level is a ValueError, as is a level the model does not have.
    """
    levels = pruning_levels(model)
    name = getattr(model, "model_name", type(model).__name__)
    if levels == 0:
        if level is not None:
            raise ValueError(
                f"{name} has no pruning levels, so it cannot be pruned to level {level}"
            )
        return {}
    level = levels if level is None else level
    if not 1 <= level <= levels:
        raise ValueError(f"{name} has pruning levels 1..{levels}, not {level}")
    return forward_kwargs(mode or "accurate", level)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_logits(
    model: nn.Module,
    images: Tensor,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    **forward_kwargs,
) -> Tensor:
    """Logits of ``model`` for normalised ``images``, as float32.

    Args:
        model: a prepared model (``prepare_model``), in eval mode.
        images: ``(N, 3, H, W)`` normalised with ``model.normalization``.
        device: where to run; ``None`` means the device of the model's parameters.
        precision: ``"bf16"`` (autocast + channels_last input) or ``"fp32"``; pass what
            ``prepare_model`` returned. ``"auto"`` is resolved for ``device``.
        **forward_kwargs: e.g. ``mode="fast", level=2`` for U-Net++ (see ``pruning_kwargs``).

    Returns:
        ``(N, C, H, W)`` float32 logits on ``device``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    device = _model_device(model) if device is None else runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    with torch.inference_mode():
        x = images.to(device, dtype=torch.float32)
        if precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, precision):
            logits = model(x, **forward_kwargs)
        return logits.float().contiguous()


def predict_mask(
    model: nn.Module,
    images: Tensor,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tta: TTA = NO_TTA,
    **forward_kwargs,
) -> Tensor:
    """Class index per pixel, the argmax of ``predict_logits``, or with test-time
    augmentation (``tta``, see ``segdemo.tta``) of the class probabilities averaged over
    its views.

    Shape:
        ``(N, 3, H, W) -> (N, H, W)`` int64.
    """
    if not tta.enabled:
        return predict_logits(model, images, device, precision, **forward_kwargs).argmax(dim=1)

    def predict(view: Tensor) -> dict:
        return {None: probabilities(predict_logits(model, view, device, precision,
                                                   **forward_kwargs))}  # fmt: skip

    return average_probabilities(predict, images, tta)[None].argmax(dim=1)


def preprocess(
    image_rgb_uint8: np.ndarray,
    size: tuple[int, int] | None,
    normalization: dict,
) -> Tensor:
    """Resize a whole photo (no crop) to ``size`` and normalise it for a model.

    Args:
        image_rgb_uint8: ``(H, W, 3)`` RGB uint8 (``(H, W)`` grey and ``(H, W, 4)`` RGBA are
            accepted: grey is repeated, alpha dropped).
        size: ``(height, width)`` the model runs at; ``None`` keeps the photo's size.
        normalization: ``{"mean": (r, g, b), "std": (r, g, b)}`` for inputs in 0..1,
            usually ``model.normalization``.

    Returns:
        ``(1, 3, height, width)`` float32, resized by ``segdemo.images.resize_image`` (the
        training pipeline's resize: pixel-area when shrinking, bilinear when enlarging).
    """
    image = np.asarray(image_rgb_uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0..255), got dtype {image.dtype}")
    image = np.ascontiguousarray(image[:, :, :3])
    if size is not None:
        image = resize_image(image, size)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    x = x.float().div_(255.0)
    mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def _nearest_exact_index(size_in: int, size_out: int) -> Tensor:
    """For each of ``size_out`` outputs, the input it copies under ``F.interpolate``'s
    ``"nearest-exact"`` rule (pixel centres), computed by that rule itself on one axis."""
    source = torch.arange(size_in, dtype=torch.float32).view(1, 1, size_in)
    index = F.interpolate(source, size=size_out, mode="nearest-exact")
    return index.view(-1).long()


def mask_to_size(mask: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor | np.ndarray:
    """Nearest-neighbour resize of a label mask back to ``size = (H, W)`` (e.g. the photo).

    The pixels ``F.interpolate(mode="nearest-exact")`` gives (it samples pixel centres),
    gathered row and column index by index, so the full-size result is the only full-size
    array made, in the input's dtype (1 byte a pixel for a uint8 mask).

    Shape:
        ``(h, w) -> (H, W)`` or ``(N, h, w) -> (N, H, W)``; same type (tensor or array)
        and dtype as the input.
    """
    is_numpy = isinstance(mask, np.ndarray)
    labels = torch.from_numpy(mask) if is_numpy else mask
    if labels.ndim not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {tuple(labels.shape)}")
    height, width = (int(s) for s in size)
    if tuple(labels.shape[-2:]) != (height, width):
        rows = _nearest_exact_index(labels.shape[-2], height).to(labels.device)
        columns = _nearest_exact_index(labels.shape[-1], width).to(labels.device)
        labels = labels.index_select(-2, rows).index_select(-1, columns)
    return labels.numpy() if is_numpy else labels


def labels_uint8(mask: Tensor) -> Tensor:
    """Class indices as uint8 (segdemo's label sets have at most 255 classes; 255 is
    ignore), so that a mask at a photo's full size takes one byte a pixel."""
    if mask.numel() and int(mask.max()) > 255:
        raise ValueError(f"a mask of class indices up to {int(mask.max())} does not fit uint8")
    return mask.to(torch.uint8)


def segment_image(
    model: nn.Module,
    image_rgb_uint8: np.ndarray,
    size: tuple[int, int] | None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tta: TTA = NO_TTA,
    plan: Plan | None = None,
    **forward_kwargs,
) -> np.ndarray:
    """Photo in, class-index mask at the photo's size out (what the app shows).

    The photo runs at ``plan`` (``segdemo.geometry.plan``: a size, maybe windows), or
    resized whole to ``size`` without one (``None``: its own size). The class
    probabilities are upsampled bilinearly to the photo before the argmax, in strips of
    rows (``geometry.labels_at``), so a photo's memory is its own 3 bytes a pixel plus 1
    for the uint8 mask and one bounded strip, whatever the number of classes.

    Shape:
        ``(H, W, 3)`` uint8 -> ``(H, W)`` uint8.
    """
    photo_size = tuple(image_rgb_uint8.shape[:2])
    if plan is None:
        plan = Plan("squeeze", photo_size, tuple(size or photo_size))
    x = preprocess(image_rgb_uint8, plan.run_size, model.normalization)

    def predict(view: Tensor) -> dict:
        return {None: probabilities(predict_logits(model, view, device, precision,
                                                   **forward_kwargs))}  # fmt: skip

    def with_tta(view: Tensor) -> dict:
        return average_probabilities(predict, view, tta) if tta.enabled else predict(view)

    scores = windowed(with_tta, x, plan)[None]
    return labels_at(scores, photo_size)[0].cpu().numpy()


def default_mode(metadata: dict, num_levels: int) -> str:
    """The U-Net++ mode a checkpoint opens in: the one with the higher validation mIoU at
    the full level, as stored (a later ``eval --store`` evaluation before training's), else
    ``"accurate"`` (the paper's choice). Averaging the heads is not always better: a weak
    shallow head can pull it down."""
    runs = metadata.get("metrics") or {}
    per_level = ((runs.get("evaluated") or runs.get("best") or {}).get("per_level")) or {}
    scores = {
        mode: ((per_level.get(mode) or {}).get(str(num_levels)) or {}).get("miou")
        for mode in ("accurate", "fast")
    }
    if None in scores.values():
        return "accurate"
    return max(scores, key=lambda mode: scores[mode])  # ties keep "accurate"


@dataclass(frozen=True)
class Segmenter:
    """One prepared model at one inference setting: a photo in, its mask out.

    What the video, batch and command-line paths hand around instead of six arguments.
    ``mode``/``level`` select a U-Net++ setting (``None``: the model's plain forward);
    ``geometry`` the policy that sizes each photo for the model (``segdemo.geometry``) from
    the training geometry ``frames`` (``None``: the pairs' frames at ``input_size``).
    """

    name: str
    model: nn.Module = field(repr=False)
    input_size: tuple[int, int]
    label_set: object = field(repr=False)
    device: torch.device | str | None = None
    precision: str = "fp32"
    mode: str | None = None
    level: int | None = None
    tta: TTA = NO_TTA
    geometry: str = DEFAULT_POLICY
    frames: TrainingFrames | None = None

    @property
    def setting(self) -> str:
        """``"fast L3"``, ``"fast L3 + TTA flip,0.75,1.25"``, or ``""`` for a plain model."""
        parts = [f"{self.mode} L{self.level}"] if self.level is not None else []
        if self.tta.enabled:
            parts.append(f"TTA {self.tta.describe()}")
        if self.geometry != DEFAULT_POLICY:
            parts.append(self.geometry)
        return " + ".join(parts)

    @property
    def engine(self) -> str:
        """What runs the model: ``"torch"`` or ``"openvino"``."""
        from segdemo.engine import engine_of

        return engine_of(self.model)

    @property
    def title(self) -> str:
        return f"{self.name} · {self.setting}" if self.setting else self.name

    def forward_kwargs(self) -> dict:
        return pruning_kwargs(self.model, self.mode, self.level) if self.level is not None else {}

    def plan(self, photo_size: tuple[int, int], pixel_aspect: float = 1.0) -> Plan:
        """The size (and windows) a photo of ``photo_size = (H, W)`` runs at."""
        frames = self.frames or TrainingFrames.pairs(self.input_size)
        return geometry_plan(photo_size, frames, self.geometry, pixel_aspect)

    def __call__(self, image_rgb_uint8: np.ndarray, pixel_aspect: float = 1.0) -> np.ndarray:
        """``(H, W, 3)`` uint8 photo -> ``(H, W)`` uint8 train ids at the photo's size
        (``pixel_aspect``: 2 for a pairs image, whose pixels are squeezed 2:1)."""
        mask = segment_image(
            self.model,
            image_rgb_uint8,
            self.input_size,
            self.device,
            self.precision,
            self.tta,
            self.plan(image_rgb_uint8.shape[:2], pixel_aspect),
            **self.forward_kwargs(),
        )
        return np.asarray(mask, dtype=np.uint8)  # already uint8: no full-size copy

    def timed(
        self, image_rgb_uint8: np.ndarray, pixel_aspect: float = 1.0
    ) -> tuple[np.ndarray, float]:
        """The mask and the wall time it took, in milliseconds."""
        start = time.perf_counter()
        mask = self(image_rgb_uint8, pixel_aspect)
        return mask, 1000.0 * (time.perf_counter() - start)


def cpu_load() -> float:
    """The 1-minute load average per CPU core (above 1: more work than cores)."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


@dataclass(frozen=True)
class Latency:
    """What a setting's warm runs say: their median, spread and number, and whether the
    CPU was busy with other work while they ran."""

    median_ms: float
    spread_ms: float  # half the interquartile range: the median's "±"
    runs: int
    busy: bool

    def text(self) -> str:
        """``"95 ms ± 4 (5 warm runs)"``, ``"...; CPU busy"`` when it was."""
        runs = f"{self.runs} warm run{'s' * (self.runs != 1)}"
        busy = "; CPU busy" if self.busy else ""
        return f"{self.median_ms:.0f} ms ± {self.spread_ms:.0f} ({runs}{busy})"


class WarmLatency:
    """Latency per inference setting from warm runs only.

    The first run of a setting pays for kernel selection and memory allocation (seconds
    for a pruned level the process has not run yet, against tens of milliseconds later),
    so it is counted as warm-up and left out; the median of the last ``keep`` warm runs
    is what a person waits for. A figure is re-measured (:meth:`runs_needed`) while it
    rests on fewer than ``min_runs`` runs from the last ``max_age_s`` seconds, or while
    those runs disagree (their interquartile range above ``max_spread`` of the median: a
    busy moment): one run at a busy moment never stands as a setting's latency. Safe to
    share between threads (the app's sessions). ``clock`` and ``load`` (seconds, load per
    core) are for tests.
    """

    def __init__(
        self,
        keep: int = 15,
        min_runs: int = 3,
        max_age_s: float = 300.0,
        max_spread: float = 0.25,
        clock=time.monotonic,
        load=cpu_load,
    ) -> None:
        self.keep, self.min_runs = keep, min_runs
        self.max_age_s, self.max_spread = max_age_s, max_spread
        self._clock, self._load = clock, load
        self._runs: dict[Hashable, list[tuple[float, float, float]]] = {}  # (when, ms, load)
        self._lock = threading.Lock()

    def record(self, setting: Hashable, ms: float) -> None:
        """Note one run of ``setting`` that took ``ms`` milliseconds."""
        entry = (self._clock(), float(ms), self._load())
        with self._lock:
            runs = self._runs.get(setting)
            if runs is None:
                self._runs[setting] = []  # the warm-up run: seen, not kept
                return
            runs.append(entry)
            del runs[: -self.keep]

    def is_warm(self, setting: Hashable) -> bool:
        """Whether ``setting`` has run at least once (its next run is a warm one)."""
        with self._lock:
            return setting in self._runs

    def _fresh(self, setting: Hashable) -> list[tuple[float, float, float]]:
        """The warm runs of the last ``max_age_s`` seconds, else all (a stale figure is
        still shown until it is measured again)."""
        runs = self._runs.get(setting) or []
        oldest = self._clock() - self.max_age_s
        return [r for r in runs if r[0] >= oldest] or runs

    def latency(self, setting: Hashable) -> Latency | None:
        """Median, spread and count of the fresh warm runs; None before the first."""
        with self._lock:
            runs = self._fresh(setting)
        if not runs:
            return None
        ms = sorted(r[1] for r in runs)
        quartiles = (
            statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        )
        busy = statistics.median(r[2] for r in runs) > 1.0
        return Latency(statistics.median(ms), (quartiles[2] - quartiles[0]) / 2, len(ms), busy)

    def median_ms(self, setting: Hashable) -> float | None:
        """Median of the fresh warm runs of ``setting``, or None before the first."""
        latency = self.latency(setting)
        return None if latency is None else latency.median_ms

    def runs_needed(self, setting: Hashable) -> int:
        """How many more warm runs ``setting`` needs for a figure to show: up to
        ``min_runs`` fresh ones, and two more (up to ``keep``) while they disagree."""
        with self._lock:
            if setting not in self._runs:
                return 0  # its warm-up comes first
            runs = [r for r in self._runs[setting] if r[0] >= self._clock() - self.max_age_s]
        if len(runs) < self.min_runs:
            return self.min_runs - len(runs)
        latency = self.latency(setting)
        if len(runs) < self.keep and 2 * latency.spread_ms > self.max_spread * latency.median_ms:
            return min(2, self.keep - len(runs))
        return 0

    def measure(self, setting: Hashable, run) -> Latency | None:
        """Time ``run()`` (returning its milliseconds) as often as :meth:`runs_needed`
        says, warm-up included; the setting's latency after."""
        if not self.is_warm(setting):
            self.record(setting, run())
        for _ in range(self.runs_needed(setting)):
            self.record(setting, run())
        return self.latency(setting)

    def warm_runs(self, setting: Hashable) -> int:
        with self._lock:
            return len(self._runs.get(setting) or ())
