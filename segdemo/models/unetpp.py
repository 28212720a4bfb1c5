"""U-Net++ (Zhou et al. 2018, "UNet++: A Nested U-Net Architecture"; 2019 TMI version with
deep supervision and pruning at inference), written from scratch.

Nodes ``X^{i,j}``: ``i`` is the depth (down-sampling steps), ``j`` the position along the
dense skip pathway. ``X^{i,0}`` is the encoder; every other node is

    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})])

with ``H`` a conv block and ``U`` an up-sampling. With deep supervision a 1x1 head sits on
each of ``X^{0,1..L}``; the training loss averages the per-head losses.

Pruning at inference (level ``k``) computes only the nodes with ``i + j <= k``, so the
encoder stops at depth ``k``:

- ``mode="fast"``: returns head ``k`` alone (the paper's pruned U-Net++ L^k);
- ``mode="accurate"``: returns ``log(mean_j softmax(head_j))`` over heads ``1..k``; at
  ``k = L`` this is the paper's "accurate mode", and it stays logits-like (argmax works).
  A model whose ``accurate_weights`` are set (a checkpoint trained with
  ``--accurate-weights fit``) takes a weighted mean instead, with weights per level.

Two models share the ``NestedDecoder``:

- ``unetpp``: the paper's network, encoder = U-Net conv blocks (``unet.py``);
- ``unetpp_ds``: the nested decoder with deep supervision on an smp encoder (resnet18 by
  default). Its rows are the encoder features at strides 2, 4, ..., 32, and a pruned
  network runs the encoder only as deep as its level needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdemo.models.encoders import encoder_normalization, get_encoder
from segdemo.models.registry import (
    IMAGENET_NORMALIZATION,
    INFERENCE_MODES,
    ModelConfig,
    register_model,
)
from segdemo.models.smp_adapter import encoder_features
from segdemo.models.unet import (
    ConvBlock,
    ConvEncoder,
    UpSample,
    concat_channels,
    crop_to,
    level_widths,
    pad_to_multiple,
)


class NestedDecoder(nn.Module):
    """The dense, nested skip pathways of U-Net++: every node ``X^{i,j}`` with ``j >= 1``.

    Args:
        encoder_channels: channels of ``X^{0,0}, ..., X^{L,0}`` (``L + 1`` rows).
        decoder_channels: channels of the nodes ``X^{i,j>=1}`` in rows ``i = 0..L-1``.
        upsampling: ``"transpose"`` or ``"bilinear"`` (see ``unet.UpSample``).

    Row ``i`` must be at twice the spatial size of row ``i + 1``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        upsampling: str = "transpose",
    ) -> None:
        super().__init__()
        self.num_levels = len(encoder_channels) - 1
        if len(decoder_channels) != self.num_levels:
            raise ValueError(
                f"decoder_channels needs one width per row 0..{self.num_levels - 1} "
                f"({self.num_levels} values), got {list(decoder_channels)}"
            )
        self.encoder_channels = list(encoder_channels)
        self.decoder_channels = list(decoder_channels)
        self.ups = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, self.num_levels + 1):
            for i in range(self.num_levels - j + 1):
                below = encoder_channels[i + 1] if j == 1 else decoder_channels[i + 1]
                width = decoder_channels[i]
                self.ups[self._key(i, j)] = UpSample(below, width, upsampling)
                in_channels = encoder_channels[i] + (j - 1) * width + width
                self.nodes[self._key(i, j)] = ConvBlock(in_channels, width)

    @staticmethod
    def _key(i: int, j: int) -> str:
        return f"x_{i}_{j}"

    def forward(self, features: Sequence[Tensor], level: int | None = None) -> list[Tensor]:
        """Compute the nodes with ``i + j <= level``.

        Args:
            features: encoder rows ``X^{0,0}, ..., X^{k,0}`` with ``k >= level``; row ``i``
                of shape ``(N, encoder_channels[i], H / 2**i, W / 2**i)``.
            level: pruning level, ``1..L``; ``None`` means ``len(features) - 1``.

        Returns:
            ``[X^{0,1}, ..., X^{0,level}]``, each ``(N, decoder_channels[0], H, W)``.
        """
        level = len(features) - 1 if level is None else level
        if not 1 <= level <= min(self.num_levels, len(features) - 1):
            raise ValueError(
                f"level must be in 1..{self.num_levels} and <= len(features) - 1 = "
                f"{len(features) - 1}, got {level}"
            )
        grid = [[features[i]] for i in range(level + 1)]
        for j in range(1, level + 1):
            for i in range(level - j + 1):
                up = self.ups[self._key(i, j)](grid[i + 1][j - 1])
                grid[i].append(self.nodes[self._key(i, j)](concat_channels([*grid[i], up])))
        return grid[0][1:]

    def count_parameters(self, level: int) -> int:
        """Parameters of the nodes (and their up-samplings) with ``i + j <= level``."""
        total = 0
        for j in range(1, level + 1):
            for i in range(level - j + 1):
                for module in (self.ups[self._key(i, j)], self.nodes[self._key(i, j)]):
                    total += sum(p.numel() for p in module.parameters())
        return total


