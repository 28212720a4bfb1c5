"""Geometry-aware inference: the one place that decides the size a photo runs at.

A model learns scenes at one geometry: the Cityscapes image pairs squeeze whole 2048x1024
frames to 256x256, so each training pixel covers twice as much of the scene's width as of
its height (a *pixel aspect* of 2) and a frame's height spans the model's 256 rows. A
checkpoint records that geometry (:class:`TrainingFrames`, metadata ``training_frames``;
checkpoints written before it existed get the pairs' values). Given a photo's height and
width (and the pixel aspect of its own pixels: 1 for a camera, 2 for the pairs' squeezed
frames), :func:`plan` chooses how the model sees it, under a named policy:

- ``squeeze``: the whole photo resized to the training input size, whatever its shape
  (what segdemo did before it had policies): a 4:3 or a 3.3:1 photo is squeezed into the
  same 256x256 as a 2:1 frame, so its objects come out wider or narrower than in training.
- ``aspect``: the photo's height resized to the training height and its width so that a
  pixel covers the same share of the scene as in training (the pairs' 2:1): a 3.3:1 photo
  runs at 256x422, a 4:3 one at 256x171, a 2:1 one at 256x256, the training frame itself.
  One pass over the whole photo, so the model sees all of it at once.
- ``slide``: the same resize, then windows of the training input size slid over it with a
  third of a window of overlap, and the class probabilities averaged where windows
  overlap (mmsegmentation's slide inference); a photo no larger than one window runs in
  one pass, as under ``aspect``.
- ``blend``: the class probabilities of ``aspect`` and ``squeeze`` averaged (two passes,
  the wider one prepared from the photo, the other resized from it, as test-time
  augmentation resizes its views): no single input geometry is best for every camera, and
  the two disagree most where each is wrong.

``aspect`` and ``slide`` assume that a photo's height spans about as much of the street as
a training frame's (a camera looking down the road); they fit the height, not the pixel
count, so a photo at twice the resolution runs at the same size.

Masks come back at the photo's resolution with smooth edges: the class probabilities are
upsampled bilinearly before the argmax (:func:`labels_at`), in strips of rows so that a
large photo never holds all its class probabilities at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the command line reads POLICIES
    from torch import Tensor

POLICIES = ("squeeze", "aspect", "slide", "blend")
#: What ``predict``, ``eval``, ``compare``, the app and video use unless told otherwise
#: (chosen by the geometry benchmark in docs/results.md).
DEFAULT_POLICY = "squeeze"
POLICY_HELP = {
    "squeeze": "the whole photo resized to the training size, whatever its shape",
    "aspect": "the training height, the width that keeps the training frames' pixel aspect",
    "slide": "as aspect, in windows of the training size, probabilities averaged over overlaps",
    "blend": "the probabilities of aspect and squeeze averaged (two passes)",
}
#: The pairs squeeze 2048x1024 frames (2:1) into square images.
PAIRS_SCENE_ASPECT = 2.0
#: Pixel aspects a checkpoint may record (checked in ``segdemo.checkpoint_schema``): a
#: pixel ten times wider than high, or higher than wide, is no camera's.
MIN_PIXEL_ASPECT, MAX_PIXEL_ASPECT = 0.1, 10.0
#: Windows overlap by a third (mmsegmentation's Cityscapes stride: 2/3 of the crop).
SLIDE_STRIDE = 2 / 3
#: The longest side a photo runs at under ``aspect``/``slide`` (a panorama is cut there).
MAX_RUN_SIDE = 4096
#: Upsampled class probabilities held at once by :func:`labels_at`.
STRIP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TrainingFrames:
    """The geometry a model was trained at.

    Attributes:
        input_size: ``(height, width)`` of the training inputs.
        pixel_aspect: how much wider than high the piece of scene under one input pixel
            is (the pairs: 2.0, 2048x1024 frames in 256x256).
    """

    input_size: tuple[int, int]
    pixel_aspect: float = PAIRS_SCENE_ASPECT

    @classmethod
    def pairs(cls, input_size) -> TrainingFrames:
        """The pairs' 2:1 frames squeezed to ``input_size``."""
        height, width = (int(s) for s in input_size)
        return cls((height, width), PAIRS_SCENE_ASPECT * height / width)

    @classmethod
    def of_checkpoint(cls, metadata: dict) -> TrainingFrames:
        """What a checkpoint's (already validated) metadata records, or the pairs' values
        at its input size for a checkpoint written before ``training_frames`` existed."""
        frames = metadata.get("training_frames")
        if not frames:
            return cls.pairs(metadata["input_size"])
        height, width = (int(s) for s in frames["input_size"])
        return cls((height, width), float(frames["pixel_aspect"]))

    @property
    def scene_aspect(self) -> float:
        """Width over height of the scene in one training input (the pairs: 2.0)."""
        return self.pixel_aspect * self.input_size[1] / self.input_size[0]

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "pixel_aspect": round(self.pixel_aspect, 6)}


