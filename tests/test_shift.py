"""Evaluation under a shift (``--shift camera``): a fixed draw per image, the same for
every model, scored exactly like the plain evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segdemo import checkpoints
from segdemo.cli import main
from segdemo.data import open_dataset
from segdemo.evaluate import evaluate_per_image
from segdemo.inference import segment_image
from segdemo.labels import get_label_set
from segdemo.metrics import confusion_per_image
from segdemo.models import create_model
from segdemo.shift import Shift


def _photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_the_camera_shift_is_a_fixed_draw_per_image():
    shift, photo = Shift("camera"), _photo()
    first = shift(photo, 3)
    assert first.shape == photo.shape and first.dtype == np.uint8
    assert not np.array_equal(first, photo)
    # the same image index gives the same photo, in another Shift object too
    assert np.array_equal(Shift("camera")(photo, 3), first)
    assert np.array_equal(shift(photo, 7), Shift("camera")(photo, 7))
    assert not np.array_equal(shift(photo, 7), first)
    with pytest.raises(ValueError, match="unknown shift 'fog'; valid: camera"):
        Shift("fog")


def test_a_shifted_evaluation_scores_the_shifted_photos_as_predict_would():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 19, 1).eval()  # a class per colour: a shift changes it
    model.normalization = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    dataset = open_dataset(
        "synthetic", "val", length=3, native_size=(32, 64), normalization=model.normalization
    )
    kwargs = dict(input_size=(32, 64), device="cpu", precision="fp32")
    shifted = evaluate_per_image(model, dataset, shift="camera", **kwargs)
    plain = evaluate_per_image(model, dataset, **kwargs)
    assert shifted.info == {"shift": "camera"} and plain.info == {}
    assert shifted.per_image().sum() == plain.per_image().sum()  # the same pixels count
    assert not np.array_equal(shifted.per_image(), plain.per_image())
    for position, index in enumerate(shifted.indices):
        image, mask = dataset.read_raw(index)
        pred = segment_image(model, Shift("camera")(image, index), (32, 64), "cpu", "fp32")
        expected = confusion_per_image(
            torch.from_numpy(pred)[None], torch.from_numpy(mask.astype(np.int64))[None], 19
        )[0]
        np.testing.assert_array_equal(shifted.per_image()[position], expected.numpy())


def test_eval_and_compare_take_the_shift_and_say_so(tmp_path, capsys):
    labels = get_label_set("cityscapes19")
    torch.manual_seed(0)
    model = create_model("unet", labels.num_classes, base_width=4).eval()
    meta = checkpoints.build_metadata(model, labels, (32, 64), model.normalization)
    path = str(checkpoints.save_checkpoint(tmp_path / "m.safetensors", model, meta))
    args = ["--data", "synthetic", "--max-items", "3", "--precision", "fp32", "--resamples", "50"]
    assert main(["eval", "--ckpt", path, *args, "--shift", "camera", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shift"] == "camera"
    assert main(["compare", "--ckpt", path, "--ckpt", path, *args, "--shift", "camera"]) == 0
    assert "3 images, shifted: camera, the same for all" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--ckpt", path, *args, "--shift", "fog"])
    assert exc.value.code == 2
    assert "invalid choice: 'fog'" in capsys.readouterr().err
