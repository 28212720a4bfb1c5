"""What segdemo needs of smp and torch beyond their public APIs, checked against the
installed versions: these tests fail when a release changes it (see the adapters)."""

from __future__ import annotations

import importlib.metadata

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from segdemo import runtime
from segdemo.models import encoders
from segdemo.models.smp_adapter import (
    CHECKED_SMP_VERSION,
    encoder_features,
    imagenet_weights_location,
)


def test_the_installed_smp_is_the_version_the_adapter_was_checked_against():
    assert importlib.metadata.version("segmentation-models-pytorch") == CHECKED_SMP_VERSION


@pytest.mark.parametrize(
    ("name", "deep_module"),
    [("resnet18", "layer4"), ("timm-tf_efficientnet_lite0", "blocks.6")],
)
def test_an_encoder_run_to_a_shallower_depth_gives_the_same_maps_and_skips_the_rest(
    name, deep_module
):
    encoder = smp.encoders.get_encoder(name, depth=5, weights=None).eval()
    called = []
    encoder.get_submodule(deep_module).register_forward_hook(lambda *a: called.append(1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = encoder(x)
        assert called
        called.clear()
        shallow = encoder_features(encoder, x, 3)
    assert len(shallow) == 4 and not called
    for a, b in zip(shallow, full[:4], strict=False):
        torch.testing.assert_close(a, b)
    assert len(encoder(x)) == 6  # the encoder itself is untouched
    with pytest.raises(ValueError, match="built with depth 5"):
        encoder_features(encoder, x, 6)


def test_smp_still_says_where_imagenet_weights_live():
    location = imagenet_weights_location("resnet18")
    assert set(location) == {"repo_id", "revision"} and all(location.values())
    assert imagenet_weights_location("not-an-encoder") is None
    assert smp.encoders.is_equivalent_to_timm_universal("timm-regnetx_002")


@pytest.mark.parametrize(
    ("smp_name", "timm_name"),
    [
        ("timm-tf_efficientnet_lite0", "tf_efficientnet_lite0"),
        ("inceptionv4", "inception_v4"),
        ("inceptionresnetv2", "inception_resnet_v2"),
        ("xception", "legacy_xception"),
        ("dpn68", "dpn68"),
    ],
)
def test_the_offline_normalisation_table_agrees_with_timm(smp_name, timm_name):
    cfg = timm.models.get_pretrained_cfg(timm_name)
    expected = {"mean": tuple(cfg.mean), "std": tuple(cfg.std)}
    got = encoders.encoder_normalization(smp_name, "imagenet")
    for key in ("mean", "std"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6)


def test_the_bf16_probe_answers_a_bool_on_this_torch():
    assert isinstance(runtime.supports_bf16("cpu"), bool)
    assert torch.__version__.split("+")[0] == runtime.CHECKED_TORCH_VERSION
