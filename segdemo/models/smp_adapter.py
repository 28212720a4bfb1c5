"""The two things segdemo needs from segmentation-models-pytorch beyond its public API.

Checked against ``segmentation-models-pytorch==0.6.0`` (pinned in requirements.txt);
``tests/test_smp_adapter.py`` fails when a release changes either of them, so a new smp
cannot break pruning or offline weights silently.

1. Running an encoder only to a shallower depth. smp fixes an encoder's depth when it is
   built and its ``forward`` reads it from ``_depth``; a U-Net++ pruned at level k must
   not pay for the stages below it, and building one encoder per level would copy the
   weights. A shallow copy with its own ``_depth`` shares every parameter and leaves the
   (possibly cached, shared) encoder untouched.
2. Where an encoder's ImageNet weights live on the Hugging Face hub (repo and revision),
   to find them in the local cache without a network call: smp keeps that in its
   ``encoders`` table, the one ``smp.encoders.get_encoder`` reads.
"""

from __future__ import annotations

import copy

import segmentation_models_pytorch as smp
from torch import Tensor, nn

CHECKED_SMP_VERSION = "0.6.0"


def encoder_features(encoder: nn.Module, x: Tensor, depth: int) -> list[Tensor]:
    """``encoder(x)`` computed only down to ``depth`` (its ``depth + 1`` feature maps).

    Raises:
        ValueError: ``depth`` deeper than the encoder was built with.
    """
    built = int(encoder._depth)
    if depth > built:
        raise ValueError(f"the encoder was built with depth {built}, not {depth}")
    if depth == built:
        return encoder(x)
    shallow = copy.copy(encoder)
    shallow._depth = depth
    return shallow(x)


def imagenet_weights_location(name: str) -> dict | None:
    """``{"repo_id", "revision"}`` of smp encoder ``name``'s ImageNet weights on the hub,
    or None for an encoder without ImageNet weights (or a ``tu-`` encoder)."""
    settings = smp.encoders.encoders.get(name, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        return None
    return {"repo_id": settings["repo_id"], "revision": settings["revision"]}
