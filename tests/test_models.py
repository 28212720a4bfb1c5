"""Model contract tests, parametrised over every registered model, plus U-Net++ pruning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segdemo.models import (
    create_model,
    get_model_config,
    inference_settings,
    list_models,
    pruning_levels,
)
from segdemo.models.registry import count_flops, count_parameters

NUM_CLASSES = 5
PRUNABLE = [name for name in list_models() if get_model_config(name).supports_pruning]
SCRATCH = [name for name in list_models() if get_model_config(name).width_argument]


def build(name: str, **overrides) -> torch.nn.Module:
    """The registered model at its full default depth (every pruning level), at the
    registry's tiny width for scratch models, so the suite runs on 2 CPU cores."""
    torch.manual_seed(0)
    config = get_model_config(name)
    kwargs = dict(config.tiny_kwargs if config.width_argument else config.default_kwargs)
    return create_model(name, num_classes=NUM_CLASSES, **{**kwargs, **overrides})


def images(n: int = 2, height: int = 64, width: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, height, width, generator=generator)


# --- the common contract -------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_backward(name: str) -> None:
    model = build(name).train()
    x = images()
    heads = model.forward_heads(x)
    assert isinstance(heads, list) and heads
    for logits in heads:
        assert logits.shape == (2, NUM_CLASSES, 64, 128)
    target = torch.randint(0, NUM_CLASSES, (2, 64, 128))
    loss = torch.stack([F.cross_entropy(logits, target) for logits in heads]).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [(47, 155), (33, 40)])
def test_odd_input_size_comes_back_at_same_size(name: str, size: tuple[int, int]) -> None:
    model = build(name).eval()
    x = images(1, *size)
    with torch.no_grad():
        out = model(x)
        heads = model.forward_heads(x)
    assert out.shape == (1, NUM_CLASSES, *size)
    assert all(h.shape == (1, NUM_CLASSES, *size) for h in heads)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_contract_attributes(name: str) -> None:
    model = build(name)
    norm = model.normalization
    assert set(norm) >= {"mean", "std"}
    assert len(norm["mean"]) == 3 and len(norm["std"]) == 3
    assert all(s > 0 for s in norm["std"])
    assert isinstance(model.supports_pruning, bool)
    if model.supports_pruning:
        assert pruning_levels(model) == get_model_config(name).num_levels
    else:
        model.eval()
        x = images(1, 32, 64)
        with torch.no_grad():
            heads = model.forward_heads(x)
            assert len(heads) == 1
            torch.testing.assert_close(heads[0], model(x))


def test_scratch_models_use_imagenet_normalization() -> None:
    for name in SCRATCH:
        norm = build(name).normalization
        assert tuple(norm["mean"]) == (0.485, 0.456, 0.406)
        assert tuple(norm["std"]) == (0.229, 0.224, 0.225)


def test_unknown_model_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'unet3000'.*unetpp"):
        create_model("unet3000", num_classes=3)


@pytest.mark.parametrize("name", SCRATCH)
def test_bilinear_upsampling_and_bad_upsampling(name: str) -> None:
    model = build(name, upsampling="bilinear").eval()
    with torch.no_grad():
        assert model(images(1, 40, 56)).shape == (1, NUM_CLASSES, 40, 56)
    with pytest.raises(ValueError, match="upsampling must be one of"):
        build(name, upsampling="nearest")


def test_paper_sizes_at_base_width_32() -> None:
    # Zhou et al. 2019, Table: U-Net 7.76M, UNet++ 9.04M, pruned L1..L3 ~0.1M, 0.5M, 2.2M
    # with filters 32-64-128-256-512.
    unet = create_model("unet", num_classes=1, base_width=32)
    unetpp = create_model("unetpp", num_classes=1, base_width=32)
    assert round(count_parameters(unet) / 1e6, 2) == 7.76
    assert round(count_parameters(unetpp) / 1e6, 2) == 9.05
    sizes = [unetpp.count_parameters(mode="fast", level=k) / 1e6 for k in (1, 2, 3)]
    assert [round(s, 1) for s in sizes] == [0.1, 0.5, 2.2]


# --- U-Net++ pruning ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_output_equals_matching_head(name: str) -> None:
    model = build(name).eval()
    x = images(2, 47, 155, seed=1)
    with torch.no_grad():
        heads = model.forward_heads(x)
        levels = pruning_levels(model)
        assert len(heads) == levels == get_model_config(name).num_levels
        for level in range(1, levels + 1):
            pruned = model(x, mode="fast", level=level)
            torch.testing.assert_close(pruned, heads[level - 1], atol=1e-5, rtol=1e-5)
        # Heads differ from one another, so the comparison above can tell them apart.
        assert not torch.allclose(heads[0], heads[-1], atol=1e-3)


