"""U-Net and U-Net++ from segmentation-models-pytorch, on any smp encoder.

The smp network is built with ``encoder_weights=None``; ImageNet encoder weights then come
from ``segdemo.models.encoders.get_encoder``, so they are found offline the same way for every
model (Lite0 package, local Hugging Face cache, short hub probe, random init with a warning).

The raw smp model is ``model.smp_model`` (also ``model.net``), e.g. for
``model.smp_model.save_pretrained(folder)``. Its saved config says ``encoder_weights=None``:
the encoder weights are in the saved state dict, so reloading needs no download.
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from segdemo.models.encoders import check_encoder, encoder_normalization, get_encoder
from segdemo.models.registry import ModelConfig, register_model
from segdemo.models.unet import crop_to, pad_to_multiple

SMP_ARCHITECTURES: dict[str, type[smp.base.SegmentationModel]] = {
    "unet": smp.Unet,
    "unetpp": smp.UnetPlusPlus,
}
# smp's default decoder widths for depth 5; shallower encoders take the first ``depth``.
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class SmpSegmentationModel(nn.Module):
    """An smp segmentation network behind the segdemo model contract.

    Args:
        architecture: ``"unet"`` (``smp.Unet``) or ``"unetpp"`` (``smp.UnetPlusPlus``).
        num_classes: output channels (logits).
        encoder: any smp encoder name (``resnet18``, ``efficientnet-b0``, ``mobilenet_v2``,
            ``timm-tf_efficientnet_lite0``, ...) or ``tu-<timm model>``.
        encoder_weights: None (random init) or ``"imagenet"``.
        encoder_depth: encoder stages, 3..5; the input is padded to a multiple of
            ``2 ** encoder_depth`` (the encoder's output stride).
        decoder_channels: decoder widths, one per encoder stage; default smp's
            ``(256, 128, 64, 32, 16)`` cut to ``encoder_depth``.
        in_channels: input channels.

    Shape:
        ``forward``: ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` for any H, W.
    """

    supports_pruning = False
    num_levels = 0

    def __init__(
        self,
        architecture: str,
        num_classes: int,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if architecture not in SMP_ARCHITECTURES:
            raise ValueError(
                f"unknown smp architecture {architecture!r}; valid: {', '.join(SMP_ARCHITECTURES)}"
            )
        check_encoder(encoder, encoder_weights)
        if decoder_channels is None:
            decoder_channels = DEFAULT_DECODER_CHANNELS[:encoder_depth]
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"decoder_channels has {len(decoder_channels)} widths but encoder_depth is "
                f"{encoder_depth}: give one width per encoder stage"
            )
        self.net = SMP_ARCHITECTURES[architecture](
            encoder_name=encoder,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=num_classes,
        )
        if encoder_weights is not None:
            # Same encoder as smp built, now with weights resolved offline-safely.
            self.net.encoder = get_encoder(
                encoder, depth=encoder_depth, weights=encoder_weights, in_channels=in_channels
            )
        self.normalization = encoder_normalization(encoder, encoder_weights)
        self.pad_multiple = int(self.net.encoder.output_stride)

    @property
    def smp_model(self) -> smp.base.SegmentationModel:
        """The wrapped smp model (``save_pretrained``, ``encoder``, ``decoder``, ...)."""
        return self.net

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        logits = self.net(pad_to_multiple(x, self.pad_multiple))
        return crop_to(logits, size)

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """The logits the training loss uses: ``[forward(x)]`` (one head)."""
        return [self.forward(x)]


@register_model(
    "smp_unet",
    ModelConfig(
        description="segmentation_models_pytorch's Unet on any smp encoder",
        find_unused_parameters=True,
        default_kwargs={"encoder": "resnet18", "encoder_weights": None},
        tiny_kwargs={"encoder": "resnet18", "encoder_weights": None, "encoder_depth": 3},
    ),
)
def smp_unet(
    num_classes: int,
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    in_channels: int = 3,
) -> SmpSegmentationModel:
    """smp ``Unet`` on ``encoder``; see ``SmpSegmentationModel``."""
    return SmpSegmentationModel(
        "unet", num_classes, encoder, encoder_weights, encoder_depth, decoder_channels, in_channels
    )


@register_model(
    "smp_unetpp",
    ModelConfig(
        description="segmentation_models_pytorch's UnetPlusPlus on any smp encoder",
        find_unused_parameters=True,
        default_kwargs={"encoder": "resnet18", "encoder_weights": None},
        tiny_kwargs={"encoder": "resnet18", "encoder_weights": None, "encoder_depth": 3},
    ),
)
def smp_unetpp(
    num_classes: int,
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    in_channels: int = 3,
) -> SmpSegmentationModel:
    """smp ``UnetPlusPlus`` on ``encoder``; see ``SmpSegmentationModel``."""
    return SmpSegmentationModel(
        "unetpp",
        num_classes,
        encoder,
        encoder_weights,
        encoder_depth,
        decoder_channels,
        in_channels,
    )
