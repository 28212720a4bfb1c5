"""A user's ground-truth mask: every encoding the loaders read, or one sentence."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from segdemo.batch import mask_png
from segdemo.ground_truth import photo_scores, read_mask
from segdemo.images import ImageError
from segdemo.labels import CITYSCAPES19


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def truth() -> np.ndarray:
    ids = np.zeros((8, 12), np.uint8)
    ids[:3] = 10  # sky
    ids[3:5, :6] = 2  # building
    ids[5:, 4:8] = 13  # car
    ids[0, 0] = 255  # unlabelled
    return ids


def test_train_ids_colours_and_palette_masks_read_alike(truth):
    as_ids = read_mask(png(Image.fromarray(truth)), CITYSCAPES19)
    assert (as_ids == truth).all() and as_ids.dtype == np.uint8
    colours = read_mask(png(Image.fromarray(CITYSCAPES19.colorize(truth))), CITYSCAPES19)
    assert (colours == truth).all()  # black -> unlabelled, as in Cityscapes colour masks
    rgba = Image.fromarray(CITYSCAPES19.colorize(truth)).convert("RGBA")
    assert (read_mask(png(rgba), CITYSCAPES19) == truth).all()
    assert (read_mask(mask_png(truth, CITYSCAPES19), CITYSCAPES19) == truth).all()  # segdemo's own


def test_values_outside_the_label_set_become_ignore(truth):
    odd = truth.copy()
    odd[7, 0] = 40
    read = read_mask(png(Image.fromarray(odd)), CITYSCAPES19)
    assert read[7, 0] == 255 and (read[:7] == truth[:7]).all()
    far = CITYSCAPES19.colorize(truth)
    far[7, 11] = (255, 255, 255)  # no label colour is near white
    assert read_mask(png(Image.fromarray(far)), CITYSCAPES19)[7, 11] == 255


def test_size_is_checked_against_the_photo(truth):
    data = png(Image.fromarray(truth))
    assert read_mask(data, CITYSCAPES19, size=(16, 24)).shape == (16, 24)  # same aspect: scaled
    with pytest.raises(ImageError, match=r"^gt.png is 12x8 but the photo is 10x10$"):
        read_mask(data, CITYSCAPES19, name="gt.png", size=(10, 10))


def test_bad_files_get_one_sentence(truth):
    with pytest.raises(ImageError, match=r"^notes.png is not an image"):
        read_mask(b"not a mask", CITYSCAPES19, name="notes.png")
    data = png(Image.fromarray(np.random.default_rng(0).integers(0, 19, (64, 64), np.uint8)))
    with pytest.raises(ImageError, match=r"^cut.png is truncated or corrupt"):
        read_mask(data[: len(data) // 2], CITYSCAPES19, name="cut.png")


def test_photo_scores_by_hand(truth):
    prediction = truth.copy()
    prediction[prediction == 255] = 10
    perfect = photo_scores(prediction, truth, CITYSCAPES19)
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    prediction[5:, 4:8] = 0  # the car called road
    scores = photo_scores(prediction, truth, CITYSCAPES19)
    labelled = int((truth != 255).sum())
    assert scores["pixel_accuracy"] == pytest.approx((labelled - 12) / labelled)
    # sky 1, building 1, car 0, road 36 / (36 + 12): the mean of four classes.
    assert scores["miou"] == pytest.approx((1 + 1 + 0 + 36 / 48) / 4)
    with pytest.raises(ValueError, match="prediction is"):
        photo_scores(prediction[:4], truth, CITYSCAPES19)
