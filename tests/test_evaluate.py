"""Evaluation against hand-computed numbers, at native resolution, image by image, for every
U-Net++ level."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segdemo.evaluate import (
    compare_evaluations,
    evaluate,
    evaluate_per_image,
    evaluation_mask,
)
from segdemo.labels import get_label_set
from segdemo.metrics import confusion_per_image
from segdemo.models import create_model, inference_settings, pruning_levels


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


def test_per_image_matrices_sum_to_the_split_and_score_each_image():
    masks = [
        np.array([[0, 0, 1], [1, 1, 255]]),
        np.array([[1, 0, 0], [0, 255, 255]]),
    ]
    evaluation = evaluate_per_image(
        _ThresholdModel(), _FixedDataset(masks), device="cpu", precision="fp32"
    )
    assert evaluation.default == (None, None) and evaluation.paths == ["item0", "item1"]
    per_image = evaluation.per_image()
    assert per_image.shape == (2, 2, 2)
    assert per_image.tolist() == [[[1, 1], [0, 3]], [[2, 1], [0, 1]]]
    rows = evaluation.image_rows()
    # image 0: not road 1/(1+1), road 3/(3+1); image 1: not road 2/(2+1), road 1/(1+1)
    assert rows[0]["miou"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert rows[0]["pixel_accuracy"] == pytest.approx(4 / 5)
    assert rows[1]["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert [r["index"] for r in rows] == [0, 1]
    summary = evaluation.summary(resamples=200, seed=0, per_image=True)
    assert summary["confusion_matrix"] == [[3, 2], [0, 4]]
    assert summary["counted_classes"] == ["not road", "road"]
    low, high = summary["miou_ci95"]
    assert low <= summary["miou"] <= high
    assert summary["bootstrap"] == {"resamples": 200, "seed": 0}
    assert summary["per_image"] == rows
    assert "miou_ci95" not in evaluation.summary(resamples=0)


def test_every_setting_of_a_unetpp_keeps_its_per_image_matrices():
    torch.manual_seed(0)
    model = create_model("unetpp", 2, base_width=4).eval()
    rng = np.random.default_rng(0)
    dataset = _FixedDataset([rng.integers(0, 2, (16, 32)) for _ in range(3)])
    evaluation = evaluate_per_image(model, dataset, device="cpu", precision="fp32")
    assert evaluation.settings == inference_settings(model)
    assert evaluation.default == ("accurate", pruning_levels(model))
    assert all(
        m.shape == (3, 2, 2) and m.sum() == 3 * 16 * 32 for m in evaluation.confusion.values()
    )
    summary = evaluation.summary(resamples=100)
    fast = summary["per_level"]["fast"]["1"]
    assert fast["miou"] == pytest.approx(evaluation.metrics(("fast", 1), resamples=0)["miou"])
    assert fast["miou_ci95"][0] <= fast["miou"] <= fast["miou_ci95"][1]
    assert evaluation.resolve("fast") == ("fast", pruning_levels(model))
    with pytest.raises(ValueError, match=r"has no fast L9 \(evaluated: fast L1, "):
        evaluation.resolve("fast", 9)


def test_unreadable_images_are_skipped_and_positions_kept():
    class _OneBroken(_FixedDataset):
        on_error = "skip"

        def __init__(self, masks):
            super().__init__(masks)
            self.problems = []

        def read_raw(self, i):
            if i == 1:
                raise ValueError("item1 is not an image")
            return super().read_raw(i)

        def mark_unreadable(self, i, exc):
            self.problems.append(str(exc))

    masks = [np.zeros((2, 3), dtype=np.uint8)] * 3
    evaluation = evaluate_per_image(
        _ThresholdModel(), _OneBroken(masks), device="cpu", precision="fp32", batch_size=2
    )
    assert evaluation.indices == [0, 2] and evaluation.paths == ["item0", "item2"]


def test_compare_evaluations_pairs_models_on_the_same_images():
    rng = np.random.default_rng(1)
    dataset = _FixedDataset([rng.integers(0, 2, (4, 6)) for _ in range(8)])
    evaluation = evaluate_per_image(_ThresholdModel(), dataset, device="cpu", precision="fp32")
    result = compare_evaluations(
        [("a", evaluation, (None, None)), ("b", evaluation, (None, None))], resamples=300
    )
    assert [m["name"] for m in result["models"]] == ["a", "b"] and result["reference"] == "a"
    (comparison,) = result["comparisons"]
    assert comparison["name"] == "b" and comparison["reference"] == "a"
    assert comparison["miou_diff"] == 0.0 and comparison["miou_diff_ci95"] == [0.0, 0.0]
    assert comparison["sentence"].startswith("no clear difference between b and a")

    fewer = evaluate_per_image(
        _ThresholdModel(), dataset, device="cpu", precision="fp32", max_items=5
    )
    with pytest.raises(ValueError, match="same images"):
        compare_evaluations([("a", evaluation, (None, None)), ("b", fewer, (None, None))])


def _distributed_worker(rank: int, world: int, store: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rng = np.random.default_rng(0)
        masks = [rng.integers(0, 2, (4, 6)) for _ in range(3)]
        found = {}
        # Three images over two ranks (interleaved), then one image: rank 1 has none.
        for n in (3, 1):
            evaluation = evaluate_per_image(
                _ThresholdModel(), _FixedDataset(masks[:n]), device="cpu", precision="fp32",
                distributed=True,
            )  # fmt: skip
            found[n] = {"paths": evaluation.paths, "per_image": evaluation.per_image().tolist()}
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(found, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_evaluation_gathers_every_image_even_on_a_rank_without_any(tmp_path):
    import json

    # Spawned from a fresh interpreter: a spawned process re-imports the parent's __main__,
    # which after an app test in this process is a Streamlit page.
    spawn = (
        "import sys; sys.path.insert(0, sys.argv[1]); import torch.multiprocessing as mp; "
        "from test_evaluate import _distributed_worker as w; "
        "mp.spawn(w, args=(2, sys.argv[2], sys.argv[3]), nprocs=2, join=True)"
    )
    here = str(Path(__file__).parent)
    subprocess.run(
        [sys.executable, "-c", spawn, here, str(tmp_path / "store"), str(tmp_path)],
        check=True, timeout=300,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 2, (4, 6)) for _ in range(3)]
    for rank in (0, 1):
        found = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for n in (3, 1):
            alone = evaluate_per_image(
                _ThresholdModel(), _FixedDataset(masks[:n]), device="cpu", precision="fp32"
            )
            assert found[str(n)]["paths"] == alone.paths == [f"item{i}" for i in range(n)]
            assert found[str(n)]["per_image"] == alone.per_image().tolist()


def test_evaluation_mask_shows_the_pixels_evaluation_counted():
    torch.manual_seed(0)
    model = create_model("unetpp", 2, base_width=4).eval()
    rng = np.random.default_rng(0)
    dataset = _FixedDataset([rng.integers(0, 2, (20, 36)) for _ in range(2)])
    dataset.normalization = model.normalization
    evaluation = evaluate_per_image(
        model, dataset, input_size=(16, 32), device="cpu", precision="fp32", mode="fast",
        level=2, batch_size=1,
    )  # fmt: skip
    for i in range(2):
        image, truth = dataset.read_raw(i)
        mask = evaluation_mask(model, image, (16, 32), ("fast", 2), "cpu", "fp32")
        assert mask.shape == truth.shape
        counted = confusion_per_image(
            torch.from_numpy(mask)[None], torch.from_numpy(truth.astype(np.int64))[None], 2
        )[0]
        assert counted.tolist() == evaluation.per_image()[i].tolist()
