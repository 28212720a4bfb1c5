"""The road task: binary metrics, and KITTI semantics folders evaluated out of the box."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdemo.cli import main
from segdemo.metrics import metrics_from_confusion
from segdemo.train import TrainConfig, fit


def test_road_iou_precision_recall_and_f1_by_hand():
    # rows = truth (not road, road), columns = prediction
    matrix = torch.tensor([[50, 10], [5, 35]])
    m = metrics_from_confusion(matrix, ["not road", "road"])
    tp, fp, fn = 35, 10, 5
    assert m["per_class_iou"]["road"] == pytest.approx(tp / (tp + fp + fn))
    assert m["per_class_precision"]["road"] == pytest.approx(tp / (tp + fp))
    assert m["per_class_recall"]["road"] == pytest.approx(tp / (tp + fn))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert m["per_class_f1"]["road"] == pytest.approx(2 * precision * recall / (precision + recall))


def _kitti(root, n: int = 5) -> None:
    """A KITTI semantics folder: training/image_2 photos, training/semantic label ids
    (7 = road, 11 = building)."""
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "semantic").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        ids = np.full((24, 80), 11, np.uint8)
        ids[12 + k % 3 :, :] = 7
        photo = np.where(ids[..., None] == 7, 90, 180).astype(np.uint8).repeat(3, 2)
        photo = (photo + rng.integers(0, 20, photo.shape)).astype(np.uint8)
        Image.fromarray(photo).save(root / "training" / "image_2" / f"{k:06d}_10.png")
        Image.fromarray(ids).save(root / "training" / "semantic" / f"{k:06d}_10.png")


def test_a_kitti_folder_evaluates_with_the_road_label_set(tmp_path, capsys):
    out = tmp_path / "road"
    config = TrainConfig(data="synthetic", data_options={"length": 8}, label_set="road",
                         model="unet", model_kwargs={"base_width": 4}, size=(32, 64),
                         batch_size=4, epochs=1, workers=0, val_max_items=2, precision="fp32",
                         out=str(out))  # fmt: skip
    fit(config)
    _kitti(tmp_path / "kitti")
    code = main(["eval", "--ckpt", str(out / "last.safetensors"), "--data",
                 str(tmp_path / "kitti"), "--json", "--resamples", "100"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"]["format"] == "kitti"
    assert set(result["per_class_iou"]) == {"not road", "road"}
    for key in ("per_class_iou", "per_class_precision", "per_class_recall", "per_class_f1"):
        assert 0 <= result[key]["road"] <= 1
    assert main(["eval", "--ckpt", str(out / "last.safetensors"), "--data",
                 str(tmp_path / "kitti")]) == 0  # fmt: skip
    assert "road: IoU" in capsys.readouterr().out


def test_fine_tuning_starts_from_a_checkpoint_of_the_same_model(tmp_path):
    from segdemo.checkpoints import load_checkpoint

    base = dict(data="synthetic", data_options={"length": 8}, label_set="road", model="unet",
                model_kwargs={"base_width": 4}, size=(32, 32), batch_size=4, epochs=1,
                workers=0, val_max_items=2, precision="fp32", lr=1e-9, warmup_steps=0)  # fmt: skip
    fit(TrainConfig(**base, out=str(tmp_path / "a")))
    first = load_checkpoint(tmp_path / "a" / "last.safetensors").model.state_dict()
    # A tiny learning rate: the fine-tuned weights stay next to the ones it started from.
    fit(
        TrainConfig(
            **base, out=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last.safetensors")
        )
    )
    tuned = load_checkpoint(tmp_path / "b" / "last.safetensors").model.state_dict()
    key = "encoder.blocks.0.0.weight"
    torch.testing.assert_close(tuned[key], first[key], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="--init-from .* holds unet"):
        fit(TrainConfig(**{**base, "model_kwargs": {"base_width": 8}}, out=str(tmp_path / "c"),
                        init_from=str(tmp_path / "a" / "last.safetensors")))  # fmt: skip
    with pytest.raises(ValueError, match="road label set, not cityscapes19"):
        fit(TrainConfig(**{**base, "label_set": "cityscapes19"}, out=str(tmp_path / "d"),
                        init_from=str(tmp_path / "a" / "last.safetensors")))  # fmt: skip
