"""Training, evaluation, predict and the app resize a photo with one policy: equal pixels."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image

from segdemo.data import open_dataset
from segdemo.data.transforms import build_transform
from segdemo.evaluate import _EvalItems
from segdemo.images import resize_image, resize_interpolation
from segdemo.inference import preprocess


def _street_like(height: int = 1024, width: int = 2048) -> np.ndarray:
    """Sharp edges and fine stripes (poles, signs): where aliasing shows."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, ::7] = 255  # one-pixel vertical lines
    image[100:400, 300:310] = 0
    return image


def test_resize_policy_is_area_when_shrinking_and_bilinear_when_enlarging():
    assert resize_interpolation((1024, 2048), (256, 512)) == cv2.INTER_AREA
    assert resize_interpolation((300, 256), (256, 512)) == cv2.INTER_AREA  # one side shrinks
    assert resize_interpolation((128, 128), (256, 256)) == cv2.INTER_LINEAR


def test_training_transforms_resize_like_resize_image():
    image = _street_like()
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    expected = resize_image(image, (256, 512))
    resize = build_transform((256, 512), augment=False)
    assert np.array_equal(resize(image=image, mask=mask)["image"], expected)
    # The augmenting pipeline's crop resize: a crop of the whole frame is the same resize.
    crop = next(
        t for t in build_transform((256, 512), augment=True) if isinstance(t, A.RandomResizedCrop)
    )
    assert np.array_equal(crop.apply(image, crop_coords=(0, 0, 2048, 1024)), expected)
    # ... and differs from the unantialiased bilinear resize training used to do.
    bilinear = cv2.resize(image, (512, 256), interpolation=cv2.INTER_LINEAR)
    assert np.abs(bilinear.astype(int) - expected).mean() > 2


def test_a_large_frame_reaches_the_model_with_equal_pixels_in_training_and_evaluation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = _street_like()
    for k in range(2):  # folder datasets put every 5th item in val; both splits read these
        Image.fromarray(image).save(tmp_path / "images" / f"frame{k}.png")
        Image.fromarray(np.zeros((1024, 2048), np.uint8)).save(tmp_path / "masks" / f"frame{k}.png")
    training = open_dataset(tmp_path, "train", size=(256, 512), augment=False)[0]["image"]
    dataset = open_dataset(tmp_path, "train")
    evaluation = _EvalItems(dataset, (256, 512))[0]
    assert evaluation["mask"].shape == (1024, 2048)  # labels stay at native resolution
    app = preprocess(image, (256, 512), dataset.normalization)[0]
    # The normalisation is float arithmetic in two orders: equal to far below one grey level.
    assert torch.allclose(training, evaluation["image"], atol=1e-5)
    assert torch.equal(evaluation["image"], app)