def log_mean_softmax(logits: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """``log(mean_k softmax(logits_k))`` over the class dim, computed stably in float32;
    with ``weights`` (non-negative, summing to 1) the weighted mean ``sum_k w_k softmax``.

    Shape:
        ``K x (N, C, H, W) -> (N, C, H, W)``
    """
    log_probs = torch.stack([F.log_softmax(z.float(), dim=1) for z in logits])
    if weights is None:
        return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))
    log_w = torch.tensor(weights, dtype=torch.float32, device=log_probs.device).log()
    return torch.logsumexp(log_probs + log_w.view(-1, 1, 1, 1, 1), dim=0)


def check_accurate_weights(weights: object, num_levels: int) -> dict[int, list[float]]:
    """Accurate-mode head weights as stored in a checkpoint (untrusted): a mapping from a
    level ``"2".."L"`` to that many non-negative finite numbers with a positive sum.

    Returns:
        ``{level: weights}`` with each list normalised to sum 1.

    Raises:
        ValueError: one sentence naming what is wrong.
    """
    if not isinstance(weights, dict):
        raise ValueError(f"accurate_weights should map levels to weights, got {type(weights)}")
    checked = {}
    for key, values in weights.items():
        level = int(key) if isinstance(key, str) and key.isdigit() else None
        if level is None or not 2 <= level <= num_levels:
            raise ValueError(f"accurate_weights has level {key!r}; levels are 2..{num_levels}")
        if (
            not isinstance(values, list)
            or len(values) != level
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0
                for v in values
            )
            or sum(values) <= 0
        ):  # fmt: skip
            raise ValueError(
                f"accurate_weights for level {level} should be {level} non-negative numbers "
                f"with a positive sum, got {str(values)[:60]}"
            )
        checked[level] = [float(v) / sum(values) for v in values]
    return checked


