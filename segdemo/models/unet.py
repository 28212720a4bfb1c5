"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"), written from scratch.

Five levels of two 3x3 conv + BN + ReLU, 2x2 max-pool down, up-sampling (transposed conv
or bilinear + conv) and concatenated skip connections. Widths double per level from
``base_width``: 64 gives the paper's 64-128-256-512-1024, 16 and 32 are sizes that train
on a CPU. Dropout sits on the two deepest encoder levels, as in the classic Keras U-Net.

The blocks here (``ConvBlock``, ``ConvEncoder``, ``UpSample``, ``pad_to_multiple``, ``crop_to``) are reused
by U-Net++ (``unetpp.py``) so both networks are built from the same parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdemo.models.registry import IMAGENET_NORMALIZATION, ModelConfig, register_model

UPSAMPLING_MODES = ("transpose", "bilinear")


def level_widths(base_width: int, num_levels: int = 5) -> list[int]:
    """Channel widths per level: ``base_width * 2**i`` for ``i = 0..num_levels-1``."""
    if base_width < 1:
        raise ValueError(f"base_width must be a positive integer, got {base_width}")
    return [base_width * 2**i for i in range(num_levels)]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x`` at the bottom and right so H and W are multiples of ``multiple``.

    Zero is the dataset mean after normalisation, so the padding looks like flat grey.

    Shape:
        ``(N, C, H, W) -> (N, C, ceil(H / m) * m, ceil(W / m) * m)``
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``size = (H, W)`` of ``x``."""
    return x[..., : size[0], : size[1]]


class _ConcatChannels(torch.autograd.Function):
    """``torch.cat(tensors, dim=1)`` whose backward hands each input a compact gradient.

    ``torch.cat``'s backward returns channel slices of the output's gradient. In
    ``channels_last`` bf16 such a slice is 16 channels out of every pixel's 80, and
    autograd sums the several gradients of a U-Net++ node (one per later node that reads
    it) with element-wise kernels that do not vectorise over short strided runs: 16 ms per
    sum on an 8x16x256x256 batch against 0.6 ms for compact tensors. Copying each slice
    out once (2 ms) makes every later sum a compact one. Values are those of ``torch.cat``.
    """

    @staticmethod
    def forward(ctx, *tensors: Tensor) -> Tensor:
        ctx.channels = [t.shape[1] for t in tensors]
        ctx.formats = [_memory_format(t) for t in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grads, start = [], 0
        for channels, fmt in zip(ctx.channels, ctx.formats, strict=True):
            grads.append(grad.narrow(1, start, channels).contiguous(memory_format=fmt))
            start += channels
        return tuple(grads)


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def concat_channels(tensors: list[Tensor]) -> Tensor:
    """``torch.cat(tensors, dim=1)``, with the compact backward of ``_ConcatChannels``."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _ConcatChannels.apply(*tensors)
    return torch.cat(tensors, dim=1)


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU, keeping the spatial size.

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, H, W)``
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpSample(nn.Module):
    """Double the spatial size: a 2x2 transposed conv, or bilinear up-sampling + 3x3 conv.

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, 2H, 2W)``
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "transpose") -> None:
        super().__init__()
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {mode!r}")
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class ConvEncoder(nn.Module):
    """The U-Net contracting path: a ``ConvBlock`` per level, 2x2 max-pool between levels,
    dropout on the two deepest levels (train mode only).

    Shape:
        ``forward(x, depth)``: ``(N, in_channels, H, W)`` -> ``depth + 1`` tensors, level
        ``i`` of shape ``(N, widths[i], H / 2**i, W / 2**i)``.
    """

    def __init__(self, in_channels: int, widths: list[int], dropout: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                ConvBlock(c_in, c_out)
                for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
            ]
        )
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.dropout_from = len(widths) - 2

    def forward(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """Features of levels ``0..depth`` (default: all); deeper levels are not computed."""
        depth = len(self.blocks) - 1 if depth is None else depth
        features = []
        for level, block in enumerate(self.blocks[: depth + 1]):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            if level >= self.dropout_from:
                x = self.dropout(x)
            features.append(x)
        return features

    def count_parameters(self, depth: int) -> int:
        """Parameters of levels ``0..depth``."""
        return sum(p.numel() for block in self.blocks[: depth + 1] for p in block.parameters())


class UNet(nn.Module):
    """U-Net with five levels (four poolings).

    Args:
        num_classes: output channels (logits).
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``.
        upsampling: ``"transpose"`` (2x2 transposed conv) or ``"bilinear"`` (+ 3x3 conv).
        dropout: dropout probability on the two deepest encoder levels (train mode only).
        in_channels: input channels.

    Shape:
        ``forward``: ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` for any H, W
        (padded inside to a multiple of 16 and cropped back).
    """

    supports_pruning = False
    num_levels = 0
    pad_multiple = 16

    def __init__(
        self,
        num_classes: int,
        base_width: int = 16,
        upsampling: str = "transpose",
        dropout: float = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = level_widths(base_width)
        self.normalization = dict(IMAGENET_NORMALIZATION)
        self.encoder = ConvEncoder(in_channels, widths, dropout)
        # decoder level i (0..3) up-samples level i+1 to width[i] and fuses the skip.
        self.ups = nn.ModuleList([UpSample(widths[i + 1], widths[i], upsampling) for i in range(4)])
        self.decoder = nn.ModuleList([ConvBlock(2 * widths[i], widths[i]) for i in range(4)])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        skips = self.encoder(x)
        x = skips[-1]
        for level in reversed(range(4)):
            x = self.decoder[level](concat_channels([skips[level], self.ups[level](x)]))
        return crop_to(self.head(x), size)

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """The logits the training loss uses: ``[forward(x)]`` (U-Net has one head)."""
        return [self(x)]


register_model(
    "unet",
    ModelConfig(
        description="U-Net (Ronneberger et al. 2015), written here; base_width 64 is the paper's",
        width_argument="base_width",
        default_kwargs={"base_width": 16},
        tiny_kwargs={"base_width": 4},
    ),
)(UNet)
