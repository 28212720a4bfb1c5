"""Every kind of photo a user may upload: decoded, or refused with one clear sentence."""

import io

import numpy as np
import pytest
from PIL import Image

from segdemo.images import ImageError, load_image


def _bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "JPEG"), ("RGB", "WEBP"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
     ("P", "PNG"), ("I;16", "PNG"), ("LA", "PNG"), ("1", "PNG")],
)  # fmt: skip
def test_any_mode_becomes_rgb_uint8(mode, fmt):
    img = Image.new(mode, (7, 5))
    arr = load_image(_bytes(img, fmt), name=f"x.{fmt.lower()}")
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8


def test_sixteen_bit_keeps_its_contrast():
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    arr = load_image(_bytes(Image.fromarray(ramp), "PNG"))
    assert arr.min() == 0 and arr.max() == 255


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    arr = load_image(_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[1, 1]) == (255, 255, 255)


def test_exif_orientation_is_respected():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    arr = load_image(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert arr.shape[:2] == (40, 20)


def test_one_pixel_image_is_accepted():
    assert load_image(_bytes(Image.new("RGB", (1, 1)), "PNG")).shape == (1, 1, 3)


def test_not_an_image_is_named():
    with pytest.raises(ImageError, match="notes.txt is not an image"):
        load_image(b"hello", name="notes.txt")


def test_truncated_jpeg_is_named():
    data = _bytes(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="cut.jpg is truncated or corrupt"):
        load_image(data[: len(data) // 2], name="cut.jpg")


@pytest.mark.parametrize("size", [(20000, 20000), (12000, 8000)])
def test_decompression_bomb_is_refused_before_decoding(size):
    # Tiny PNGs that declare 400 and 96 megapixels (Pillow errors on one, warns on the other).
    data = _bytes(Image.new("1", size), "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="bomb.png is too large"):
        load_image(data, name="bomb.png")


def test_reads_from_a_path(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (3, 2)).save(path)
    assert load_image(path).shape == (2, 3, 3)


def test_a_directory_or_a_missing_path_says_what_it_is(tmp_path):
    (tmp_path / "photos.png").mkdir()
    with pytest.raises(ImageError, match=r"^photos.png is a directory, not an image file$"):
        load_image(tmp_path / "photos.png")
    with pytest.raises(ImageError, match=r"gone.jpg does not exist$"):
        load_image(tmp_path / "gone.jpg")


def test_error_maps_equal_their_definition_on_a_hand_made_case():
    from segdemo import viz
    from segdemo.labels import get_label_set

    labels = get_label_set("cityscapes19")
    truth = np.array([[0, 1], [2, 255]])
    model_a = np.array([[0, 1], [13, 5]])  # wrong at (1, 0): called car (13)
    model_b = np.array([[0, 2], [2, 5]])  # wrong at (0, 1): called building (2)
    errors = viz.error_map(model_a, truth, labels)
    assert errors[0, 0].tolist() == list(viz.CORRECT_COLOR)
    assert errors[0, 1].tolist() == list(viz.CORRECT_COLOR)
    assert errors[1, 0].tolist() == list(labels.colors[13])  # the predicted class's colour
    assert errors[1, 1].tolist() == list(viz.IGNORED_COLOR)
    both = viz.comparison_map(model_a, model_b, truth, labels)
    assert both[0, 0].tolist() == list(viz.BOTH_COLOR)
    assert both[0, 1].tolist() == list(viz.ONLY_A_COLOR)
    assert both[1, 0].tolist() == list(viz.ONLY_B_COLOR)
    assert both[1, 1].tolist() == list(viz.IGNORED_COLOR)
    neither = viz.comparison_map(model_b, model_a, np.array([[9, 1], [2, 255]]), labels)
    assert neither[0, 0].tolist() == list(viz.NEITHER_COLOR)
    with pytest.raises(ValueError, match="differ in shape"):
        viz.error_map(model_a, truth[:1], labels)
