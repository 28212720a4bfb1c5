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


def label_ids_of(train_ids: np.ndarray) -> np.ndarray:
    """The official Cityscapes label ids of a train-id mask (255 -> 0, unlabeled)."""
    from segdemo.labels import CITYSCAPES_LABELS

    lut = np.zeros(256, np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.train_id < 19 and label.id >= 0:
            lut[label.train_id] = label.id
    return lut[train_ids]


def test_every_encoding_is_detected_named_and_read_alike(truth):
    from segdemo.ground_truth import read_ground_truth

    label_ids = label_ids_of(truth)
    assert label_ids.max() > 18  # sky is 23, car 26: beyond the train ids
    cases = {
        "train_ids": png(Image.fromarray(truth)),
        "label_ids": png(Image.fromarray(label_ids)),
        "colors": png(Image.fromarray(CITYSCAPES19.colorize(truth))),
    }
    for encoding, data in cases.items():
        read = read_ground_truth(data, CITYSCAPES19, name="gt.png")
        assert read.encoding == encoding and (read.mask == truth).all(), encoding
    assert read.description == "Cityscapes colours"
    # A colour mask off by a few levels (JPEG, as in the image pairs): nearest colour.
    noisy = CITYSCAPES19.colorize(truth).astype(np.int16) + 3
    read = read_ground_truth(png(Image.fromarray(noisy.clip(0, 255).astype(np.uint8))),
                             CITYSCAPES19)  # fmt: skip
    assert read.encoding == "nearest_colors" and (read.mask == truth).all()
    # Label ids of classes that are all below 19 are told by the file name.
    low = label_ids_of(np.where(truth == 2, 2, 0).astype(np.uint8))  # road 7, building 11
    assert low.max() < 19
    named = read_ground_truth(png(Image.fromarray(low)), CITYSCAPES19,
                              name="aachen_000000_000019_gtFine_labelIds.png")  # fmt: skip
    assert named.encoding == "label_ids" and set(np.unique(named.mask)) == {0, 2}


def test_a_mask_in_no_encoding_is_refused_in_one_sentence(truth):
    wide = truth.astype(np.uint16) + 1000  # 16-bit values far beyond every id
    with pytest.raises(ImageError, match=r"^odd.png fits no ground-truth format: its values"):
        read_mask(png(Image.fromarray(wide)), CITYSCAPES19, name="odd.png")
    photo = np.random.default_rng(0).integers(0, 256, (8, 12, 3), np.uint8)
    with pytest.raises(ImageError, match=r"^photo.png fits no ground-truth format: \d+% of"):
        read_mask(png(Image.fromarray(photo)), CITYSCAPES19, name="photo.png")
