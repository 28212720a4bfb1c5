"""Offline-safe smp encoders, their normalisation, and the smp_unet / smp_unetpp models."""

from __future__ import annotations

import json
import socket
import time
import warnings

import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file

from segdemo.models import create_model
from segdemo.models import encoders as encoders_module
from segdemo.models.encoders import (
    PretrainedWeightsUnavailableWarning,
    cached_weights_file,
    encoder_normalization,
    get_encoder,
    hub_reachable,
)
from segdemo.models.registry import IMAGENET_NORMALIZATION

HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache, so a developer's real cache cannot change the outcome."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def _warnings_of(record, category) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, category)]


# --- weights resolution ---------------------------------------------------------------------


def test_offline_fallback_is_quick_with_one_warning(no_network, hf_cache):
    create_model("smp_unet", 3, encoder="resnet18")  # warm-up: lazy imports, first inits
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = create_model("smp_unet", 3, encoder="resnet18", encoder_weights="imagenet")
    elapsed = time.perf_counter() - start

    assert elapsed < 3.0, f"offline fallback took {elapsed:.1f} s"
    fallback = _warnings_of(record, PretrainedWeightsUnavailableWarning)
    assert len(fallback) == 1
    message = str(fallback[0].message)
    assert "resnet18" in message and "randomly initialised" in message and "\n" not in message
    assert no_network == []
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_unreachable_hub_is_probed_briefly_then_falls_back(
    monkeypatch, refused_connections, hf_cache
):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.warns(PretrainedWeightsUnavailableWarning, match="network is unreachable"):
        encoder = get_encoder("resnet18", depth=3, weights="imagenet")
    assert time.perf_counter() - start < 3.0
    assert len(refused_connections) == 1  # one probe, no download attempt
    assert len(encoder(torch.rand(1, 3, 64, 64))) == 4


def test_hub_probe_never_waits_longer_than_its_timeout(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(encoders_module, "_probe_cache", {})

    def hang(*args, **kwargs):  # a DNS lookup or SYN that never answers
        time.sleep(1.5)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1.0


def test_hub_offline_skips_the_probe(no_network):
    assert hub_reachable() is False
    assert no_network == []


def test_weights_in_the_local_hf_cache_are_loaded_offline(no_network, hf_cache):
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = (
        hf_cache
        / f"models--{settings['repo_id'].replace('/', '--')}"
        / "snapshots"
        / settings["revision"]
    )
    snapshot.mkdir(parents=True)
    torch.manual_seed(1)
    cached_state = get_encoder("resnet18").state_dict()
    save_file(cached_state, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text(json.dumps({"mean": [0.4, 0.4, 0.4], "std": [0.2] * 3}))

    assert cached_weights_file("resnet18") == str(snapshot / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsUnavailableWarning)
        encoder = get_encoder("resnet18", weights="imagenet")
    torch.testing.assert_close(encoder.conv1.weight, cached_state["conv1.weight"], rtol=0, atol=0)
    assert encoder_normalization("resnet18", "imagenet") == {"mean": (0.4,) * 3, "std": (0.2,) * 3}
    assert no_network == []


def test_timm_universal_weights_in_the_local_hf_cache_are_loaded_offline(no_network, hf_cache):
    cfg = timm.models.get_pretrained_cfg("resnet18.a1_in1k")
    repo = hf_cache / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(2)
    cached_state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(cached_state, repo / "snapshots" / commit / "model.safetensors")

    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsUnavailableWarning)
        encoder = get_encoder("tu-resnet18.a1_in1k", weights="imagenet")
    torch.testing.assert_close(encoder.model.conv1.weight, cached_state["conv1.weight"])
    assert no_network == []


@pytest.mark.parametrize("weights", ["ImageNet", "ssl", ""])
def test_unknown_weights_are_rejected(weights):
    with pytest.raises(ValueError, match=r"valid weights: None, 'imagenet'"):
        get_encoder("resnet18", weights=weights)
    with pytest.raises(ValueError, match="valid weights"):
        encoder_normalization("resnet18", weights)


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="unknown encoder 'resnet19'.*resnet18"):
        get_encoder("resnet19")
    with pytest.raises(ValueError, match="unknown timm encoder"):
        get_encoder("tu-not_a_timm_model")


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "weights", "expected"),
    [
        ("timm-tf_efficientnet_lite0", "imagenet", HALF),
        ("tu-tf_efficientnet_lite0", "imagenet", HALF),
        ("timm-mobilenetv3_large_100", "imagenet", HALF),  # timm's tf_ port
        ("xception", "imagenet", HALF),
        ("resnet18", "imagenet", IMAGENET_NORMALIZATION),
        ("tu-resnet18", "imagenet", IMAGENET_NORMALIZATION),
        ("timm-tf_efficientnet_lite0", None, IMAGENET_NORMALIZATION),
        ("not-an-encoder", "imagenet", IMAGENET_NORMALIZATION),
    ],
)
def test_encoder_normalization(name, weights, expected, no_network, hf_cache):
    normalization = encoder_normalization(name, weights)
    assert normalization["mean"] == pytest.approx(expected["mean"])
    assert normalization["std"] == pytest.approx(expected["std"])
    assert no_network == []


