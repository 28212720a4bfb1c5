"""Limits: memory per photo bounded by design (uint8 masks, strips) with the same outputs
as the full-size float/int64 reference, and the session budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segdemo import limits, viz
from segdemo.ground_truth import photo_scores, read_mask
from segdemo.images import STRIP_PIXELS, load_image, row_strips
from segdemo.inference import mask_to_size
from segdemo.labels import get_label_set
from segdemo.metrics import ConfusionMatrix

LABELS = get_label_set("cityscapes19")


def reference_mask_to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The earlier resize: the whole mask as float32 through F.interpolate, then int64."""
    x = torch.from_numpy(mask.astype(np.int64))[None, None].float()
    return F.interpolate(x, size=size, mode="nearest-exact")[0, 0].long().numpy()


@pytest.mark.parametrize(
    "small,size", [((8, 16), (37, 61)), ((32, 64), (17, 5)), ((5, 7), (5, 7)), ((9, 3), (400, 1))]
)
def test_mask_to_size_gives_the_reference_pixels_in_uint8(small, size) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 19, small).astype(np.uint8)
    mask[0, 0] = 255
    resized = mask_to_size(mask, size)
    assert resized.dtype == np.uint8 and resized.shape == size
    np.testing.assert_array_equal(resized, reference_mask_to_size(mask, size))


def reference_overlay(image, mask, alpha, hidden=()):
    color = LABELS.colorize(mask).astype(np.float32)
    out = image.astype(np.float32)
    valid = (mask != LABELS.ignore_index) & ~np.isin(mask, list(hidden))
    return (
        np.where(valid[..., None], (1 - alpha) * out + alpha * color, out)
        .round()
        .clip(0, 255)
        .astype(np.uint8)
    )


def test_overlay_highlight_and_counts_in_strips_equal_the_whole_image_reference() -> None:
    rng = np.random.default_rng(1)
    height, width = 3 * STRIP_PIXELS // 2000 + 7, 2000  # more than one strip, a ragged end
    assert len(row_strips(height, width)) > 1
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, 19, (height, width)).astype(np.uint8)
    mask[::7] = 255
    np.testing.assert_array_equal(
        viz.overlay(image, mask, LABELS, 0.4, hidden={2, 5}),
        reference_overlay(image, mask, 0.4, hidden={2, 5}),
    )
    faded = image.astype(np.float32) * (1 - viz.HIGHLIGHT_FADE) + 255 * viz.HIGHLIGHT_FADE
    expected = np.where((mask != 3)[..., None], faded.round(), image).astype(np.uint8)
    np.testing.assert_array_equal(viz.highlight(image, mask, 3), expected)
    np.testing.assert_array_equal(
        viz.class_counts(mask), np.bincount(mask.ravel().astype(np.int64), minlength=256)
    )


