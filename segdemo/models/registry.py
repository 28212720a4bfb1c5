"""Registry of model builders by name, and size/cost reporting."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

IMAGENET_NORMALIZATION = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``builder(num_classes, **kwargs) -> nn.Module`` as ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` output channels.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, int], **forward_kwargs) -> int:
    """FLOPs of one forward pass at batch 1, counted by ``torch.utils.flop_counter``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, **forward_kwargs)
    model.train(was_training)
    return int(counter.get_total_flops())


def model_info(
    model: nn.Module, input_size: tuple[int, int] = (256, 256), **forward_kwargs
) -> dict[str, float]:
    """Parameters actually used and GFLOPs for one image of ``input_size``.

    For a pruned U-Net++ (``mode="fast", level=k``) the parameter count is that of the
    sub-network computed at level ``k``, as reported by the model.
    """
    if hasattr(model, "count_parameters"):
        params = model.count_parameters(**forward_kwargs)
    else:
        params = count_parameters(model)
    return {
        "params": int(params),
        "gflops": count_flops(model, input_size, **forward_kwargs) / 1e9,
    }
