"""Evaluation against hand-computed numbers, at native resolution, for every U-Net++ level."""

import numpy as np
import pytest
import torch
from torch import nn

from segdemo.evaluate import evaluate
from segdemo.labels import get_label_set
from segdemo.models import create_model


class _FixedDataset(torch.utils.data.Dataset):
    """The dataset protocol evaluation reads: ``read_raw`` (uint8 photo, train-id mask)."""

    normalization = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    def __init__(self, masks, size=None):
        self.masks = masks
        self.label_set = get_label_set("road")
        self.size = size

    def __len__(self):
        return len(self.masks)

    def item_path(self, i):
        return f"item{i}"

    def read_raw(self, i):
        mask = np.asarray(self.masks[i], dtype=np.uint8)
        # The "image" carries the class to predict in channel 0, so the model below is exact.
        image = np.zeros((*mask.shape, 3), dtype=np.uint8)
        image[..., 0] = 255 * (mask == 1)
        return image, mask


class _ThresholdModel(nn.Module):
    """Predicts road where channel 0 > 0.5, except the left column, which it calls road."""

    def forward(self, x):
        road = (x[:, 0] > 0.5).float()
        road[..., 0] = 1.0
        return torch.stack([1 - road, road], 1) * 10


def test_evaluate_equals_a_hand_computed_confusion_matrix():
    masks = [
        np.array([[0, 0, 1], [1, 1, 255]]),
        np.array([[1, 0, 0], [0, 255, 255]]),
    ]
    # Predictions: truth everywhere, but column 0 is always road (1).
    # image 1 (5 labelled px): (0,0) true 0 -> pred 1; 1 not-road right, 3 road right.
    # image 2 (4 labelled px): (1,0) true 0 -> pred 1; 2 not-road right, 1 road right.
    # Confusion (rows truth): not-road 3 right + 2 called road; road 4 right.
    result = evaluate(_ThresholdModel(), _FixedDataset(masks), device="cpu", precision="fp32")
    assert result["confusion_matrix"] == [[3, 2], [0, 4]]
    assert result["per_class_iou"]["not road"] == pytest.approx(3 / 5)  # 3 / (3 + 0 + 2)
    assert result["per_class_iou"]["road"] == pytest.approx(4 / 6)  # 4 / (4 + 2 + 0)
    assert result["miou"] == pytest.approx((3 / 5 + 4 / 6) / 2)
    assert result["pixel_accuracy"] == pytest.approx(7 / 9)
    assert result["per_class_precision"]["road"] == pytest.approx(4 / 6)
    assert result["per_class_recall"]["not road"] == pytest.approx(3 / 5)
    assert result["images"] == 2


def test_native_resolution_scores_the_labels_not_a_resized_copy():
    masks = [np.tile(np.array([[0, 1]]), (4, 8))]  # 4x16 stripes: resizing would blur them
    result = evaluate(
        _ThresholdModel(), _FixedDataset(masks), input_size=(4, 16), device="cpu", precision="fp32"
    )
    assert result["confusion_matrix"] == [[28, 4], [0, 32]]


def test_per_level_table_matches_evaluating_each_pruned_network():
    torch.manual_seed(0)
    model = create_model("unetpp", 2, base_width=4).eval()
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 2, (16, 32)) for _ in range(3)]
    dataset = _FixedDataset(masks)
    table = evaluate(model, dataset, device="cpu", precision="fp32")["per_level"]
    for mode in ("fast", "accurate"):
        for level in (1, 2, 3, 4):
            single = evaluate(
                model, dataset, device="cpu", precision="fp32", mode=mode, level=level
            )
            assert single["miou"] == pytest.approx(table[mode][str(level)]["miou"], abs=1e-6)


def test_levels_on_a_model_without_pruning_are_refused():
    with pytest.raises(ValueError, match="no pruning levels"):
        evaluate(_ThresholdModel(), _FixedDataset([np.zeros((2, 2))]), mode="fast", level=1)