def training_frames_of(dataset, size) -> TrainingFrames:
    """The geometry of training on ``dataset`` at ``size``: its first frame's scene aspect
    (its width over height times the pixel aspect of its pixels, ``dataset.pixel_aspect``:
    2 for the squeezed pairs) spread over ``size``. The pairs' values when the first frame
    cannot be read."""
    height, width = (int(s) for s in size)
    try:
        image, _ = dataset.read_raw(0)
    except (AttributeError, ValueError, IndexError, OSError):
        return TrainingFrames.pairs(size)
    scene = getattr(dataset, "pixel_aspect", 1.0) * image.shape[1] / image.shape[0]
    pixel = min(max(scene * height / width, MIN_PIXEL_ASPECT), MAX_PIXEL_ASPECT)
    return TrainingFrames((height, width), pixel)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown geometry policy {policy!r}; valid: {', '.join(POLICIES)}")
    return policy


@dataclass(frozen=True)
class Plan:
    """How one photo reaches the model: resized to ``run_size``, then seen whole or in
    ``windows`` (top-left corners) of ``window`` size; each of ``also`` is one more whole
    view at that size, resized from the ``run_size`` input, whose probabilities are
    averaged in."""

    policy: str
    photo_size: tuple[int, int]
    run_size: tuple[int, int]
    window: tuple[int, int] | None = None
    windows: tuple[tuple[int, int], ...] = ()
    also: tuple[tuple[int, int], ...] = ()

    def describe(self) -> str:
        """``"256×422"``, ``"256×640 in 4 windows of 256×256"`` or ``"256×422 + 256×256"``."""
        text = f"{self.run_size[0]}×{self.run_size[1]}"
        if self.window is not None:
            text += f" in {len(self.windows)} windows of {self.window[0]}×{self.window[1]}"
        return "".join([text, *(f" + {h}×{w}" for h, w in self.also)])


def _starts(length: int, window: int) -> list[int]:
    """Window starts along one side, mmsegmentation's grid: a stride of 2/3 of the window,
    the last window flush with the end."""
    if length <= window:
        return [0]
    stride = max(1, math.ceil(window * SLIDE_STRIDE))
    count = (length - window + stride - 1) // stride + 1
    return sorted({min(k * stride, length - window) for k in range(count)})


def plan(
    photo_size: tuple[int, int],
    frames: TrainingFrames,
    policy: str = DEFAULT_POLICY,
    pixel_aspect: float = 1.0,
) -> Plan:
    """The size (and windows) ``policy`` runs a photo of ``photo_size = (H, W)`` at.

    Args:
        frames: the checkpoint's training geometry.
        pixel_aspect: width over height of the scene under one of the photo's pixels
            (1 for a camera's photo, 2 for a pairs image).
    """
    check_policy(policy)
    photo_h, photo_w = (int(s) for s in photo_size)
    train_h, train_w = frames.input_size
    if policy == "squeeze" or photo_h < 1 or photo_w < 1:
        return Plan(policy, (photo_h, photo_w), (train_h, train_w))
    scene_aspect = photo_w / photo_h * pixel_aspect
    run_w = min(MAX_RUN_SIDE, max(1, round(train_h * scene_aspect / frames.pixel_aspect)))
    run = (train_h, run_w)
    if policy == "blend":
        if run == (train_h, train_w):
            return Plan(policy, (photo_h, photo_w), run)
        wide, narrow = sorted([run, (train_h, train_w)], key=lambda s: -s[1])
        return Plan(policy, (photo_h, photo_w), wide, also=(narrow,))
    if policy == "aspect" or (run_w <= train_w):
        return Plan(policy, (photo_h, photo_w), run)
    windows = tuple((y, x) for y in _starts(train_h, train_h) for x in _starts(run_w, train_w))
    return Plan(policy, (photo_h, photo_w), run, (train_h, train_w), windows)


