"""An exponential moving average of a model's weights (``--ema DECAY``).

After every optimizer step each floating-point weight and buffer of the average moves
towards the trained model's::

    average = decay * average + (1 - decay) * trained

and integer buffers (BatchNorm's batch counter) are copied. The average starts as a copy
of the model when training starts, so with decay ``d`` the starting weights still count
``d**steps`` after ``steps`` steps (0.999 over 3,700 steps: 2.5%). Training validates it
beside the trained weights and saves whichever scores higher (``segdemo.train``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The average of ``model``'s weights, kept as a model of its own (eval mode, no
    gradients) that can be validated and saved like the model itself."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must be between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        trained = model.state_dict()
        for name, average in self.model.state_dict().items():
            value = trained[name]
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - self.decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
