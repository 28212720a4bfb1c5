"""Test-time augmentation: a prediction averaged over a horizontal flip and a few scales.

Each view of the (already prepared, normalised) input batch is the batch scaled by a factor
(bilinear, antialiased when shrinking) and optionally mirrored; the model's class
probabilities for the view are mirrored back, scaled back to the input size and averaged
over the views. The average is of probabilities (softmax), so the result is a proper
distribution whatever the views disagree on; its argmax is the prediction.

``TTA.parse("flip,0.75,1.25")`` is the spec the command line and the app take: ``flip``
and any scale factors (the unscaled view is always included).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# What the app's toggle and ``--tta default`` use: a flip and two scales around 1.
DEFAULT_SPEC = "flip,0.75,1.25"


@dataclass(frozen=True)
class TTA:
    """Views to average: the input at each of ``scales``, each also mirrored when ``flip``."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def parse(cls, spec: str | None) -> TTA:
        """``None``/``"none"``: no augmentation; ``"default"``: ``DEFAULT_SPEC``; otherwise
        comma-separated ``flip`` and scale factors, e.g. ``"flip,0.75,1.25"``.

        Raises:
            ValueError: an unknown word or a scale outside 0.25..4.
        """
        if spec is None or spec.strip().lower() in ("", "none"):
            return cls()
        if spec.strip().lower() == "default":
            spec = DEFAULT_SPEC
        flip, scales = False, {1.0}
        for token in (t.strip().lower() for t in spec.split(",")):
            if token == "flip":
                flip = True
                continue
            try:
                scale = float(token)
            except ValueError:
                raise ValueError(
                    f"test-time augmentation takes 'flip' and scale factors, e.g. "
                    f"'{DEFAULT_SPEC}'; got {token!r}"
                ) from None
            if not 0.25 <= scale <= 4.0:
                raise ValueError(f"a test-time scale must be within 0.25..4, got {scale}")
            scales.add(scale)
        return cls(flip=flip, scales=tuple(sorted(scales)))

    @property
    def enabled(self) -> bool:
        return self.flip or self.scales != (1.0,)

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        parts = (["flip"] if self.flip else []) + [f"{s:g}" for s in self.scales if s != 1.0]
        return ",".join(parts)

    def iter_views(self) -> Iterator[tuple[float, bool]]:
        for scale in self.scales:
            for flipped in (False, True) if self.flip else (False,):
                yield scale, flipped


NO_TTA = TTA()  # the plain prediction: one view


def _scaled(images: Tensor, scale: float) -> Tensor:
    if scale == 1.0:
        return images
    height, width = images.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(
        images.float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0
    ).to(images.dtype)


def average_probabilities(
    predict: Callable[[Tensor], dict[Hashable, Tensor]],
    images: Tensor,
    tta: TTA,
) -> dict[Hashable, Tensor]:
    """Class probabilities averaged over the views of ``tta``.

    Args:
        predict: maps a batch ``(N, 3, h, w)`` to class probabilities ``(N, C, h', w')``
            per key (e.g. one per U-Net++ setting); any ``h', w'``.
        images: the prepared batch ``(N, 3, H, W)``.

    Returns:
        Per key, float32 probabilities ``(N, C, H, W)`` (at ``images``' size).
    """
    size = tuple(images.shape[-2:])
    total: dict[Hashable, Tensor] = {}
    for scale, flipped in tta.iter_views():
        view = _scaled(images, scale)
        if flipped:
            view = view.flip(-1)
        for key, probs in predict(view).items():
            probs = probs.float()
            if flipped:
                probs = probs.flip(-1)
            if tuple(probs.shape[-2:]) != size:
                probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            total[key] = probs if key not in total else total[key] + probs
    return {key: value / tta.views for key, value in total.items()}


def probabilities(scores: Tensor) -> Tensor:
    """Softmax over the class dimension, in float32 (logits or log-probabilities in)."""
    return torch.softmax(scores.float(), dim=1)