@pytest.mark.parametrize("name", PRUNABLE)
def test_accurate_mode_is_log_mean_softmax_of_heads(name: str) -> None:
    model = build(name).eval()
    x = images(1, 64, 96, seed=2)
    with torch.no_grad():
        heads = model.forward_heads(x)
        level1 = model(x, mode="accurate", level=1)
        torch.testing.assert_close(level1, F.log_softmax(heads[0], dim=1), atol=1e-5, rtol=1e-5)
        deepest = pruning_levels(model)
        for level in (2, deepest):
            expected = torch.stack([F.softmax(h, dim=1) for h in heads[:level]]).mean(0).log()
            accurate = model(x, mode="accurate", level=level)
            torch.testing.assert_close(accurate, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(x), model(x, mode="accurate", level=deepest))


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_flops_rise_with_level(name: str) -> None:
    model = build(name)
    levels = range(1, pruning_levels(model) + 1)
    flops = [count_flops(model, (64, 128), mode="fast", level=k) for k in levels]
    assert flops == sorted(set(flops)), f"FLOPs not strictly rising: {flops}"
    assert flops[0] < 0.25 * flops[-1]
    accurate = [count_flops(model, (64, 128), mode="accurate", level=k) for k in levels]
    assert accurate == sorted(set(accurate))


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_parameter_counts(name: str) -> None:
    model = build(name)
    deepest = pruning_levels(model)
    fast = [model.count_parameters(mode="fast", level=k) for k in range(1, deepest + 1)]
    assert fast == sorted(set(fast)), f"fast-mode parameters not strictly rising: {fast}"
    assert model.count_parameters(mode="accurate", level=deepest) == count_parameters(model)
    assert model.count_parameters() == count_parameters(model)


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_parameter_count_is_what_the_forward_uses(name: str) -> None:
    """The parameters reached by the backward pass of a pruned forward are exactly the
    ones ``count_parameters`` reports, at every (mode, level)."""
    model = build(name).train()
    for mode, level in inference_settings(model):
        model.zero_grad(set_to_none=True)
        model(images(2, 64, 64), mode=mode, level=level).sum().backward()
        used = sum(p.numel() for p in model.parameters() if p.grad is not None)
        assert model.count_parameters(mode=mode, level=level) == used, (mode, level)


def test_a_shallow_encoder_has_fewer_levels_and_the_registry_tiny_build_runs() -> None:
    shallow = create_model("unetpp_ds", 3, encoder_depth=3, decoder_channels=[8, 16])
    assert pruning_levels(shallow) == 2
    assert inference_settings(shallow) == [
        ("fast", 1),
        ("fast", 2),
        ("accurate", 1),
        ("accurate", 2),
    ]
    for name in list_models():
        config = get_model_config(name)
        tiny = create_model(name, 3, **config.tiny_kwargs).eval()
        with torch.no_grad():
            out = tiny(images(1, *config.tiny_input_size))
        assert out.shape == (1, 3, *config.tiny_input_size)


def test_unetpp_ds_runs_the_encoder_only_as_deep_as_needed() -> None:
    model = build("unetpp_ds").eval()
    encoder_flops = count_flops(model.encoder, (64, 128))
    level1 = count_flops(model, (64, 128), mode="fast", level=1)
    assert level1 < 0.7 * encoder_flops, (level1, encoder_flops)


def test_unetpp_without_deep_supervision() -> None:
    model = build("unetpp", deep_supervision=False).eval()
    assert model.supports_pruning is False
    x = images(1, 32, 48)
    with torch.no_grad():
        heads = model.forward_heads(x)
        assert len(heads) == 1
        torch.testing.assert_close(model(x), heads[0])
        torch.testing.assert_close(model(x, mode="fast", level=4), heads[0])
    with pytest.raises(ValueError, match="deep_supervision=False"):
        model(x, level=3)
    assert model.count_parameters() == count_parameters(model)
    assert len(model.heads) == 1


@pytest.mark.parametrize("name", PRUNABLE)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 5}, "level must be in 1..4"),  # the default builds have 4 levels
        ({"level": 0}, "level must be in 1..4"),
        ({"level": 2.0}, "level must be an int"),
        ({"mode": "turbo"}, "mode must be one of"),
    ],
)
def test_bad_mode_or_level_is_a_clear_error(name: str, kwargs: dict, message: str) -> None:
    model = build(name).eval()
    with pytest.raises(ValueError, match=message):
        model(images(1, 32, 32), **kwargs)
    with pytest.raises(ValueError, match=message):
        model.count_parameters(**kwargs)
