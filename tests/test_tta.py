"""Test-time augmentation: views, their average, and evaluation with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segdemo.tta import TTA, average_probabilities, probabilities


def test_spec_parsing():
    assert TTA.parse(None) == TTA() and not TTA.parse("none").enabled
    tta = TTA.parse("flip,0.75,1.25")
    assert tta.flip and tta.scales == (0.75, 1.0, 1.25) and tta.views == 6
    assert TTA.parse("default") == tta and tta.describe() == "flip,0.75,1.25"
    assert TTA.parse("1.5").scales == (1.0, 1.5) and not TTA.parse("1.5").flip
    with pytest.raises(ValueError, match="'flip' and scale factors"):
        TTA.parse("mirror")
    with pytest.raises(ValueError, match="within 0.25..4"):
        TTA.parse("10")


class _LeftRight(nn.Module):
    """Scores class 1 by the column position: not mirror-symmetric."""

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1]).expand(x.shape[0], 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(ramp), ramp + x[:, :1]], dim=1)


def test_flip_averages_the_prediction_and_its_mirror_mirrored_back():
    model = _LeftRight()
    x = torch.randn(2, 3, 5, 8)
    averaged = average_probabilities(lambda v: {"k": probabilities(model(v))}, x, TTA(flip=True))
    mirrored = probabilities(model(x.flip(-1))).flip(-1)
    expected = (probabilities(model(x)) + mirrored) / 2
    torch.testing.assert_close(averaged["k"], expected)


def test_scaled_views_come_back_at_the_input_size_and_stay_distributions():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 16, 24)
    tta = TTA.parse("flip,0.5,1.5")
    out = average_probabilities(lambda v: {"k": probabilities(conv(v))}, x, tta)["k"]
    assert out.shape == (1, 4, 16, 24)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 16, 24))


def test_evaluation_with_tta_scores_every_setting_and_says_so(tmp_path):
    from segdemo.data import open_dataset
    from segdemo.evaluate import evaluate_per_image
    from segdemo.models import create_model

    model = create_model("unetpp", 19, base_width=4).eval()
    dataset = open_dataset("synthetic", "val", length=3)
    kwargs = dict(input_size=(32, 64), device="cpu", precision="fp32")
    plain = evaluate_per_image(model, dataset, **kwargs)
    augmented = evaluate_per_image(model, dataset, tta=TTA.parse("flip,0.75"), **kwargs)
    assert augmented.settings == plain.settings and augmented.info == {"tta": "flip,0.75"}
    assert augmented.per_image().shape == plain.per_image().shape
    # The same pixels are counted; a model that is not mirror-symmetric predicts otherwise.
    asymmetric = _LeftRight().eval()
    plain = evaluate_per_image(asymmetric, dataset, **kwargs)
    augmented = evaluate_per_image(asymmetric, dataset, tta=TTA(flip=True), **kwargs)
    assert augmented.per_image().sum() == plain.per_image().sum()
    assert not (augmented.per_image() == plain.per_image()).all()


def test_predict_mask_with_tta_is_the_argmax_of_the_averaged_probabilities():
    from segdemo.inference import predict_mask

    model = _LeftRight()
    x = torch.randn(1, 3, 6, 10)
    plain = predict_mask(model, x, "cpu", "fp32")
    flipped = predict_mask(model, x, "cpu", "fp32", TTA(flip=True))
    expected = (probabilities(model(x)) + probabilities(model(x.flip(-1))).flip(-1)) / 2
    assert torch.equal(flipped, expected.argmax(dim=1))
    assert torch.equal(plain, model(x).argmax(dim=1)) and not torch.equal(plain, flipped)
