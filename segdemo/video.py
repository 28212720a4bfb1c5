"""Street videos in, segmented videos out (OpenCV reads MP4/WebM and writes WebM/VP8).

A clip is read frame by frame, sampled down to at most ``max_fps`` frames per second,
segmented by every model, and each frame is composed side by side (the photo and each
model's colour mask, or each model's overlay) with the model's name on its tile. Frames
come from a generator, so a caller can show progress; the result is a WebM (VP8) file,
the format browsers play (OpenCV's MP4 codec, mp4v, does not play in browsers).

Limits (``segdemo.limits``: seconds, bytes, pixels per frame) keep a clip within what a CPU
segments in minutes and what memory holds; a clip beyond them, or a file OpenCV cannot
decode, raises :class:`VideoError` with one sentence naming the file. The length is counted
from the frames decoded, never taken from the container's header alone, and every decoded
frame's size is checked, so a clip whose header understates it stops at the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segdemo import limits, viz
from segdemo.images import resize_image
from segdemo.inference import Segmenter

VIDEO_SUFFIXES = (".mp4", ".webm")
MAX_SECONDS = limits.VIDEO_MAX_SECONDS
MAX_BYTES = limits.VIDEO_MAX_MB * limits.MB
MAX_FRAME_PIXELS = limits.VIDEO_MAX_FRAME_PIXELS
MAX_FPS = limits.VIDEO_FPS_SEGMENTED  # frames segmented per second; faster clips are sampled
TILE_HEIGHT = 360  # height of each tile in the composed frame
MAX_WIDTH = 1920  # the composed frame is at most this wide (tiles shrink to fit)
LAYOUTS = {"masks": "photo | colour masks", "overlay": "overlays"}
OUTPUT_MIME = "video/webm"


class VideoError(ValueError):
    """A clip that cannot be segmented; the message is one sentence for the user."""


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds, as its container says."""

    name: str
    frames: int
    fps: float
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0

    def step(self, max_fps: float = MAX_FPS) -> int:
        """Every ``step``-th frame is segmented, so at most ``max_fps`` frames a second."""
        return max(1, int(np.ceil(self.fps / max_fps - 1e-6))) if self.fps > 0 else 1