class NestedUNetBase(nn.Module):
    """What ``unetpp`` and ``unetpp_ds`` share: pruning, the heads and their combination.

    Subclasses set ``encoder``-related attributes and implement ``encode`` and
    ``encoder_parameters``; they create ``self.decoder`` (a ``NestedDecoder``),
    ``self.heads`` (one 1x1 conv per supervised node) and set ``pad_multiple`` and
    ``head_stride`` (stride of row 0 relative to the input).
    """

    num_levels: int = 4
    pad_multiple: int = 16
    head_stride: int = 1
    deep_supervision: bool = True
    #: Accurate mode's head weights per level (``{level: [w_1..w_level]}``, each summing
    #: to 1); a level not in it takes the plain mean. Set from a checkpoint's metadata.
    accurate_weights: dict[int, list[float]] | None = None

    def head_mixture(self, level: int) -> list[float] | None:
        """Accurate mode's weights of heads ``1..level``; None for the plain mean."""
        return (self.accurate_weights or {}).get(level)

    @property
    def supports_pruning(self) -> bool:
        return self.deep_supervision

    def encode(self, x: Tensor, level: int) -> list[Tensor]:
        """Encoder rows ``X^{0,0}, ..., X^{level,0}`` for a padded input."""
        raise NotImplementedError

    def encoder_parameters(self, level: int) -> int:
        """Parameters of the encoder part that ``encode(x, level)`` runs."""
        raise NotImplementedError

    def _check(self, mode: str, level: int | None) -> int:
        if mode not in INFERENCE_MODES:
            raise ValueError(f"mode must be one of {INFERENCE_MODES}, got {mode!r}")
        if level is None:
            return self.num_levels
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"level must be an int in 1..{self.num_levels}, got {level!r}")
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"level must be in 1..{self.num_levels}, got {level}")
        if not self.deep_supervision and level != self.num_levels:
            raise ValueError(
                f"this U-Net++ was built with deep_supervision=False, so only level "
                f"{self.num_levels} (the full network) exists, got level {level}; build it "
                "with deep_supervision=True to prune"
            )
        return level

    def _head(self, index: int, node: Tensor, size: tuple[int, int]) -> Tensor:
        """Head ``index`` on a row-0 node, brought to the (padded) input resolution."""
        logits = self.heads[index](node)
        if self.head_stride > 1:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: Tensor, mode: str = "accurate", level: int | None = None) -> Tensor:
        """Segmentation logits, pruned at ``level`` (default: the full network).

        Args:
            x: ``(N, 3, H, W)`` normalised images, any H and W.
            mode: ``"fast"`` (head ``level`` alone) or ``"accurate"`` (log of the mean of
                the softmax of heads ``1..level``, weighted by ``head_mixture(level)``
                when the model has accurate-mode weights).
            level: ``1..num_levels``; ``None`` means ``num_levels``. Only the nodes with
                ``i + j <= level`` are computed.

        Returns:
            ``(N, num_classes, H, W)`` logits (log-probabilities in accurate mode with
            more than one head).
        """
        level = self._check(mode, level)
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        padded = x.shape[-2:]
        nodes = self.decoder(self.encode(x, level), level)
        if not self.deep_supervision:
            return crop_to(self._head(0, nodes[-1], padded), size)
        if mode == "fast":
            return crop_to(self._head(level - 1, nodes[level - 1], padded), size)
        heads = [crop_to(self._head(j, nodes[j], padded), size) for j in range(level)]
        if len(heads) == 1:
            # log_softmax keeps level-1 accurate mode consistent with the other levels.
            return F.log_softmax(heads[0].float(), dim=1)
        return log_mean_softmax(heads, self.head_mixture(level))

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """Logits of every head of the full network, what the training loss uses.

        Returns:
            ``num_levels`` tensors ``(N, num_classes, H, W)`` (heads on ``X^{0,1..L}``), or
            one tensor without deep supervision.
        """
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        padded = x.shape[-2:]
        nodes = self.decoder(self.encode(x, self.num_levels), self.num_levels)
        if not self.deep_supervision:
            return [crop_to(self._head(0, nodes[-1], padded), size)]
        return [crop_to(self._head(j, node, padded), size) for j, node in enumerate(nodes)]

    def count_parameters(self, mode: str = "accurate", level: int | None = None) -> int:
        """Parameters of the sub-network computed by ``forward(x, mode, level)``, heads
        included (fast: head ``level`` only; accurate: heads ``1..level``)."""
        level = self._check(mode, level)
        heads = [0] if not self.deep_supervision else range(level)
        if self.deep_supervision and mode == "fast":
            heads = [level - 1]
        head_params = sum(p.numel() for j in heads for p in self.heads[j].parameters())
        return self.encoder_parameters(level) + self.decoder.count_parameters(level) + head_params


