"""Videos: the synthetic drive, reading and checking clips, segmenting them into WebM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdemo.data.synthetic import BUILDING, CAR, ROAD, SIDEWALK, SKY, drive_frames
from segdemo.inference import Segmenter, prepare_model
from segdemo.labels import CITYSCAPES19
from segdemo.models import create_model
from segdemo.video import (
    VideoError,
    compose_frame,
    drive_clip,
    probe_video,
    read_frames,
    segment_video,
    tile_size,
    warm_fps,
    write_clip,
)


def test_drive_moves_down_one_street():
    frames = list(drive_frames(6, 64, 128, seed=3))
    again = list(drive_frames(3, 64, 128, seed=3))  # frame t depends on (seed, t) only
    for (image, ids), (image2, ids2) in zip(frames[:3], again, strict=True):
        assert (image == image2).all() and (ids == ids2).all()
    image, ids = frames[0]
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8 and ids.shape == (64, 128)
    assert {ROAD, SIDEWALK, BUILDING, SKY, CAR} <= set(np.unique(ids).tolist())
    # The camera moves: every frame differs from the one before, in labels too.
    for (a, la), (b, lb) in zip(frames, frames[1:], strict=False):
        assert (la != lb).mean() > 0.002 and np.abs(a.astype(int) - b).mean() > 1
    other = next(drive_frames(1, 64, 128, seed=4))[1]
    assert (other != ids).mean() > 0.05  # another seed, another street


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Six frames (0.6 s at 10 fps) of the drive at 64x128, as WebM."""
    return drive_clip(tmp_path_factory.mktemp("clips") / "drive.webm", 0.6, 10, (64, 128))


def test_clip_is_probed_and_read(clip, tmp_path):
    info = probe_video(clip)
    assert (info.frames, info.fps, info.width, info.height) == (6, 10.0, 128, 64)
    assert info.seconds == pytest.approx(0.6) and info.step(10) == 1 and info.step(4) == 3
    frames = list(read_frames(clip))
    assert len(frames) == 6 and frames[0].shape == (64, 128, 3)
    assert len(list(read_frames(clip, step=4))) == 2
    # MP4 reads the same way.
    mp4 = write_clip(tmp_path / "drive.mp4", iter(frames), 10)
    assert probe_video(mp4).frames == 6 and len(list(read_frames(mp4))) == 6


def test_bad_clips_get_one_sentence(clip, tmp_path):
    with pytest.raises(
        VideoError, match=r"^drive.webm is 0.6 s long; segdemo takes clips up to 0 s$"
    ):
        probe_video(clip, max_seconds=0.4)
    with pytest.raises(VideoError, match=r"^drive.webm is 0 MB; segdemo takes clips up to 0 MB$"):
        probe_video(clip, max_bytes=100)
    junk = tmp_path / "dashcam.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    with pytest.raises(VideoError, match=r"^dashcam.mp4 "):
        probe_video(junk)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(clip.read_bytes()[:200])
    with pytest.raises(VideoError, match=r"^cut.webm "):
        probe_video(cut)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"^empty.mp4 "):
        probe_video(empty)


@pytest.fixture(scope="module")
def segmenters():
    torch.manual_seed(0)
    unet, device, precision = prepare_model(create_model("unet", 19, base_width=4), "cpu", "fp32")
    unetpp, _, _ = prepare_model(create_model("unetpp", 19, base_width=4), "cpu", "fp32")
    return [
        Segmenter("unet", unet, (32, 64), CITYSCAPES19, device, precision),
        Segmenter("unetpp", unetpp, (32, 64), CITYSCAPES19, device, precision, "fast", 2),
    ]


def test_segment_video_side_by_side(clip, segmenters, tmp_path):
    calls, previews = [], []
    out = tmp_path / "out.webm"
    result = segment_video(clip, out, segmenters, progress=lambda d, t: calls.append((d, t)),
                           preview=lambda d, frame: previews.append((d, frame)))  # fmt: skip
    assert calls == [(k, 6) for k in range(1, 7)]
    assert (result.frames, result.fps, result.seconds) == (6, 10.0, pytest.approx(0.6))
    # Three tiles (photo, unet, unetpp) in a 2 x 2 grid, each at a watchable size.
    tile_h, tile_w = tile_size((64, 128), 2)
    assert (result.height, result.width) == (2 * tile_h, 2 * tile_w)
    # Each segmented frame is offered for a preview as soon as it is composed.
    assert [d for d, _ in previews] == list(range(1, 7))
    assert previews[0][1].shape == (result.height, result.width, 3)
    assert [(m["name"], m["setting"]) for m in result.models] == [("unet", ""),
                                                                   ("unetpp", "fast L2")]  # fmt: skip
    assert all(m["fps"] > 0 and m["ms_per_frame"] > 0 for m in result.models)
    back = probe_video(out)
    assert (back.frames, back.fps, back.width, back.height) == (6, 10.0, result.width,
                                                                result.height)  # fmt: skip
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # WebM (Matroska)
    # The composed frame: photo and both colour masks (VP8 is lossy: close).
    first = next(read_frames(clip))
    expected = compose_frame(first, [(s.title, s(first)) for s in segmenters], CITYSCAPES19)
    decoded = next(read_frames(out))
    assert np.abs(decoded.astype(int) - expected).mean() < 12


def test_segment_video_overlays_sampled_down(clip, segmenters, tmp_path):
    result = segment_video(clip, tmp_path / "o.webm", segmenters[:1], "overlay", max_fps=5)
    assert (result.frames, result.fps) == (3, 5.0)  # every second frame
    assert result.width == tile_size((64, 128), 1)[1]
    with pytest.raises(ValueError, match="layout must be one of"):
        compose_frame(np.zeros((8, 8, 3), np.uint8), [], CITYSCAPES19, "grid")


def test_grid_is_as_square_as_it_can_be_and_never_taller_than_wide():
    from segdemo.video import grid_shape

    shapes = {tiles: grid_shape(tiles) for tiles in range(1, 8)}
    assert shapes == {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2), 5: (2, 3), 6: (2, 3),
                      7: (3, 3)}  # fmt: skip


def test_tiles_fit_the_width_and_stay_even():
    assert tile_size((1080, 1920), 4, tile_height=288, max_width=1920) == (270, 480)
    h, w = tile_size((720, 1281), 3)
    assert h % 2 == 0 and w % 2 == 0 and 3 * w <= 1920
    assert tile_size((100, 200), 2) == (100, 200)  # never enlarged


def test_warm_fps_leaves_out_the_first_frame():
    assert warm_fps([2000.0, 100.0, 100.0]) == pytest.approx(10.0)
    assert warm_fps([50.0]) == pytest.approx(20.0)
    assert warm_fps([]) is None
