"""Model zoo: a registry by name, as in timm and smp.

Every registered builder takes ``num_classes`` plus keyword arguments and returns an
``nn.Module`` whose ``forward(x)`` maps ``(N, 3, H, W)`` to logits ``(N, C, H, W)`` for any
H and W. U-Net++ models (``model.supports_pruning``) also take ``mode`` and ``level``.
"""

# Importing the architecture modules registers their builders.
from segdemo.models import smp_models, unet, unetpp  # noqa: F401
from segdemo.models.registry import (
    INFERENCE_MODES,
    ModelConfig,
    create_model,
    encoder_of,
    forward_kwargs,
    get_model_config,
    inference_settings,
    list_models,
    model_arguments,
    model_info,
    parameter_groups,
    pruning_levels,
    register_model,
)

__all__ = [
    "INFERENCE_MODES",
    "ModelConfig",
    "create_model",
    "encoder_of",
    "forward_kwargs",
    "get_model_config",
    "inference_settings",
    "list_models",
    "model_arguments",
    "model_info",
    "parameter_groups",
    "pruning_levels",
    "register_model",
]