def test_photo_scores_in_strips_equal_one_confusion_update() -> None:
    rng = np.random.default_rng(2)
    shape = (STRIP_PIXELS // 1000 + 3, 1000)
    prediction = rng.integers(0, 19, shape).astype(np.uint8)
    truth = rng.integers(0, 19, shape).astype(np.uint8)
    truth[:5] = 255
    whole = ConfusionMatrix(LABELS.num_classes, LABELS.ignore_index)
    whole.update(torch.from_numpy(prediction.astype(np.int64))[None],
                 torch.from_numpy(truth.astype(np.int64))[None])  # fmt: skip
    assert photo_scores(prediction, truth, LABELS) == whole.compute(list(LABELS.names))


def test_a_colour_ground_truth_read_in_strips_matches_from_colors(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    shape = (STRIP_PIXELS // 1500 + 5, 1500)
    ids = rng.integers(0, 19, shape).astype(np.uint8)
    colours = LABELS.colorize(ids)
    colours[:3] = (1, 2, 250)  # far from every label colour: ignored
    Image.fromarray(colours).save(tmp_path / "truth.png")
    expected, _ = LABELS.from_colors(colours, 60.0)
    np.testing.assert_array_equal(read_mask(tmp_path / "truth.png", LABELS), expected)


def test_load_image_copies_in_strips_the_same_pixels(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (STRIP_PIXELS // 700 + 9, 700, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    loaded = load_image(tmp_path / "photo.png")
    assert loaded.flags.writeable
    np.testing.assert_array_equal(loaded, image)


def test_the_photo_pixel_cap_is_declared_once() -> None:
    from segdemo import ground_truth, images

    assert images.MAX_PIXELS == limits.PHOTO_MAX_PIXELS
    assert ground_truth.MAX_PIXELS == limits.PHOTO_MAX_PIXELS


def test_session_budget_refuses_work_over_the_limit_and_frees_it_after_the_window() -> None:
    budget = limits.SessionBudget(limit=100.0, window_s=3600.0)
    budget.charge(60.0, "segmenting a.jpg", now=0.0)
    budget.charge(30.0, "segmenting b.jpg", now=10.0)
    with pytest.raises(limits.BudgetExceeded, match="segmenting c.jpg") as refused:
        budget.charge(20.0, "segmenting c.jpg", now=20.0)
    assert "about 60 min" in str(refused.value)  # a.jpg's 60 frees up at t = 3600
    assert budget.used(now=20.0) == 90.0  # a refused charge is not recorded
    budget.charge(20.0, "segmenting c.jpg", now=3600.0)  # a.jpg has left the window
    assert budget.used(now=3600.0) == 50.0
    with pytest.raises(limits.BudgetExceeded, match="larger than a session's whole budget"):
        budget.charge(101.0, "a huge batch", now=3600.0)


# ---------------------------------------------------------------------------------- video


def understated_webm(path, frames: int, fps: float, claimed_ms: float, side: int = 32):
    """A WebM of ``frames`` frames whose header (Matroska Duration) claims ``claimed_ms``."""
    import struct

    from segdemo.video import write_clip

    pictures = (np.full((side, side, 3), i * 6 % 256, np.uint8) for i in range(frames))
    write_clip(path, pictures, fps)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89")  # the Duration element: id, size byte, big-endian float
    size = data[at + 2] & 0x7F
    fmt = {8: ">d", 4: ">f"}[size]
    data[at + 3 : at + 3 + size] = struct.pack(fmt, claimed_ms)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def one_model():
    from segdemo.inference import Segmenter, prepare_model
    from segdemo.models import create_model

    torch.manual_seed(0)
    model, device, precision = prepare_model(create_model("unet", 19, base_width=4), "cpu", "fp32")
    return [Segmenter("unet", model, (32, 32), LABELS, device, precision)]


def test_a_clip_whose_header_understates_its_length_stops_at_the_cap(tmp_path, one_model) -> None:
    from segdemo.video import VideoError, probe_video, read_frames, segment_video

    clip = understated_webm(tmp_path / "liar.webm", frames=40, fps=1.0, claimed_ms=2000.0)
    info = probe_video(clip)
    assert info.seconds <= 2.5  # the header's claim passes the probe
    done = []
    with pytest.raises(VideoError, match=r"^liar.webm holds more than 30 s of video"):
        segment_video(clip, tmp_path / "out.webm", one_model, progress=lambda d, t: done.append(d))
    assert max(done) == 30  # every frame within the cap, and not one more
    # The same cap on the reader alone, and a clip exactly at the cap is read whole.
    with pytest.raises(VideoError, match="more than 5 s"):
        list(read_frames(clip, fps=1.0, max_seconds=5))
    assert len(list(read_frames(clip, fps=1.0, max_seconds=40))) == 40


def test_video_frames_over_the_pixel_cap_are_refused_before_segmenting(tmp_path, one_model):
    from segdemo.video import VideoError, probe_video, read_frames, segment_video, write_clip

    clip = write_clip(
        tmp_path / "wide.webm", (np.zeros((64, 96, 3), np.uint8) for _ in range(3)), 5
    )
    with pytest.raises(VideoError, match=r"^wide.webm has 96x64 frames, more than the"):
        probe_video(clip, max_frame_pixels=64 * 64)
    with pytest.raises(VideoError, match=r"^wide.webm has 96x64 frames"):
        segment_video(clip, tmp_path / "o.webm", one_model, max_frame_pixels=64 * 64)
    assert not (tmp_path / "o.webm").exists()
    # A frame larger than its header said is caught as it is decoded.
    with pytest.raises(VideoError, match=r"^wide.webm has 96x64 frames"):
        next(read_frames(clip, max_frame_pixels=64 * 64))
    assert probe_video(clip).width == 96  # within the real cap
    assert limits.VIDEO_MAX_FRAME_PIXELS == 3840 * 2160


def test_the_server_config_states_the_photo_upload_limit() -> None:
    import tomllib
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"
    server = tomllib.loads(config.read_text())["server"]
    assert server["maxUploadSize"] == limits.PHOTO_MAX_MB
