"""Model zoo: a registry by name, as in timm and smp.

Every registered builder takes ``num_classes`` plus keyword arguments and returns an
``nn.Module`` whose ``forward(x)`` maps ``(N, 3, H, W)`` to logits ``(N, C, H, W)`` for any
H and W. U-Net++ models (``model.supports_pruning``) also take ``mode`` and ``level``.
"""

# Importing the architecture modules registers their builders.
from segdemo.models import smp_models, unet, unetpp  # noqa: F401
from segdemo.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