Scores = dict  # Hashable key -> (N, C, h, w) class probabilities


def windowed(predict: Callable[[Tensor], Scores], images: Tensor, plan: Plan) -> Scores:
    """``predict`` (a batch ``(N, 3, h, w)`` -> class probabilities per key) over the
    plan's windows of ``images`` (already at ``plan.run_size``), averaged where windows
    overlap; the whole batch at once when the plan has no windows.

    Shape: ``(N, 3, h, w)`` -> per key ``(N, C, h, w)`` float32.
    """
    import torch
    import torch.nn.functional as F

    if plan.also:
        size = tuple(images.shape[-2:])
        total = windowed(predict, images, Plan(plan.policy, plan.photo_size, plan.run_size,
                                                plan.window, plan.windows))  # fmt: skip
        for other in plan.also:
            view = F.interpolate(images, size=other, mode="bilinear", align_corners=False,
                                 antialias=other[0] < size[0] or other[1] < size[1])  # fmt: skip
            for key, probs in predict(view).items():
                total[key] = total[key] + F.interpolate(
                    probs.float(), size=size, mode="bilinear", align_corners=False
                )
        return {key: value / (1 + len(plan.also)) for key, value in total.items()}
    if plan.window is None:
        return {key: value.float() for key, value in predict(images).items()}
    win_h, win_w = plan.window
    total: Scores = {}
    count = torch.zeros((1, 1, *images.shape[-2:]), dtype=torch.float32, device=images.device)
    for y, x in plan.windows:
        for key, probs in predict(images[..., y : y + win_h, x : x + win_w]).items():
            if key not in total:
                shape = (images.shape[0], probs.shape[1], *images.shape[-2:])
                total[key] = torch.zeros(shape, dtype=torch.float32, device=probs.device)
            total[key][..., y : y + win_h, x : x + win_w] += probs.float()
        count[..., y : y + win_h, x : x + win_w] += 1
    return {key: value / count.to(value.device) for key, value in total.items()}


def upsampled_rows(scores: Tensor, size: tuple[int, int], start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` of ``scores`` upsampled bilinearly to ``size`` (what
    ``F.interpolate(scores, size, mode="bilinear", align_corners=False)`` gives for those
    rows), computing only those rows.

    Shape: ``(N, C, h, w)`` -> ``(N, C, stop - start, W)``.
    """
    import torch
    import torch.nn.functional as F

    height = scores.shape[-2]
    rows = torch.arange(start, stop, dtype=torch.float32, device=scores.device)
    source = ((rows + 0.5) * (height / size[0]) - 0.5).clamp(min=0)
    top = source.floor().long().clamp(max=height - 1)
    bottom = (top + 1).clamp(max=height - 1)
    weight = (source - top).view(1, 1, -1, 1)
    blended = scores[:, :, top] * (1 - weight) + scores[:, :, bottom] * weight
    return F.interpolate(blended, size=(stop - start, size[1]), mode="bilinear",
                         align_corners=False)  # fmt: skip


def labels_at(scores: Tensor, size: tuple[int, int], strip_bytes: int = STRIP_BYTES) -> Tensor:
    """Class per pixel at ``size = (H, W)``: the class probabilities (or logits) upsampled
    bilinearly, then the argmax; in strips of rows holding at most ``strip_bytes``.

    Shape: ``(N, C, h, w)`` -> ``(N, H, W)`` uint8 on the scores' device.
    """
    import torch
    import torch.nn.functional as F

    n, classes, height, width = scores.shape
    size = (int(size[0]), int(size[1]))
    if (height, width) == size:
        return scores.argmax(1).to(torch.uint8)
    rows = max(1, strip_bytes // max(1, n * classes * size[1] * 4))
    if rows >= size[0]:
        full = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
        return full.argmax(1).to(torch.uint8)
    out = torch.empty((n, *size), dtype=torch.uint8, device=scores.device)
    for start in range(0, size[0], rows):
        stop = min(size[0], start + rows)
        out[:, start:stop] = upsampled_rows(scores.float(), size, start, stop).argmax(1)
    return out
