"""Inference helpers and the fast path (bf16 autocast + channels_last)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segdemo import runtime
from segdemo.inference import (
    mask_to_size,
    predict_logits,
    predict_mask,
    prepare_model,
    preprocess,
    pruning_kwargs,
    segment_image,
)
from segdemo.models import create_model, list_models

NUM_CLASSES = 3
requires_bf16 = pytest.mark.skipif(
    not runtime.supports_bf16("cpu"), reason="this CPU has no native bf16 (AVX512-BF16/AMX)"
)


def tiny_kwargs(name: str) -> dict:
    if name in ("unet", "unetpp"):
        return {"base_width": 8}
    if name.startswith("smp_") or name == "unetpp_ds":
        return {"encoder_weights": None}
    return {}


def synthetic_batch(
    n: int, height: int, width: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth colour blobs plus noise; the label is the dominant colour channel."""
    generator = torch.Generator().manual_seed(seed)
    blobs = torch.randn(n, 3, height // 8, width // 8, generator=generator)
    smooth = F.interpolate(blobs, size=(height, width), mode="bilinear", align_corners=False)
    noise = 0.3 * torch.randn(n, 3, height, width, generator=generator)
    return smooth + noise, smooth.argmax(dim=1)


def briefly_trained(name: str, steps: int = 15) -> torch.nn.Module:
    """A model with non-degenerate weights: a few Adam steps on the synthetic task."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, **tiny_kwargs(name)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        x, y = synthetic_batch(4, 64, 64, seed=step)
        loss = torch.stack([F.cross_entropy(h, y) for h in model.forward_heads(x)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", num_classes=NUM_CLASSES, base_width=4)


# --- the fast path --------------------------------------------------------------------------


@requires_bf16
@pytest.mark.parametrize("name", list_models())
def test_bf16_fast_path_agrees_with_fp32(name: str) -> None:
    model = briefly_trained(name)
    x, _ = synthetic_batch(4, 64, 128, seed=999)
    model, device, _ = prepare_model(model, "cpu", "fp32")
    configs = [{}]
    if model.supports_pruning:
        configs = [pruning_kwargs(model, "fast", 1), pruning_kwargs(model, "accurate", 4)]
    reference = [predict_mask(model, x, device, "fp32", **kw) for kw in configs]
    model, device, precision = prepare_model(model, "cpu", "bf16")
    assert precision == "bf16"
    for kw, expected in zip(configs, reference, strict=True):
        counts = torch.bincount(expected.flatten(), minlength=NUM_CLASSES)
        assert (counts > 0.05 * expected.numel()).sum() >= 2, f"degenerate predictions {counts}"
        fast = predict_mask(model, x, device, precision, **kw)
        agreement = (fast == expected).float().mean().item()
        assert agreement >= 0.99, f"{name} {kw}: bf16 agrees on {agreement:.2%} of pixels"


@requires_bf16
def test_prepare_model_fast_path_uses_channels_last(tiny_unet) -> None:
    tiny_unet.train()
    model, device, precision = prepare_model(tiny_unet, "cpu", "auto")
    assert (device.type, precision) == ("cpu", "bf16")
    assert not model.training
    conv_weight = model.encoder.blocks[0][0].weight  # 3x3: layouts differ
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv_weight.is_contiguous()


def test_prepare_model_fp32_keeps_layout() -> None:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=NUM_CLASSES, base_width=4).train()
    model, device, precision = prepare_model(model, "cpu", "fp32")
    assert (device.type, precision, model.training) == ("cpu", "fp32", False)
    assert model.head.weight.is_contiguous()


def test_prepare_model_rejects_bad_precision(tiny_unet) -> None:
    with pytest.raises(ValueError, match="precision must be"):
        prepare_model(tiny_unet, "cpu", "fp16-ish")


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=requires_bf16)])
def test_predict_logits_and_mask(tiny_unet, precision: str) -> None:
    model, device, precision = prepare_model(tiny_unet, "cpu", precision)
    x = torch.randn(2, 3, 37, 53)
    logits = predict_logits(model, x, device, precision)
    assert logits.shape == (2, NUM_CLASSES, 37, 53)
    assert logits.dtype == torch.float32
    assert logits.is_inference()
    mask = predict_mask(model, x, device, precision)
    assert mask.shape == (2, 37, 53) and mask.dtype == torch.int64
    torch.testing.assert_close(mask, logits.argmax(1))


def test_predict_logits_rejects_wrong_shape(tiny_unet) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        predict_logits(tiny_unet, torch.randn(3, 32, 32))


def test_predict_passes_pruning_level() -> None:
    torch.manual_seed(0)
    model = create_model("unetpp", num_classes=NUM_CLASSES, base_width=4).eval()
    x = torch.randn(1, 3, 32, 48)
    heads = model.forward_heads(x)
    for level in (1, 3):
        logits = predict_logits(model, x, None, "fp32", **pruning_kwargs(model, "fast", level))
        torch.testing.assert_close(logits, heads[level - 1].detach())


def test_pruning_kwargs_for_models_with_and_without_pruning(tiny_unet) -> None:
    assert pruning_kwargs(tiny_unet) == {}
    with pytest.raises(ValueError, match="cannot be pruned to level 2"):
        pruning_kwargs(tiny_unet, "fast", 2)
    unetpp = create_model("unetpp", num_classes=2, base_width=4)
    assert pruning_kwargs(unetpp, "fast", 2) == {"mode": "fast", "level": 2}
    assert pruning_kwargs(unetpp, "fast") == {"mode": "fast", "level": 4}
    shallow = create_model(
        "unetpp_ds", num_classes=2, encoder_depth=3, decoder_channels=[4, 8]
    )  # an smp encoder of depth 3: two levels, and "fast" alone means level 2
    assert pruning_kwargs(shallow, "fast") == {"mode": "fast", "level": 2}
    with pytest.raises(ValueError, match="levels 1..2, not 4"):
        pruning_kwargs(shallow, "fast", 4)


# --- pre- and post-processing ---------------------------------------------------------------


def test_preprocess_resizes_whole_image_and_normalises() -> None:
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    image[..., 0] = 255
    image[..., 1] = 51
    normalization = {"mean": (0.5, 0.2, 0.0), "std": (0.25, 0.5, 1.0)}
    x = preprocess(image, (20, 40), normalization)
    assert x.shape == (1, 3, 20, 40) and x.dtype == torch.float32
    # (1.0 - 0.5) / 0.25 = 2, (0.2 - 0.2) / 0.5 = 0, (0 - 0) / 1 = 0
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(x, x[:, :, :1, :1].expand_as(x))


def test_preprocess_keeps_layout_left_to_right() -> None:
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    image[:, 8:] = 255  # right half white: stays on the right after a resize
    x = preprocess(image, (4, 4), {"mean": (0, 0, 0), "std": (1, 1, 1)})
    assert x[0, 0, :, :2].max() < 0.2 and x[0, 0, :, 2:].min() > 0.8
    assert preprocess(image, None, {"mean": (0, 0, 0), "std": (1, 1, 1)}).shape == (1, 3, 8, 16)


def test_preprocess_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(
            np.zeros((4, 4, 3), dtype=np.float32), (4, 4), {"mean": (0,) * 3, "std": (1,) * 3}
        )
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(np.zeros((4, 4, 5), dtype=np.uint8), (4, 4), {"mean": (0,) * 3, "std": (1,) * 3})


def test_mask_to_size_is_nearest() -> None:
    mask = torch.tensor([[0, 1], [2, 3]])
    big = mask_to_size(mask, (4, 6))
    expected = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2)
    torch.testing.assert_close(big, expected)
    assert big.dtype == torch.int64
    as_numpy = mask_to_size(mask.numpy().astype(np.uint8), (4, 6))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.uint8
    np.testing.assert_array_equal(as_numpy, expected.numpy())
    batched = mask_to_size(mask[None].repeat(2, 1, 1), (4, 6))
    assert batched.shape == (2, 4, 6)


def test_segment_image_returns_mask_at_photo_size(tiny_unet) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    model, device, precision = prepare_model(tiny_unet, "cpu", "fp32")
    mask = segment_image(model, photo, (32, 48), device, precision)
    assert mask.shape == (50, 70) and mask.dtype == np.uint8
    assert mask.min() >= 0 and mask.max() < NUM_CLASSES


# --- Segmenter and warm latency -----------------------------------------------------------------


def test_segmenter_is_segment_image_at_one_setting() -> None:
    from segdemo.inference import Segmenter
    from segdemo.labels import ROAD

    torch.manual_seed(0)
    model, device, precision = prepare_model(
        create_model("unetpp", num_classes=2, base_width=4), "cpu", "fp32"
    )
    photo = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    run = Segmenter("unetpp", model, (32, 32), ROAD, device, precision, "fast", 2)
    mask = run(photo)
    assert mask.shape == (30, 50) and mask.dtype == np.uint8
    expected = segment_image(model, photo, (32, 32), device, precision, mode="fast", level=2)
    assert (mask == expected).all()
    assert run.setting == "fast L2" and run.title == "unetpp · fast L2"
    assert (run.timed(photo)[0] == mask).all() and run.timed(photo)[1] > 0
    plain = Segmenter("unetpp", model, (32, 32), ROAD, device, precision)
    assert plain.setting == "" and plain.title == "unetpp" and plain.forward_kwargs() == {}
    with pytest.raises(ValueError, match="levels 1..4, not 5"):
        Segmenter("unetpp", model, (32, 32), ROAD, device, precision, "fast", 5)(photo)


def test_warm_latency_leaves_out_each_settings_first_run() -> None:
    from segdemo.inference import WarmLatency

    log = WarmLatency(keep=3)
    assert log.median_ms("L4") is None and not log.is_warm("L4")
    log.record("L4", 2246.0)  # the warm-up: kernels chosen, memory allocated
    assert log.is_warm("L4") and log.median_ms("L4") is None and log.warm_runs("L4") == 0
    log.record("L4", 30.0)
    log.record("L4", 50.0)
    assert log.median_ms("L4") == 40.0
    log.record("L3", 900.0)
    assert log.median_ms("L3") is None and log.median_ms("L4") == 40.0  # per setting
    for ms in (10.0, 10.0, 10.0):
        log.record("L4", ms)
    assert log.median_ms("L4") == 10.0 and log.warm_runs("L4") == 3  # the last `keep` runs


def test_warm_latency_measures_again_when_few_stale_or_disagreeing() -> None:
    from segdemo.inference import WarmLatency

    now, load = [0.0], [0.5]
    log = WarmLatency(keep=9, clock=lambda: now[0], load=lambda: load[0])
    assert log.runs_needed("L4") == 0  # not run yet: its warm-up comes first
    log.record("L4", 2000.0)  # warm-up
    load[0] = 3.0
    log.record("L4", 2100.0)  # one run at a busy moment...
    assert log.runs_needed("L4") == 2  # ...never stands alone
    assert log.latency("L4").busy
    load[0] = 0.5
    times = iter([100.0, 104.0])
    latency = log.measure("L4", lambda: next(times))
    # 2100 among 100 and 104: the spread is wide, so two more runs are asked for.
    assert latency.median_ms == 104.0 and latency.runs == 3 and log.runs_needed("L4") == 2
    for ms in (98.0, 102.0):
        log.record("L4", ms)
    latency = log.latency("L4")
    assert latency.median_ms == 102.0 and log.runs_needed("L4") == 0 and not latency.busy
    assert latency.text() == f"102 ms ± {latency.spread_ms:.0f} (5 warm runs)"
    now[0] = 301.0  # five minutes on: the figure is stale, still shown, measured again
    assert log.median_ms("L4") == 102.0 and log.runs_needed("L4") == 3
    times = iter([50.0, 52.0, 51.0])
    assert log.measure("L4", lambda: next(times)).median_ms == 51.0