class UNetPlusPlus(NestedUNetBase):
    """U-Net++ of Zhou et al., encoder = U-Net conv blocks, widths ``base_width * 2**i``.

    Args:
        num_classes: output channels (logits).
        base_width: channels of row 0; row ``i`` has ``base_width * 2**i``. 32 gives the
            paper's 32-64-128-256-512 (about 9M parameters).
        deep_supervision: heads on ``X^{0,1..4}`` (prunable); ``False`` gives one head on
            ``X^{0,4}`` (the paper's "UNet++ w/o DS").
        upsampling: ``"transpose"`` or ``"bilinear"``.
        dropout: dropout on ``X^{3,0}`` and ``X^{4,0}`` (train mode only), as in ``unet``.
        in_channels: input channels.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes, H, W)``, any H, W (padded to 16).
    """

    pad_multiple = 16
    head_stride = 1

    def __init__(
        self,
        num_classes: int,
        base_width: int = 16,
        deep_supervision: bool = True,
        upsampling: str = "transpose",
        dropout: float = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = level_widths(base_width, self.num_levels + 1)
        self.deep_supervision = bool(deep_supervision)
        self.normalization = dict(IMAGENET_NORMALIZATION)
        self.encoder = ConvEncoder(in_channels, widths, dropout)
        self.decoder = NestedDecoder(widths, widths[:-1], upsampling)
        num_heads = self.num_levels if self.deep_supervision else 1
        self.heads = nn.ModuleList([nn.Conv2d(widths[0], num_classes, 1) for _ in range(num_heads)])

    def encode(self, x: Tensor, level: int) -> list[Tensor]:
        return self.encoder(x, depth=level)

    def encoder_parameters(self, level: int) -> int:
        return self.encoder.count_parameters(depth=level)


class UNetPlusPlusDS(NestedUNetBase):
    """The nested U-Net++ decoder with deep supervision on an smp encoder.

    The node grid is built over the encoder's features at strides 2, 4, ..., 2**depth
    (row ``i`` at stride ``2**(i+1)``; the stride-1 identity feature is not used), so
    ``num_levels = encoder_depth - 1``. The heads sit on row 0 (stride 2) and their
    logits are bilinearly up-sampled to the input size. A network pruned at level ``k``
    runs the encoder only to depth ``k + 1`` (for smp encoders that honour their depth in
    ``forward``, e.g. ResNet, EfficientNet, MobileNet; ``tu-`` timm encoders always run
    fully, so only the decoder is pruned).

    Args:
        num_classes: output channels (logits).
        encoder: smp encoder name (``"resnet18"``).
        encoder_weights: ``None`` (random init) or e.g. ``"imagenet"``.
        encoder_depth: 3..5; the input is padded to a multiple of ``2**encoder_depth``.
        decoder_channels: widths of rows ``0..num_levels-1`` (shallow to deep); defaults
            to ``(32, 64, 128, 256)`` truncated to ``num_levels``.
        upsampling: ``"transpose"`` or ``"bilinear"``.
    """

    head_stride = 2

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        upsampling: str = "transpose",
    ) -> None:
        super().__init__()
        if not 3 <= encoder_depth <= 5:
            raise ValueError(f"encoder_depth must be in 3..5, got {encoder_depth}")
        self.encoder_name = encoder
        self.encoder_depth = encoder_depth
        self.num_levels = encoder_depth - 1
        self.pad_multiple = 2**encoder_depth
        self.deep_supervision = True
        self.encoder = get_encoder(encoder, depth=encoder_depth, weights=encoder_weights)
        self.normalization = dict(encoder_normalization(encoder, encoder_weights))
        encoder_channels = list(self.encoder.out_channels)[1 : encoder_depth + 1]
        if decoder_channels is None:
            decoder_channels = (32, 64, 128, 256)[: self.num_levels]
        self.decoder = NestedDecoder(encoder_channels, decoder_channels, upsampling)
        self.heads = nn.ModuleList(
            [nn.Conv2d(decoder_channels[0], num_classes, 1) for _ in range(self.num_levels)]
        )
        self._encoder_params_by_level = self._measure_encoder_parameters()

    def _run_encoder(self, x: Tensor, depth: int) -> list[Tensor]:
        # Only as deep as the level needs; see smp_adapter (smp has no public way).
        return encoder_features(self.encoder, x, depth)

    def encode(self, x: Tensor, level: int) -> list[Tensor]:
        features = self._run_encoder(x, level + 1)
        return list(features[1 : level + 2])

    @torch.no_grad()
    def _measure_encoder_parameters(self) -> dict[int, int]:
        """Parameters the encoder touches when run to each level's depth, found by a
        forward pass with hooks on every module (works for any smp encoder)."""
        was_training = self.encoder.training
        self.encoder.eval()
        called: list[nn.Module] = []
        hooks = [
            m.register_forward_hook(lambda module, args, out: called.append(module))
            for m in self.encoder.modules()
        ]
        counts = {}
        try:
            side = 2 * self.pad_multiple
            probe = torch.zeros(1, 3, side, side, device=next(self.encoder.parameters()).device)
            for level in range(1, self.num_levels + 1):
                called.clear()
                self._run_encoder(probe, level + 1)
                params = {id(p): p.numel() for m in called for p in m.parameters(recurse=False)}
                counts[level] = sum(params.values())
        finally:
            for hook in hooks:
                hook.remove()
            self.encoder.train(was_training)
        return counts

    def encoder_parameters(self, level: int) -> int:
        return self._encoder_params_by_level[level]


register_model(
    "unetpp",
    ModelConfig(
        description="U-Net++ (Zhou et al. 2018/2019), written here: nested skips, deep "
        "supervision, pruning L1..L4",
        num_levels=4,
        modes=INFERENCE_MODES,
        width_argument="base_width",
        default_kwargs={"base_width": 16, "deep_supervision": True},
        tiny_kwargs={"base_width": 4, "deep_supervision": True},
    ),
)(UNetPlusPlus)

register_model(
    "unetpp_ds",
    ModelConfig(
        description="the U-Net++ nested decoder with deep supervision and pruning on an smp "
        "encoder",
        num_levels=4,
        modes=INFERENCE_MODES,
        find_unused_parameters=True,
        default_kwargs={"encoder": "resnet18", "encoder_weights": None},
        tiny_kwargs={
            "encoder": "resnet18",
            "encoder_weights": None,
            "encoder_depth": 3,
            "decoder_channels": [8, 16],
        },
    ),
)(UNetPlusPlusDS)
