"""Training losses: cross-entropy, Dice (smp) and their sum, with ignore index.

For a binary label set (``road``) the model has two output channels; cross-entropy over
two classes equals binary cross-entropy on the logit difference, and Dice is taken on the
foreground class only, which is the U-Net++ paper's BCE + Dice.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "dice", "ce_dice")


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
        dice_classes = [1] if num_classes == 2 else None
        self.dice = smp.losses.DiceLoss(
            "multiclass", classes=dice_classes, from_logits=True, ignore_index=ignore_index
        )

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under bf16 autocast
        loss = logits.new_zeros(())
        if self.name in ("ce", "ce_dice"):
            loss = loss + F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        if self.name in ("dice", "ce_dice"):
            loss = loss + self.dice(logits, target)
        return loss

    def forward(
        self, heads: list[torch.Tensor] | torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(heads, torch.Tensor):
            heads = [heads]
        return torch.stack([self.single(h, target) for h in heads]).mean()