@dataclass
class VideoResult:
    """A segmented clip: where it is, what it holds and how fast each model ran."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    seconds: float  # of the source clip that was segmented
    wall_seconds: float  # reading, segmenting, composing and encoding, all together
    models: list[dict] = field(default_factory=list)  # name, setting, fps, ms_per_frame


def _open(path: Path, name: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{name} is not a video segdemo can read (MP4 or WebM)")
    return capture


def _check_frame_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"{name} has {width}x{height} frames, more than the "
            f"{max_pixels / 1e6:.1f} megapixels a frame segdemo takes (4K is 3840x2160)"
        )


def max_frames(fps: float, max_seconds: float = MAX_SECONDS) -> int:
    """The most frames a clip at ``fps`` may hold: ``max_seconds`` of it, to the nearest
    frame."""
    return int(np.floor(max_seconds * fps + 0.5))


def probe_video(
    path: str | Path,
    name: str | None = None,
    max_seconds: float = MAX_SECONDS,
    max_bytes: int = MAX_BYTES,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> VideoInfo:
    """Check that ``path`` is a readable clip within the limits, and describe it.

    The frame size is checked in the header before any frame is decoded, and again on the
    first decoded frame; the length here is the header's (``read_frames`` counts the real
    one as it decodes).

    Raises:
        VideoError: not a video, no frames, longer than ``max_seconds``, larger than
            ``max_bytes`` or frames over ``max_frame_pixels``; the message names the file.
    """
    path = Path(path)
    name = name or path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise VideoError(
            f"{name} is {size / 2**20:.0f} MB; segdemo takes clips up to {max_bytes / 2**20:.0f} MB"
        )
    capture = _open(path, name)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        _check_frame_size(name, width, height, max_frame_pixels)
        ok, first = capture.read()
        if not ok or width < 1 or height < 1:
            raise VideoError(f"{name} holds no frames that can be decoded (truncated or corrupt)")
        _check_frame_size(name, first.shape[1], first.shape[0], max_frame_pixels)
        if not 0 < fps <= limits.VIDEO_MAX_STATED_FPS:
            raise VideoError(f"{name} does not state a usable frame rate ({fps:g} fps)")
        if frames <= 0:  # some containers do not store it: count, up to the limit
            frames = 1
            while capture.grab():
                frames += 1
                if frames / fps > max_seconds:
                    break
    finally:
        capture.release()
    info = VideoInfo(name, frames, fps, width, height)
    if info.seconds > max_seconds + 0.5 / fps:
        raise VideoError(
            f"{name} is {info.seconds:.1f} s long; segdemo takes clips up to {max_seconds:.0f} s"
        )
    return info


def read_frames(
    path: str | Path,
    step: int = 1,
    name: str | None = None,
    fps: float | None = None,
    max_seconds: float = MAX_SECONDS,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> Iterator[np.ndarray]:
    """Every ``step``-th frame of a clip as ``(H, W, 3)`` uint8 RGB; stops quietly where a
    truncated file ends.

    Frames are counted as they are decoded: with ``fps`` given, a clip holding more than
    ``max_seconds`` of frames raises when the first frame past the limit is found, whatever
    its header says. Every returned frame's size is checked against ``max_frame_pixels``.

    Raises:
        VideoError: the clip is longer than the limit, or a frame is too large.
    """
    path = Path(path)
    name = name or path.name
    limit = max_frames(fps, max_seconds) if fps else None
    capture = _open(path, name)
    try:
        index = 0
        while True:
            if limit is not None and index >= limit:
                if capture.grab():  # one frame more than the limit allows
                    raise VideoError(
                        f"{name} holds more than {max_seconds:.0f} s of video ({limit} frames "
                        f"at {fps:g} fps), more than its header states; segdemo takes clips "
                        f"up to {max_seconds:.0f} s"
                    )
                return
            if index % step:
                if not capture.grab():
                    return
            else:
                ok, frame = capture.read()
                if not ok:
                    return
                _check_frame_size(name, frame.shape[1], frame.shape[0], max_frame_pixels)
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def tile_size(
    frame_hw: tuple[int, int],
    tiles: int,
    tile_height: int = TILE_HEIGHT,
    max_width: int = MAX_WIDTH,
) -> tuple[int, int]:
    """``(height, width)`` of one tile: ``tile_height`` tall unless ``tiles`` side by side
    would be wider than ``max_width``; both even (VP8 wants even frame sizes)."""
    height, width = frame_hw
    aspect = width / height
    tile_h = min(tile_height, height, int(max_width / (tiles * aspect)))
    tile_h = max(16, tile_h - tile_h % 2)
    tile_w = max(16, int(round(tile_h * aspect)))
    return tile_h, tile_w - tile_w % 2


def grid_shape(tiles: int) -> tuple[int, int]:
    """``(rows, columns)`` of the composed frame's grid: as square as it can be, never
    taller than wide (2 tiles side by side, 3 or 4 in two rows of two, 5 or 6 in 2 x 3),
    so that each tile keeps a size worth watching instead of a strip of thumbnails."""
    columns = max(1, math.ceil(math.sqrt(tiles)))
    return max(1, math.ceil(tiles / columns)), columns


def _title(tile: np.ndarray, text: str) -> None:
    """The tile's name in white on a dark band at its top-left corner (in place)."""
    scale = max(0.4, tile.shape[0] / 500)
    thickness = 1
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = tile[: h + baseline + 6, : w + 8]
    band[...] = (band.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(tile, text, (4, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip


def compose_frame(
    photo: np.ndarray,
    masks: Sequence[tuple[str, np.ndarray]],
    label_set,
    layout: str = "masks",
    alpha: float = 0.5,
    tile_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """One output frame: the photo and each model's colour mask (``layout="masks"``) or
    each model's overlay (``"overlay"``), each tile titled, all at ``tile_hw``, in the
    grid of :func:`grid_shape` (row by row; a cell left over stays dark).

    Args:
        photo: ``(H, W, 3)`` uint8 frame.
        masks: ``(title, (H, W) train ids)`` per model.
        label_set: the colours (one label set for all models).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    tiles_count = len(masks) + (layout == "masks")
    rows, columns = grid_shape(tiles_count)
    tile_h, tile_w = tile_hw or tile_size(photo.shape[:2], columns)
    small = resize_image(photo, (tile_h, tile_w))
    tiles = []
    if layout == "masks":
        tiles.append(small.copy())
        _title(tiles[-1], "photo")
    for title, mask in masks:
        small_mask = cv2.resize(mask, (tile_w, tile_h), interpolation=cv2.INTER_NEAREST)
        view = "mask" if layout == "masks" else "overlay"
        tile = viz.render_view(small, small_mask, label_set, view, alpha)
        _title(tile, title)
        tiles.append(tile)
    tiles += [np.full_like(small, 24)] * (rows * columns - len(tiles))
    return np.concatenate(
        [np.concatenate(tiles[r * columns : (r + 1) * columns], axis=1) for r in range(rows)],
        axis=0,
    )


def open_writer(path: str | Path, fps: float, frame_hw: tuple[int, int]) -> cv2.VideoWriter:
    """A WebM (VP8) writer; VideoError if this OpenCV build cannot write one."""
    height, width = frame_hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, (width, height))
    if not writer.isOpened():
        writer.release()
        raise VideoError("this OpenCV build cannot write WebM (VP8) video")
    return writer


def segment_frames(
    frames: Iterator[np.ndarray],
    segmenters: Sequence[Segmenter],
    layout: str = "masks",
    alpha: float = 0.5,
    timings: list[list[float]] | None = None,
) -> Iterator[np.ndarray]:
    """Compose each frame with every model's mask; ``timings[m]`` collects model ``m``'s
    milliseconds per frame when given."""
    if not segmenters:
        raise ValueError("segmenting a video needs at least one model")
    label_set = segmenters[0].label_set
    tile_hw = None
    for frame in frames:
        masks = []
        for m, segmenter in enumerate(segmenters):
            mask, ms = segmenter.timed(frame)
            if timings is not None:
                timings[m].append(ms)
            masks.append((segmenter.title, mask))
        if tile_hw is None:
            columns = grid_shape(len(masks) + (layout == "masks"))[1]
            tile_hw = tile_size(frame.shape[:2], columns)
        yield compose_frame(frame, masks, label_set, layout, alpha, tile_hw)


def warm_fps(milliseconds: Sequence[float]) -> float | None:
    """Frames per second from per-frame times, leaving out the first (warm-up) frame."""
    warm = list(milliseconds[1:]) or list(milliseconds)
    return 1000.0 * len(warm) / sum(warm) if warm and sum(warm) > 0 else None


def segment_video(
    source: str | Path,
    out_path: str | Path,
    segmenters: Sequence[Segmenter],
    layout: str = "masks",
    alpha: float = 0.5,
    max_fps: float = MAX_FPS,
    progress: Callable[[int, int], None] | None = None,
    name: str | None = None,
    max_seconds: float = MAX_SECONDS,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    preview: Callable[[int, np.ndarray], None] | None = None,
) -> VideoResult:
    """Segment a clip with every model and write the composed video to ``out_path``.

    Args:
        source: an MP4 or WebM file.
        out_path: where the WebM (VP8) result goes.
        segmenters: the models, each at its inference setting; one label set for all.
        layout: ``"masks"`` (photo | colour masks) or ``"overlay"`` (one overlay per model).
        max_fps: frames segmented per second of video (the clip is sampled down to it).
        progress: called with ``(frames done, frames in all)`` after each frame.
        preview: called with ``(frames done, composed RGB frame)`` after each frame, so
            a page can show the first segmented frames while the rest run.
        name: the clip's name in messages (default: the file name).
        max_seconds, max_frame_pixels: the limits (``segdemo.limits``); the length is
            counted from the decoded frames, and the clip stops with an error past it.

    Returns:
        A :class:`VideoResult`; ``models`` holds each model's achieved frames per second
        (warm: the first frame, which includes warm-up, is left out) and ms per frame.

    Raises:
        VideoError: see :func:`probe_video`; or the clip ends before its first frame.
    """
    labels = {s.label_set.name for s in segmenters}
    if len(labels) > 1:
        raise ValueError(f"models of one video must share a label set, got {sorted(labels)}")
    start = time.perf_counter()
    info = probe_video(source, name, max_seconds=max_seconds, max_frame_pixels=max_frame_pixels)
    step = info.step(max_fps)
    total = -(-info.frames // step)
    out_fps = info.fps / step
    timings: list[list[float]] = [[] for _ in segmenters]
    writer = None
    done = 0
    shape = (0, 0)
    try:
        frames = read_frames(source, step, info.name, info.fps, max_seconds, max_frame_pixels)
        for composed in segment_frames(frames, segmenters, layout, alpha, timings):
            if writer is None:
                shape = composed.shape[:2]
                writer = open_writer(out_path, out_fps, shape)
            writer.write(cv2.cvtColor(composed, cv2.COLOR_RGB2BGR))
            done += 1
            if progress is not None:
                progress(done, max(total, done))
            if preview is not None:
                preview(done, composed)
    finally:
        if writer is not None:
            writer.release()
    if done == 0:
        raise VideoError(f"{info.name} holds no frames that can be decoded (truncated or corrupt)")
    models = []
    for segmenter, ms in zip(segmenters, timings, strict=True):
        fps = warm_fps(ms)
        models.append(
            {
                "name": segmenter.name,
                "setting": segmenter.setting,
                "fps": fps,
                "ms_per_frame": 1000.0 / fps if fps else None,
            }
        )
    return VideoResult(
        path=Path(out_path),
        frames=done,
        fps=out_fps,
        width=shape[1],
        height=shape[0],
        seconds=done * step / info.fps,
        wall_seconds=time.perf_counter() - start,
        models=models,
    )


def write_clip(
    path: str | Path, frames: Iterator[np.ndarray], fps: float, fourcc: str | None = None
) -> Path:
    """Write RGB ``frames`` to ``path``: WebM (VP8) for ``.webm``, MP4 (mp4v) for ``.mp4``."""
    path = Path(path)
    if fourcc is None:
        fourcc = {".webm": "VP80", ".mp4": "mp4v"}.get(path.suffix.lower())
        if fourcc is None:
            raise ValueError(f"{path.name}: write .webm or .mp4")
    writer = None
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps,
                                         (width, height))  # fmt: skip
                if not writer.isOpened():
                    raise VideoError(f"this OpenCV build cannot write {path.suffix} video")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    return path


def drive_clip(
    path: str | Path,
    seconds: float = 4.0,
    fps: float = 10.0,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
) -> Path:
    """The example clip: a camera moving down a synthetic street (see
    ``segdemo.data.synthetic.drive_frames``), written as WebM or MP4 by ``path``'s suffix."""
    from segdemo.data.synthetic import DRIVE_SPEED, drive_frames

    count = max(1, int(round(seconds * fps)))
    speed = DRIVE_SPEED * 10.0 / fps  # the same street speed at any frame rate
    frames = (image for image, _ in drive_frames(count, size[0], size[1], seed, speed))
    return write_clip(path, frames, fps)