# --- smp_unet / smp_unetpp --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smp_unet", "smp_unetpp"])
@pytest.mark.parametrize(("encoder", "depth"), [("resnet18", 5), ("mobilenet_v2", 3)])
def test_smp_models_keep_odd_input_sizes(name, encoder, depth):
    model = create_model(
        name, 5, encoder=encoder, encoder_depth=depth, decoder_channels=[16] * depth
    ).eval()
    x = torch.rand(1, 3, 47, 155)
    with torch.no_grad():
        logits = model(x)
        heads = model.forward_heads(x)
    assert logits.shape == (1, 5, 47, 155)
    assert len(heads) == 1 and torch.equal(heads[0], logits)
    assert model.pad_multiple == 2**depth
    assert model.supports_pruning is False


def test_smp_model_attributes_and_export(tmp_path, no_network):
    model = create_model(
        "smp_unetpp", 3, encoder="timm-tf_efficientnet_lite0", decoder_channels=[16] * 5
    )
    assert isinstance(model.smp_model, smp.UnetPlusPlus)
    assert model.smp_model is model.net
    assert model.normalization == IMAGENET_NORMALIZATION  # no ImageNet weights asked for

    model.smp_model.save_pretrained(tmp_path)
    reloaded = smp.from_pretrained(tmp_path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model.eval()(x))
    assert no_network == []


def test_smp_models_reject_bad_arguments():
    with pytest.raises(ValueError, match="valid weights"):
        create_model("smp_unet", 3, encoder_weights="imagenet21k")
    with pytest.raises(ValueError, match="unknown encoder"):
        create_model("smp_unetpp", 3, encoder="resnet-18")
    with pytest.raises(ValueError, match="decoder_channels has 2 widths but encoder_depth is 5"):
        create_model("smp_unet", 3, decoder_channels=[16, 8])


def test_a_checkpoint_from_imagenet_weights_loads_without_fetching_them(
    refused_connections, hf_cache, tmp_path
):
    """A checkpoint holds the fine-tuned encoder: loading it must not look for ImageNet
    weights (no probe, no warning), and keeps the recorded weights and normalisation."""
    from segdemo.checkpoints import build_metadata, load_checkpoint, save_checkpoint
    from segdemo.labels import get_label_set

    torch.manual_seed(0)
    model = create_model("unetpp_ds", 19, encoder="resnet18").eval()
    model.model_kwargs["encoder_weights"] = "imagenet"  # as if fine-tuned from ImageNet
    normalization = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    meta = build_metadata(model, get_label_set("cityscapes19"), (64, 64), normalization)
    path = save_checkpoint(tmp_path / "pretrained.safetensors", model, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsUnavailableWarning)
        loaded = load_checkpoint(path).model
    assert refused_connections == []
    assert loaded.model_kwargs["encoder_weights"] == "imagenet"
    assert loaded.normalization == normalization
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x), model(x))
