"""Deep supervision without the accuracy tax: head weights, self-distillation, the weight
average (EMA) and accurate mode as a weighted mean of the heads."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from segdemo.checkpoints import CheckpointError, build_metadata, load_checkpoint, save_checkpoint
from segdemo.config import TrainConfig
from segdemo.ema import WeightAverage
from segdemo.evaluate import _predictions
from segdemo.head_mixture import fit_accurate_weights, simplex_grid
from segdemo.labels import get_label_set
from segdemo.losses import SegmentationLoss, distillation_loss, head_weights
from segdemo.models import create_model, get_model_config
from segdemo.study import load_study, run_study
from segdemo.train import fit, read_progress


def tiny_unetpp(**overrides):
    kwargs = {**get_model_config("unetpp").tiny_kwargs, **overrides}
    torch.manual_seed(0)
    return create_model("unetpp", 19, **kwargs)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    values = dict(
        data="synthetic", data_options={"length": 16}, model="unetpp",
        model_kwargs=get_model_config("unetpp").tiny_kwargs, size=(32, 32), batch_size=4,
        epochs=2, lr=3e-3, warmup_steps=0, workers=0, out=str(tmp_path / "run"), log_every=1,
        val_max_items=4, precision="fp32", augment=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


# ----------------------------------------------------------------------------- head weights


def test_head_weights_are_normalised_and_deep_weighs_the_deepest_head_most():
    assert head_weights("uniform", 4) == pytest.approx([0.25] * 4)
    deep = head_weights("deep", 4)
    assert deep == pytest.approx([1 / 15, 2 / 15, 4 / 15, 8 / 15])
    assert sum(deep) == pytest.approx(1.0) and deep == sorted(deep) and deep[-1] == max(deep)
    assert head_weights((1.0, 1.0, 2.0), 3) == pytest.approx([0.25, 0.25, 0.5])
    assert head_weights("deep", 1) == [1.0]
    with pytest.raises(ValueError, match="3 head weights, but the model has 4"):
        head_weights((1.0, 1.0, 2.0), 4)


def test_weighted_heads_loss_is_the_weighted_sum_of_each_heads_loss_in_value_and_gradient():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0, :2] = 255
    heads = [torch.randn(2, 3, 5, 6, dtype=torch.float64) for _ in range(4)]
    weights = (1.0, 2.0, 3.0, 4.0)
    ours = [h.clone().requires_grad_(True) for h in heads]
    loss = SegmentationLoss("ce_dice", 3, head_weights=weights)(ours, target)
    loss.backward()
    single = SegmentationLoss("ce_dice", 3)
    expected, refs = 0.0, []
    for w, h in zip(weights, heads, strict=True):
        ref = h.clone().requires_grad_(True)
        (w / 10 * single([ref], target)).backward()
        expected += w / 10 * float(single([h], target))
        refs.append(ref)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    for a, b in zip(ours, refs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


# -------------------------------------------------------------------------- distillation


def test_distillation_is_zero_when_the_heads_agree_and_the_hand_computed_kl_otherwise():
    target = torch.zeros(1, 1, 2, dtype=torch.int64)
    teacher = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # p = (1/2, 1/2) at both pixels
    assert float(distillation_loss([teacher.clone(), teacher], target, 255, 1.0)) == 0.0
    student = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # q = (3/4, 1/4), (1/2, 1/2)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    # the mean over the two pixels, the second of which agrees
    got = float(distillation_loss([student, teacher], target, 255, 1.0))
    assert got == pytest.approx(kl / 2, rel=1e-6) and got > 0
    # temperature 2: softmax of logits / 2, scaled by T^2
    q = 3**0.5 / (1 + 3**0.5)
    kl2 = 0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q))
    got2 = float(distillation_loss([student, teacher], target, 255, 2.0))
    assert got2 == pytest.approx(4 * kl2 / 2, rel=1e-6)
    # an ignored pixel does not count: only the disagreeing pixel is left
    ignored = torch.tensor([[[0, 255]]])
    assert float(distillation_loss([student, teacher], ignored, 255, 1.0)) == pytest.approx(kl)


def test_distillation_teaches_the_shallow_heads_and_leaves_the_teacher_alone():
    torch.manual_seed(1)
    target = torch.randint(0, 4, (2, 3, 3))
    heads = [torch.randn(2, 4, 3, 3, requires_grad=True) for _ in range(3)]
    distillation_loss(heads, target, 255, 2.0).backward()
    assert heads[-1].grad is None  # detached: no gradient reaches the deepest head
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads[:-1])
    # In the full loss the teacher only gets its own segmentation gradient.
    fresh = [h.detach().clone().requires_grad_(True) for h in heads]
    SegmentationLoss("ce", 4, distill=1.0, temperature=2.0)(fresh, target).backward()
    plain = [h.detach().clone().requires_grad_(True) for h in heads]
    SegmentationLoss("ce", 4)(plain, target).backward()
    torch.testing.assert_close(fresh[-1].grad, plain[-1].grad)
    assert not torch.allclose(fresh[0].grad, plain[0].grad)


# ---------------------------------------------------------------------------- the average


def test_weight_average_moves_each_weight_by_one_minus_decay_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 2))  # BatchNorm: running stats and its counter move
    average.update(model)
    now = model.state_dict()
    for key, value in average.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * start[key] + 0.1 * now[key], msg=key)
        else:
            assert torch.equal(value, now[key]), key
    assert not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(model, decay=1.0)


@pytest.mark.slow
def test_a_run_with_ema_resumes_with_its_average_and_ends_as_an_uninterrupted_one(tmp_path):
    straight = tiny_config(tmp_path / "a", ema=0.5)
    fit(straight)
    config = tiny_config(tmp_path / "b", ema=0.5)

    def stopper(event):
        if event["event"] == "step" and event["step"] == 3:
            (Path(config.out) / "STOP").touch()

    assert fit(config, callbacks=[stopper])["status"] == "stopped"
    stopped = load_checkpoint(Path(config.out) / "last.safetensors", with_optimizer=True)
    assert any(k.startswith("ema/") for k in stopped.train_tensors)
    assert fit(config, resume=True)["status"] == "finished"
    a = load_checkpoint(Path(straight.out) / "last.safetensors", with_optimizer=True)
    b = load_checkpoint(Path(config.out) / "last.safetensors", with_optimizer=True)
    assert a.metadata["saved_weights"] == b.metadata["saved_weights"]
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=1e-4, atol=1e-5)
    for key, value in a.train_tensors.items():
        if key.startswith(("ema/", "trained/")):
            torch.testing.assert_close(value, b.train_tensors[key], rtol=1e-4, atol=1e-5)
    epochs = [e for e in read_progress(config.out) if e["event"] == "epoch"]
    assert all({"val_miou_trained", "val_miou_ema", "saved_weights"} <= e.keys() for e in epochs)
    # the checkpoint holds the weights that scored higher, and says which
    last = epochs[-1]
    chosen = "ema" if last["val_miou_ema"] > last["val_miou_trained"] else "trained"
    assert b.metadata["saved_weights"] == chosen


# --------------------------------------------------------------------- weighted accurate mode


def test_weighted_accurate_mode_is_the_weighted_mean_of_the_heads_probabilities():
    model = tiny_unetpp().eval()
    model.accurate_weights = {4: [0.1, 0.2, 0.3, 0.4], 2: [0.0, 1.0]}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        probs = [F.softmax(h, dim=1) for h in model.forward_heads(x)]
        accurate = model(x, mode="accurate", level=4).exp()
        expected = sum(w * p for w, p in zip([0.1, 0.2, 0.3, 0.4], probs, strict=True))
        torch.testing.assert_close(accurate, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x, mode="accurate", level=2).exp(), probs[1])
        # a level without weights keeps the plain mean
        torch.testing.assert_close(
            model(x, mode="accurate", level=3).exp(), sum(probs[:3]) / 3, rtol=1e-5, atol=1e-6
        )
        # evaluation's one pass over the heads gives the same
        per_level = _predictions(model, x, True, None)
        torch.testing.assert_close(per_level[("accurate", 4)], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(per_level[("accurate", 2)], probs[1], rtol=1e-5, atol=1e-6)


def _save(tmp_path, model, **extra) -> Path:
    meta = build_metadata(
        model, get_label_set("cityscapes19"), (32, 32), model.normalization, **extra
    )
    return save_checkpoint(tmp_path / "m.safetensors", model, meta)


def test_accurate_weights_round_trip_through_a_checkpoint(tmp_path):
    model = tiny_unetpp()
    path = _save(tmp_path, model, accurate_weights={"4": [1.0, 1.0, 1.0, 5.0]})
    loaded = load_checkpoint(path).model
    assert loaded.accurate_weights == {4: pytest.approx([0.125, 0.125, 0.125, 0.625])}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"4": [0.5, 0.5]}, "for level 4 should be 4 non-negative numbers"),
        ({"4": [0.0, 0.0, 0.0, 0.0]}, "with a positive sum"),
        ({"4": [-1.0, 1.0, 1.0, 1.0]}, "should be at least 0"),
        ({"9": [0.1] * 9}, "levels are 2..4"),
        ({"1": [1.0]}, "levels are 2..4"),
        ([0.25, 0.25, 0.25, 0.25], "should be a JSON object"),
    ],
)
def test_accurate_weights_from_a_file_are_checked(tmp_path, weights, message):
    path = _save(tmp_path, tiny_unetpp(), accurate_weights=weights)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "m.safetensors" in str(error.value)


def test_accurate_weights_on_a_model_without_heads_are_refused(tmp_path):
    model = tiny_unetpp(deep_supervision=False)
    path = _save(tmp_path, model, accurate_weights={"4": [0.25] * 4})
    with pytest.raises(CheckpointError, match="no deep-supervision heads"):
        load_checkpoint(path)


def test_a_checkpoint_from_before_these_settings_loads_with_the_plain_mean(tmp_path):
    model = tiny_unetpp()
    old_config = tiny_config(tmp_path).to_dict()
    for name in ("ds_weights", "ds_distill", "ds_temperature", "ema", "accurate_weights"):
        del old_config[name]
    path = _save(tmp_path, model, train_config=old_config)
    ckpt = load_checkpoint(path)
    assert ckpt.model.accurate_weights is None and "saved_weights" not in ckpt.metadata
    config = TrainConfig.from_dict(ckpt.metadata["train_config"])
    assert (config.ds_weights, config.ds_distill, config.ema, config.accurate_weights) == (
        "uniform", 0.0, None, "uniform",
    )  # fmt: skip
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        probs = [F.softmax(h, dim=1) for h in ckpt.model.forward_heads(x)]
        torch.testing.assert_close(
            ckpt.model(x, mode="accurate").exp(), sum(probs) / 4, rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------------------------- choosing the weights


def test_simplex_grid_covers_the_corners_and_sums_to_one():
    points = simplex_grid(4, 4)
    assert len(points) == 35 and all(sum(p) == pytest.approx(1.0) for p in points)
    assert (0.0, 0.0, 0.0, 1.0) in points and (0.25, 0.25, 0.25, 0.25) in points


class _FixedHeads(torch.nn.Module):
    """Two heads: a useless one and one that predicts every label."""

    num_levels = 2

    def forward_heads(self, images):
        labels = images[:, 0].long()
        good = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 5.0
        bad = torch.zeros_like(good)
        bad[:, 2] = 6.0  # always class 2, sure of it
        return [bad, good]


def test_fitted_weights_drop_a_useless_head_and_never_score_below_the_plain_mean_or_fast():
    torch.manual_seed(0)
    items = []
    for _ in range(4):
        mask = torch.randint(0, 3, (8, 8))
        items.append({"image": mask.float().expand(3, 8, 8).clone(), "mask": mask})
    found = fit_accurate_weights(_FixedHeads(), items, pixel_stride=1)
    assert found["weights"]["2"][1] > found["weights"]["2"][0]
    scores = found["scores"]["2"]
    assert scores["chosen"] >= max(scores["plain_mean"], scores["deepest"])
    assert scores["chosen"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ema": 1.5}, "--ema must be smaller than 1, got 1.5"),
        ({"ds_weights": "1,-1,1,1"}, "--ds-weights must be uniform, deep or positive"),
        ({"ds_weights": "deepest"}, "--ds-weights must be"),
        ({"ds_distill": -1.0}, "--ds-distill must be at least 0"),
        ({"ds_temperature": 0.0}, "--ds-temperature must be greater than 0"),
        ({"accurate_weights": "best"}, "--accurate-weights must be one of"),
    ],
)
def test_bad_deep_supervision_settings_name_their_flag(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ds_distill": 0.5}, "--ds-distill need a model with deep-supervision heads"),
        ({"accurate_weights": "fit"}, "--accurate-weights fit need a model"),
        ({"ds_weights": "1,2"}, "--ds-weights need a model"),
    ],
)
def test_deep_supervision_settings_on_a_one_head_model_are_refused(tmp_path, overrides, message):
    config = tiny_config(tmp_path, model="unet", model_kwargs={"base_width": 4}, **overrides)
    with pytest.raises(ValueError, match=message):
        fit(config)


def test_a_list_of_head_weights_must_match_the_heads(tmp_path):
    with pytest.raises(ValueError, match="gives 3 head weights, but the model has 4 heads"):
        fit(tiny_config(tmp_path, ds_weights="1,2,3"))


@pytest.mark.slow
def test_a_run_with_every_option_trains_and_stores_its_accurate_weights(tmp_path):
    config = tiny_config(
        tmp_path, ds_weights="deep", ds_distill=0.5, ds_temperature=2.0, ema=0.9,
        accurate_weights="fit",
    )  # fmt: skip
    assert fit(config)["status"] == "finished"
    events = read_progress(config.out)
    fitted = next(e for e in events if e["event"] == "accurate_weights")
    assert set(fitted["weights"]) == {"2", "3", "4"}
    for name in ("last", "best"):
        ckpt = load_checkpoint(Path(config.out) / f"{name}.safetensors")
        assert set(ckpt.model.accurate_weights) == {2, 3, 4}
        assert ckpt.metadata["saved_weights"] in ("trained", "ema")
        saved = TrainConfig.from_dict(ckpt.metadata["train_config"])
        assert (saved.ds_weights, saved.ds_distill, saved.ema) == ("deep", 0.5, 0.9)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"


# ------------------------------------------------------------------------------ the study

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "deep_supervision.toml"


def test_the_deep_supervision_study_is_study_1s_setting_with_each_models_own_options(tmp_path):
    study = load_study(STUDY)
    first = load_study(REPO / "studies" / "unet_vs_unetpp.toml")
    assert study.seeds == (0, 1, 2) and study.reference_model == "unetpp_nods"
    assert study.train == first.train  # the first study's size, epochs, schedule, loss
    configs = {m.name: study.config("DATA", tmp_path, m, 0) for m in study.models}
    assert configs["unetpp_nods"].model_kwargs["deep_supervision"] is False
    today = configs["unetpp"]
    assert (today.ds_weights, today.ds_distill, today.ema, today.accurate_weights) == (
        "uniform", 0.0, None, "uniform",
    )  # fmt: skip
    everything = configs["unetpp_all"]
    assert (everything.ds_weights, everything.ds_distill, everything.ema) == ("deep", 1.0, 0.999)
    assert all(
        c.accurate_weights == "fit"
        for name, c in configs.items()
        if name not in ("unetpp", "unetpp_nods")
    )
    assert {c.size for c in configs.values()} == {(128, 128)}
    # every claim names a model and a setting the study scores
    for claim in study.claims:
        for side in (claim["a"], claim["b"]):
            assert side.split(":")[0] in configs


def test_a_models_own_training_settings_are_checked(tmp_path):
    text = STUDY.read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("train = { ema = 0.999,", "train = { ema = 1.5,"))
    with pytest.raises(ValueError, match=r"models\[\d\]\.train ema must be smaller than 1"):
        load_study(bad)
    bad.write_text(text.replace("train = { ema = 0.999,", "train = { seed = 3, ema = 0.999,"))
    with pytest.raises(ValueError, match=r"models\[\d\]\.train cannot set seed"):
        load_study(bad)
    bad.write_text(text.replace('name = "unetpp_ema"', 'name = "unetpp_ema"\nepochs = 3'))
    with pytest.raises(ValueError, match="unknown key"):
        load_study(bad)


@pytest.mark.slow
def test_a_tiny_deep_supervision_study_trains_and_reports_every_claim(tmp_path):
    from segdemo.study_report import write_study_report

    study = load_study(STUDY)
    # every training option is in unetpp_all; the remedies alone differ from it only there
    kept = ("unetpp_nods", "unetpp", "unetpp_all")
    claims = [c for c in study.claims if {c["a"].split(":")[0], c["b"].split(":")[0]} <= set(kept)]
    tiny = dataclasses.replace(
        study,
        seeds=(0,),
        train={
            **study.train, "size": [32, 32], "batch_size": 4, "epochs": 1, "warmup_steps": 0,
            "workers": 0, "val_max_items": 2, "precision": "fp32", "data_options": {"length": 8},
        },
        models=tuple(
            dataclasses.replace(m, kwargs={**m.kwargs, "base_width": 4})
            for m in study.models
            if m.name in kept
        ),
        claims=tuple(claims),
    )  # fmt: skip
    out = tmp_path / "study"
    result = run_study(tiny, "synthetic", out, announce=lambda line: None)
    assert result["status"] == "finished"
    assert all(run["state"] == "finished" for run in result["runs"])
    fitted = load_checkpoint(out / "unetpp_all" / "0" / "last.safetensors")
    assert set(fitted.model.accurate_weights) == {2, 3, 4}
    assert fitted.metadata["saved_weights"] in ("trained", "ema")
    assert load_checkpoint(out / "unetpp" / "0" / "last.safetensors").model.accurate_weights is None
    report = write_study_report(
        tiny, out, tmp_path / "docs", max_items=2, repeats=1, log=lambda _: None
    )
    assert not report["pending_claims"]
    assert len(claims) >= 5
    assert [c["claim"] for c in report["claims"]] == [c["claim"] for c in claims]
    levels = {(e["model"], e["mode"], e["level"]) for e in report["levels"]}
    for model in ("unetpp", "unetpp_all"):
        for mode in ("fast", "accurate"):
            assert {(model, mode, k) for k in (1, 2, 3, 4)} <= levels
