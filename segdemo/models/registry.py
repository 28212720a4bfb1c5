"""Registry of models by name, each with its settings (as timm's ``default_cfgs``), and
size/cost reporting.

A model is registered with a :class:`ModelConfig`: whether it prunes and how many levels
it has, its normalisation, whether ``DistributedDataParallel`` must look for unused
parameters, and its default and tiny (test) builds. Every name check and level count in
segdemo reads these, never a model's name or a literal level number.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segdemo.images import IMAGENET_NORMALIZATION  # noqa: F401 (re-exported)

# U-Net++ inference modes: the deepest head alone, or the mean of heads 1..level.
INFERENCE_MODES = ("fast", "accurate")


@dataclass(frozen=True)
class ModelConfig:
    """What segdemo knows about a registered model before building it.

    Attributes:
        description: one line for listings and ``--help``.
        num_levels: pruning levels of the default build (0 for a model that cannot be
            pruned). A built model's own ``num_levels`` may differ (an smp encoder of depth
            3 gives 2); :func:`pruning_levels` reads the built model.
        modes: inference modes besides the plain forward (``INFERENCE_MODES`` or empty).
        find_unused_parameters: ``DistributedDataParallel`` must search for parameters
            the forward never uses (timm encoders keep their classifier layers).
        width_argument: the keyword that sets a scratch model's width (``--base-width``),
            or None for encoder-based models.
        default_kwargs: the build used by the bench, the app's Train form and the docs.
        tiny_kwargs: the smallest sensible build, for tests.
        tiny_input_size: ``(H, W)`` a tiny build runs at in tests.
        default_input_size: ``(H, W)`` the model is trained at by default.
    """

    description: str
    num_levels: int = 0
    modes: tuple[str, ...] = ()
    find_unused_parameters: bool = False
    width_argument: str | None = None
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    tiny_input_size: tuple[int, int] = (32, 32)
    default_input_size: tuple[int, int] = (256, 256)

    @property
    def supports_pruning(self) -> bool:
        return self.num_levels > 0


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelConfig]] = {}


def register_model(
    name: str, config: ModelConfig
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``builder(num_classes, **kwargs) -> nn.Module`` as ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = (builder, config)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> tuple[Callable[..., nn.Module], ModelConfig]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` registered for ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    return _entry(name)[1]


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """Keyword arguments the builder of ``name`` accepts (besides ``num_classes``), by name."""
    parameters = inspect.signature(_entry(name)[0]).parameters
    return {
        k: p
        for k, p in parameters.items()
        if k not in ("self", "num_classes") and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` output channels.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or a keyword
            argument the model does not take (the message lists those it takes).
    """
    builder, _ = _entry(name)
    accepted = model_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} does not take {', '.join(unknown)}; its arguments are "
            f"{', '.join(accepted) or 'none'}"
        )
    model = builder(num_classes=num_classes, **kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def pruning_levels(model: nn.Module) -> int:
    """Pruning levels of a built model: 0 when it cannot be pruned."""
    if not getattr(model, "supports_pruning", False):
        return 0
    return int(model.num_levels)


def inference_settings(model: nn.Module) -> list[tuple[str | None, int | None]]:
    """Every ``(mode, level)`` a built model can run: ``[(None, None)]`` for a plain model,
    else fast L1..Lk then accurate L1..Lk."""
    levels = pruning_levels(model)
    if levels == 0:
        return [(None, None)]
    return [(mode, level) for mode in INFERENCE_MODES for level in range(1, levels + 1)]


def forward_kwargs(mode: str | None, level: int | None) -> dict[str, Any]:
    """Keyword arguments of ``model(x, ...)`` for one ``(mode, level)`` setting."""
    return {} if mode is None else {"mode": mode, "level": level}


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The encoder (contracting path) of a built model, for its own learning rate: the
    ``encoder`` of segdemo's models, the smp network's ``encoder`` for smp models."""
    for owner in (model, getattr(model, "net", None)):
        encoder = getattr(owner, "encoder", None)
        if isinstance(encoder, nn.Module):
            return encoder
    return None


def parameter_groups(model: nn.Module, split_encoder: bool) -> list[list[nn.Parameter]]:
    """The model's parameters as AdamW groups them: all in one group, or (``split_encoder``)
    the decoder and heads first, then the encoder, which gets its own learning rate.
    An optimizer numbers its state in this order, so checkpoints check it against this.

    Raises:
        ValueError: ``split_encoder`` for a model without an encoder.
    """
    if not split_encoder:
        return [list(model.parameters())]
    encoder = encoder_of(model)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no encoder to give its own learning rate")
    in_encoder = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in in_encoder]
    return [rest, list(encoder.parameters())]


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
