"""Helpers of the Segment page: photos in, masks and pictures out (thin, no page layout).

Photos are decoded once per upload (``st.cache_resource`` keyed by the upload's file id)
and never mutated; each keeps a display copy (at most ``DISPLAY_MAX_SIDE`` pixels on its
long side) for the grid and a larger one for the before/after view, so the browser gets
light images while masks and downloads stay at full size.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import html
import io
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from segdemo import limits, viz
from segdemo.batch import mask_png as _mask_png
from segdemo.batch import png_bytes
from segdemo.engine import engine_of
from segdemo.geometry import DEFAULT_POLICY, TrainingFrames
from segdemo.ground_truth import GroundTruth, photo_scores, read_ground_truth
from segdemo.images import ImageError, load_image, pixel_count
from segdemo.inference import Latency, Segmenter, WarmLatency
from segdemo.tta import DEFAULT_SPEC as DEFAULT_TTA
from segdemo.tta import NO_TTA, TTA
from segdemo.video import MAX_BYTES as MAX_VIDEO_BYTES
from segdemo.video import VideoError, VideoResult, drive_clip, probe_video, segment_video
from segdemo_app.common import literal_markdown

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp"]
MASK_TYPES = ["png"]
VIDEO_TYPES = ["mp4", "webm"]
DISPLAY_MAX_SIDE = 1024
LARGE_MAX_SIDE = 1600  # the before/after view spans the page
MIN_PHOTO_SIDE = limits.PHOTO_MIN_SIDE  # icons and 1x1 pixels cannot show a street scene
EXAMPLE_COUNT = 4
EXAMPLE_SIZE = (256, 512)  # (H, W) of the synthetic gallery scenes
EXAMPLE_CLIP_SECONDS = 4.0
EXAMPLE_CLIP_FPS = 10.0
MASK_CACHE_BYTES = limits.MASK_CACHE_MB * limits.MB  # masks kept per session (uint8)
PHOTO = "photo"  # the before/after view's choice of the photo itself

# The Segment page's own session-state keys with their initial values (the shared ones
# live in ``common.STATE_DEFAULTS``); ``init_segment_state`` sets them once per session.
SEGMENT_STATE_DEFAULTS: dict[str, object] = {
    "segment_source": "photos",  # photos | camera | dataset | video
    "segment_hidden": [],  # class names left out of overlays and colour masks
    "segment_highlight": None,  # class name that stands out, or None
    "segment_left": PHOTO,  # before/after: the photo or a checkpoint path
    "segment_right": None,  # before/after: a checkpoint path (None = the first chosen)
    "segment_dataset_index": 0,
    "segment_refresh": False,  # a panel's setting changed: redraw what depends on it
    "segment_batch": None,  # {"key", "zip", "problems"} of the last batch download
    "segment_video_layout": "masks",
    "segment_video_example": False,  # the example clip stands in for an upload
    "segment_video": None,  # {"key", "data", "result"} of the last segmented clip
    "segment_budget": None,  # the session's SessionBudget, made on first use
    "segment_settled": set(),  # (setting, photo key) whose latency was timed until it held
    "segment_geometry": DEFAULT_POLICY,  # how photos are sized for the models
}


def init_segment_state() -> None:
    for key, value in SEGMENT_STATE_DEFAULTS.items():
        st.session_state.setdefault(key, copy.copy(value))
    if st.session_state["segment_budget"] is None:
        st.session_state["segment_budget"] = limits.SessionBudget()


def session_budget() -> limits.SessionBudget:
    """This session's processing budget (``segdemo.limits.SessionBudget``)."""
    init_segment_state()
    return st.session_state["segment_budget"]


@st.cache_resource(show_spinner=False)
def server_slots() -> threading.BoundedSemaphore:
    """The server's job slots (``limits.SERVER_MAX_JOBS``), shared by every session."""
    return threading.BoundedSemaphore(limits.SERVER_MAX_JOBS)


@contextlib.contextmanager
def job_slot(what: str, wait_s: float = limits.SERVER_WAIT_SECONDS):
    """Hold one of the server's job slots while segmenting ``what``.

    Raises:
        ServerBusy: no slot freed up within ``wait_s`` seconds.
    """
    slots = server_slots()
    if not slots.acquire(timeout=wait_s):
        raise limits.ServerBusy(
            f"The server is busy with other visitors' work, so {what} was not started; "
            "try again in a minute."
        )
    try:
        yield
    finally:
        slots.release()


def megapixels(image: np.ndarray) -> float:
    return image.shape[0] * image.shape[1] / 1e6


@dataclass(frozen=True)
class Photo:
    """A decoded photo: ``image`` at full size, ``display`` and ``large`` scaled for the
    browser, and its ground truth when known (train ids of ``truth_label_set``, read from
    ``truth_source``: an upload's encoding, or where it came from)."""

    key: str
    name: str
    image: np.ndarray = field(repr=False)
    display: np.ndarray = field(repr=False)
    large: np.ndarray = field(repr=False)
    truth: np.ndarray | None = field(default=None, repr=False)
    truth_label_set: str | None = None
    truth_source: str | None = None
    pixel_aspect: float = 1.0  # 2 for a pairs image (a 2:1 frame squeezed square)

    @property
    def size_text(self) -> str:
        height, width = self.image.shape[:2]
        return f"{width}×{height}"

    @property
    def stem(self) -> str:
        return Path(self.name).stem or "photo"

    def with_truth(self, truth: np.ndarray, label_set_name: str, source: str) -> Photo:
        return Photo(
            self.key, self.name, self.image, self.display, self.large, _frozen(truth),
            label_set_name, source, self.pixel_aspect,
        )  # fmt: skip


@dataclass(frozen=True)
class SegmentResult:
    """One model's mask of one photo, with the (warm) time its run took."""

    mask: np.ndarray = field(repr=False)  # (H, W) uint8 train ids at photo size
    inference_ms: float
    legend: list[dict]
    ran_at: str = ""  # the size the model ran at ("256×422"), segdemo.geometry.Plan


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared between reruns: nobody may change it
    return array


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 ``(H, W)`` label map to ``size = (H, W)``."""
    if labels.shape[:2] == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def display_copy(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """``image`` scaled down (never up) so that its long side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def make_photo(key: str, name: str, image: np.ndarray) -> Photo:
    height, width = image.shape[:2]
    if min(height, width) < MIN_PHOTO_SIDE:
        raise ImageError(
            f"{name} is only {width}x{height} pixels; a photo needs at least "
            f"{MIN_PHOTO_SIDE}x{MIN_PHOTO_SIDE} to be segmented"
        )
    if not image.flags.writeable:
        image = image.copy()  # torch warns about read-only arrays (np.asarray of a PIL image)
    # Only the display copies are frozen, for the same reason.
    display = _frozen(display_copy(image).copy())
    large = _frozen(display_copy(image, LARGE_MAX_SIDE).copy())
    return Photo(key, name, image, display, large)


@st.cache_resource(show_spinner=False, max_entries=8)
def read_upload(file_id: str, name: str, _data: bytes) -> Photo:
    """Decode an upload once (keyed by its file id; the bytes are not hashed).

    Raises:
        ImageError: one sentence naming the file (not an image, truncated, too large,
            too small).
    """
    if len(_data) > limits.PHOTO_MAX_MB * limits.MB:
        raise ImageError(
            f"{name} is {len(_data) / limits.MB:.0f} MB; photos may be at most "
            f"{limits.PHOTO_MAX_MB} MB"
        )
    return make_photo(file_id, name, load_image(_data, name=name))


def read_uploads(
    uploads: Sequence,
    max_count: int = limits.PHOTOS_MAX_COUNT,
    max_megapixels: float = limits.PHOTOS_MAX_MEGAPIXELS,
) -> tuple[list[Photo], list[str]]:
    """The uploaded photos the page takes, and one sentence per upload it leaves out.

    At most ``max_count`` photos of ``max_megapixels`` together, so a page never holds
    more decoded pixels than that; files that are not usable photos are named with their
    reason.
    """
    photos: list[Photo] = []
    problems: list[str] = []
    total = 0.0
    for k, upload in enumerate(uploads):
        if k == max_count:
            problems.append(
                f"Only the first {max_count} photos are used; {len(uploads) - k} more were "
                "left out."
            )
            break
        data = upload.getvalue()
        # The header's size first, so a photo that would not fit is never decoded.
        stated = (pixel_count(data) or 0) / 1e6
        if total + stated > max_megapixels:
            problems.append(
                f"{upload.name} was left out: the photos together would exceed the "
                f"{max_megapixels:g} megapixels a page holds at once."
            )
            continue
        try:
            photo = read_upload(upload.file_id, upload.name, data)
        except ImageError as e:
            problems.append(str(e))
            continue
        total += megapixels(photo.image)
        photos.append(photo)
    return photos, problems


@st.cache_resource(show_spinner=False, max_entries=16)
def read_truth(
    file_id: str, name: str, _data: bytes, _label_set, label_set_name: str, size: tuple[int, int]
) -> GroundTruth:
    """A ground-truth mask upload as train ids of ``_label_set`` (called
    ``label_set_name``) at ``size``, in whichever encoding it holds (train ids, Cityscapes
    label ids or colours), read once per upload.

    Raises:
        ImageError: one sentence naming the file (its encoding unknown included).
    """
    truth = read_ground_truth(_data, _label_set, name=name, size=size)
    _frozen(truth.mask)
    return truth


@st.cache_resource(show_spinner=False)
def example_photos() -> list[Photo]:
    """The gallery shown before anything is uploaded: built-in synthetic street scenes,
    with their exact ground truth."""
    from segdemo.data import open_dataset

    dataset = open_dataset("synthetic", "val", length=EXAMPLE_COUNT, native_size=EXAMPLE_SIZE)
    photos = []
    for i in range(len(dataset)):
        image, truth = dataset.read_raw(i)
        photo = make_photo(f"example-{i}", f"example-{i + 1}.png", image)
        photos.append(photo.with_truth(truth, dataset.label_set.name, "exact"))
    return photos


@st.cache_resource(show_spinner=False, max_entries=4)
def open_photo_dataset(data: str, fmt: str, split: str, label_set: str, stamp: int):
    """A dataset to pick photos from (with their ground truth); opened once per folder
    version (``stamp``)."""
    from segdemo.data import open_dataset

    return open_dataset(data, split, fmt=fmt, label_set=label_set)


def dataset_photo(dataset, index: int) -> Photo:
    """Item ``index`` of ``dataset`` as a photo with its ground truth.

    Raises:
        ValueError: the item cannot be read (one sentence naming the file).
    """
    image, truth = dataset.read_raw(index)
    photo = make_photo(f"{dataset.fingerprint()}-{index}", Path(dataset.item_path(index)).name,
                       image)  # fmt: skip
    photo = dataclasses.replace(photo, pixel_aspect=getattr(dataset, "pixel_aspect", 1.0))
    return photo.with_truth(truth, dataset.label_set.name, "the dataset's")


# ------------------------------------------------------------------------------ inference


@st.cache_resource(show_spinner=False)
def latency_log() -> WarmLatency:
    """Warm latencies of every checkpoint and setting, shared by all sessions (kernels
    warm up per process, not per session)."""
    return WarmLatency()


def page_tta(enabled: bool) -> TTA:
    """The test-time augmentation of the page's toggle: a flip and scales 0.75 and 1.25."""
    return TTA.parse(DEFAULT_TTA) if enabled else NO_TTA


def segmenter(
    name: str,
    checkpoint,
    device,
    precision: str,
    mode: str | None,
    level: int | None,
    tta: TTA = NO_TTA,
    geometry: str = DEFAULT_POLICY,
):
    """A loaded checkpoint at one inference setting, called ``name`` (its display name:
    video tiles, speed tables and ZIP folders show it), sizing photos by ``geometry``."""
    return Segmenter(
        name,
        checkpoint.model,
        tuple(checkpoint.input_size),
        checkpoint.label_set,
        device,
        precision,
        mode,
        level,
        tta,
        geometry,
        TrainingFrames.of_checkpoint(checkpoint.metadata),
    )


def setting_key(
    checkpoint, device, precision: str, mode, level, tta: TTA = NO_TTA,
    geometry: str = DEFAULT_POLICY,
) -> tuple:  # fmt: skip
    path = Path(checkpoint.path)
    return (str(path), path.stat().st_mtime_ns, str(device), precision, mode, level,
            tta.describe(), engine_of(checkpoint.model), geometry)  # fmt: skip


def run_model(
    checkpoint,
    device,
    precision: str,
    photo: Photo,
    mode: str | None,
    level: int | None,
    cache: dict,
    tta: TTA = NO_TTA,
    geometry: str = DEFAULT_POLICY,
) -> SegmentResult:
    """Segment ``photo`` with a loaded checkpoint, remembering the result in ``cache``.

    ``cache`` is the session's bounded dict (a level switched back to shows at once). Each
    run's time goes to :func:`latency_log`; the first time a setting runs in this process,
    a warm-up run on a blank input comes first, so every recorded photo run is warm.
    """
    setting = setting_key(checkpoint, device, precision, mode, level, tta, geometry)
    key = (*setting[:2], photo.key, mode, level, tta.describe(), *setting[-2:])  # engine, geometry
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cache[key]
    run = segmenter(Path(checkpoint.path).stem, checkpoint, device, precision, mode, level, tta,
                    geometry)  # fmt: skip
    log = latency_log()
    if not log.is_warm(setting):
        # A setting's first run pays for kernel selection and allocation (seconds, for a
        # level the process has not run): run it once on a blank input of the model's
        # size (the same shapes as any photo after resizing), recorded as the warm-up.
        height, width = run.input_size
        log.record(setting, run.timed(np.zeros((height, width, 3), np.uint8))[1])
    # BudgetExceeded / ServerBusy (RuntimeErrors): the session's budget is used up, or the
    # server's job slots stayed taken; nothing is charged for a job that did not run.
    with job_slot(f"segmenting {photo.name}"):
        session_budget().charge(megapixels(photo.image), f"segmenting {photo.name}")
        mask, inference_ms = run.timed(photo.image, photo.pixel_aspect)
    log.record(setting, inference_ms)
    mask = _frozen(mask)
    ran_at = run.plan(photo.image.shape[:2], photo.pixel_aspect).describe()
    result = SegmentResult(
        mask, inference_ms, viz.legend_entries(mask, checkpoint.label_set), ran_at
    )
    cache[key] = result
    while len(cache) > 1 and sum(r.mask.nbytes for r in cache.values()) > MASK_CACHE_BYTES:
        cache.pop(next(iter(cache)))  # least recently used first
    return result


def settle_latency(
    checkpoint, device, precision: str, photo: Photo, mode, level, tta: TTA = NO_TTA,
    geometry: str = DEFAULT_POLICY,
) -> Latency | None:  # fmt: skip
    """Time the setting again on ``photo`` while its figure needs it (fewer than three
    fresh warm runs, or runs that disagree: ``WarmLatency.runs_needed``); its latency.

    Called after the mask is on screen: the extra runs delay only the figure.
    """
    setting = setting_key(checkpoint, device, precision, mode, level, tta, geometry)
    run = segmenter(Path(checkpoint.path).stem, checkpoint, device, precision, mode, level, tta,
                    geometry)  # fmt: skip
    return latency_log().measure(setting, lambda: run.timed(photo.image, photo.pixel_aspect)[1])


def latency_text(ms: float | None, engine: str | None = None) -> str:
    text = "measuring…" if ms is None else f"{ms:.0f} ms"
    return f"{text} ({engine})" if engine else text


def latency_figure(latency: Latency | None, engine: str | None = None) -> str:
    """The cost table's latency: median, spread and runs (``Latency.text``), and the
    engine where it is not torch."""
    text = "measuring…" if latency is None else latency.text()
    return f"{text} ({engine})" if engine else text


# ------------------------------------------------------------------------------- pictures


def class_ids(label_set, names: Sequence[str]) -> set[int]:
    """Train ids of ``label_set`` for class ``names`` (names it lacks are skipped)."""
    wanted = set(names)
    return {i for i, name in enumerate(label_set.names) if name in wanted}


def highlight_id(label_set, name: str | None) -> int | None:
    ids = class_ids(label_set, [name]) if name else set()
    return next(iter(ids)) if ids else None


def picture(
    photo: Photo,
    mask: np.ndarray,
    label_set,
    view: str,
    alpha: float,
    hidden: Sequence[str] = (),
    highlighted: str | None = None,
    large: bool = False,
) -> np.ndarray:
    """The overlay or colour mask at display size (``large``: the before/after size), with
    hidden classes left out and the highlighted class standing out."""
    base = photo.large if large else photo.display
    small = resize_nearest(mask, base.shape[:2])
    return viz.render_view(
        base, small, label_set, view, alpha, class_ids(label_set, hidden),
        highlight_id(label_set, highlighted),
    )  # fmt: skip


def photo_picture(
    photo: Photo, label_set, highlighted: str | None, mask: np.ndarray | None
) -> np.ndarray:
    """The photo at the before/after size; with a highlighted class, everything outside
    that class in ``mask`` (train ids at that size) fades."""
    train_id = highlight_id(label_set, highlighted)
    if train_id is None or mask is None:
        return photo.large
    return viz.highlight(photo.large, mask, train_id)


def encode_picture(rgb: np.ndarray, view: str) -> bytes:
    """What the page shows, encoded: a colour mask as PNG, an overlay as JPEG.

    Encoded here rather than by ``st.image``: its default PNG compression of a 1024 px
    overlay takes longer than a small model's inference (about 370 ms against 2 ms for
    this JPEG on a loaded 2-core CPU), and it sits between a level switch and its mask.
    """
    buffer = io.BytesIO()
    if view == "mask":
        Image.fromarray(rgb).save(buffer, "PNG", compress_level=1)  # flat colours
    else:
        Image.fromarray(rgb).save(buffer, "JPEG", quality=92, subsampling=0)  # crisp edges
    return buffer.getvalue()


def render_view(
    photo: Photo,
    mask: np.ndarray,
    label_set,
    view: str,
    alpha: float,
    hidden: Sequence[str] = (),
    highlighted: str | None = None,
) -> bytes:
    """The grid's picture of one model, encoded (see :func:`encode_picture`)."""
    return encode_picture(picture(photo, mask, label_set, view, alpha, hidden, highlighted), view)


def mask_png(mask: np.ndarray, label_set) -> bytes:
    """The mask as a palette PNG: pixel values are train ids (255 = ignore), and viewers
    show the label set's colours."""
    return _mask_png(mask, label_set)


def overlay_png(photo: Photo, mask: np.ndarray, label_set, alpha: float) -> bytes:
    """The overlay at the photo's full size, as PNG bytes."""
    return png_bytes(viz.overlay(photo.image, mask, label_set, alpha))


def _swatch(color: str) -> str:
    return (
        f'<span style="display:inline-block;width:0.85em;height:0.85em;'
        f"background:{html.escape(color)};border:1px solid rgba(0,0,0,.35);"
        'vertical-align:-0.1em;margin-right:0.3em"></span>'
    )


def _rgb_hex(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color)
    return f"#{r:02x}{g:02x}{b:02x}"


def share_text(fraction: float) -> str:
    """A pixel share as shown: ``"12.3%"``, ``"<0.1%"`` for a trace, ``"0%"`` for none."""
    percent = 100 * fraction
    if percent == 0:
        return "0%"
    return f"{percent:.1f}%" if percent >= 0.1 else "<0.1%"


def legend_html(entries: Sequence[dict], hidden: Sequence[str] = ()) -> str:
    """Colour swatches, class names and pixel shares, as one line of wrapped HTML; hidden
    classes are struck through."""
    hidden = set(hidden)
    items = []
    for entry in entries:
        share = share_text(entry["fraction"])
        style = "white-space:nowrap"
        if entry["name"] in hidden:
            style += ";opacity:.45;text-decoration:line-through"
        items.append(
            f'<span style="{style}">{_swatch(entry["color"])}'
            f"{html.escape(entry['name'])} {html.escape(share)}</span>"
        )
    return _legend_box(items)


def _legend_box(items: Sequence[str]) -> str:
    return (
        '<div style="display:flex;flex-wrap:wrap;gap:0.15rem 0.8rem;font-size:0.85rem">'
        + "".join(items)
        + "</div>"
    )


def color_legend_html(legend: dict[str, Sequence[int]]) -> str:
    """A legend of named colours (the error and comparison maps)."""
    items = [
        f'<span style="white-space:nowrap">{_swatch(_rgb_hex(color))}{html.escape(name)}</span>'
        for name, color in legend.items()
    ]
    return _legend_box(items)


def error_legend_html(mask: np.ndarray, truth: np.ndarray, label_set) -> str:
    """The error map's legend: correct, ignored, and the predicted classes of the wrong
    pixels (the colours a wrong pixel takes)."""
    wrong = (mask != truth) & (truth != label_set.ignore_index)
    items = dict(viz.ERROR_MAP_LEGEND)
    for entry in viz.legend_entries(mask[wrong], label_set)[:6]:
        items[f"wrong: {entry['name']}"] = label_set.colors[entry["train_id"]]
    return color_legend_html(items)


def truth_for(photo: Photo, label_set) -> np.ndarray | None:
    """The photo's ground truth if it is in ``label_set``'s classes, else None."""
    if photo.truth is None or photo.truth_label_set != label_set.name:
        return None
    return photo.truth


def scores(mask: np.ndarray, truth: np.ndarray, label_set) -> dict | None:
    """mIoU and pixel accuracy against the ground truth, or None when the ground truth has
    no labelled pixel (nothing to score)."""
    if not (truth != label_set.ignore_index).any():
        return None
    return photo_scores(mask, truth, label_set)


def scores_caption(scores_: dict | None) -> str:
    """The error map's caption: the scores, or why there are none."""
    if scores_ is None:
        return "errors · the ground truth has no labelled pixels, so there is nothing to score"
    return f"errors · mIoU {scores_['miou']:.3f} · pixel accuracy {scores_['pixel_accuracy']:.3f}"


def check_batch(photos: Sequence[Photo], segmenters: Sequence[Segmenter]) -> float:
    """The megapixels a batch ZIP of ``photos`` x ``segmenters`` processes.

    Raises:
        ValueError: more than ``limits.BATCH_MAX_MEGAPIXELS`` (one sentence).
    """
    total = sum(megapixels(p.image) for p in photos) * len(segmenters)
    if total > limits.BATCH_MAX_MEGAPIXELS:
        raise ValueError(
            f"{len(photos)} photo(s) x {len(segmenters)} checkpoint(s) come to {total:,.0f} "
            f"megapixels, more than the {limits.BATCH_MAX_MEGAPIXELS} one ZIP may hold; "
            "choose fewer photos or checkpoints"
        )
    return total


def error_picture(photo: Photo, mask: np.ndarray, truth: np.ndarray, label_set) -> np.ndarray:
    """The error map at display size."""
    size = photo.display.shape[:2]
    return viz.error_map(resize_nearest(mask, size), resize_nearest(truth, size), label_set)


def comparison_picture(
    photo: Photo, mask_a: np.ndarray, mask_b: np.ndarray, truth: np.ndarray, label_set
) -> np.ndarray:
    size = photo.display.shape[:2]
    return viz.comparison_map(
        resize_nearest(mask_a, size), resize_nearest(mask_b, size), resize_nearest(truth, size),
        label_set,
    )  # fmt: skip


def shared_legend(
    masks: Sequence[np.ndarray | None], label_set, hidden: Sequence[str] = ()
) -> list[dict]:
    """Legend entries of the classes in any of ``masks`` (not hidden), each with its
    pixel share in every mask as text (``"12.0% | 9.5%"``), most frequent first."""
    hidden_ids = class_ids(label_set, hidden)
    shares = [
        {e["train_id"]: e["fraction"] for e in viz.legend_entries(m, label_set)}
        if m is not None
        else None
        for m in masks
    ]
    present: dict[int, float] = {}
    for share in shares:
        for train_id, fraction in (share or {}).items():
            present[train_id] = max(present.get(train_id, 0.0), fraction)
    entries = []
    for train_id in sorted(present, key=lambda t: -present[t]):
        if train_id in hidden_ids:
            continue
        text = " | ".join(share_text(s.get(train_id, 0.0)) for s in shares if s is not None)
        entries.append(
            {
                "train_id": train_id,
                "name": label_set.names[train_id],
                "color": _rgb_hex(label_set.colors[train_id]),
                "shares": text,
            }
        )
    return entries


# ------------------------------------------------------------------------------- video


@st.cache_data(show_spinner=False)
def example_clip() -> bytes:
    """The example clip (a camera moving down a synthetic street), as WebM bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = drive_clip(Path(folder) / "drive.webm", EXAMPLE_CLIP_SECONDS, EXAMPLE_CLIP_FPS)
        return path.read_bytes()


def run_video(
    data: bytes,
    name: str,
    segmenters: Sequence[Segmenter],
    layout: str,
    alpha: float,
    progress: Callable[[int, int], None],
    preview: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[bytes, VideoResult]:
    """Segment an uploaded clip; the WebM bytes and what happened. ``preview(done,
    frame)`` gets each composed frame as it is ready (see ``segdemo.video.segment_video``).

    Each segmented frame is charged to the session's budget (its pixels per checkpoint)
    before the next is read.

    Raises:
        VideoError: the clip is not readable or beyond the limits (one sentence).
        BudgetExceeded: the session's budget ran out (the clip stops there).
    """
    suffix = Path(name).suffix.lower() or ".mp4"
    if len(data) > MAX_VIDEO_BYTES:
        raise VideoError(
            f"{name} is {len(data) / limits.MB:.0f} MB; segdemo takes clips up to "
            f"{limits.VIDEO_MAX_MB} MB"
        )
    budget = session_budget()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"input{suffix}"
        source.write_bytes(data)
        info = probe_video(source, name)
        frame_mp = info.width * info.height * len(segmenters) / 1e6

        def charged(done: int, total: int) -> None:
            budget.charge(frame_mp, f"segmenting {name}")
            progress(done, total)

        out = Path(folder) / "segmented.webm"
        with job_slot(f"segmenting {name}"):
            result = segment_video(source, out, segmenters, layout, alpha, progress=charged,
                                   name=name, preview=preview)  # fmt: skip
        return out.read_bytes(), result


def video_speed_table(models: Sequence[dict]) -> str:
    """A Markdown table of each model's warm frames/s and ms per frame on a clip
    (``VideoResult.models``; a model without a warm frame is left out)."""
    rows = "\n".join(
        f"| {literal_markdown(m['name'])} | {m['setting'] or '-'} | "
        f"{m['fps']:.1f} | {m['ms_per_frame']:.0f} |"
        for m in models
        if m["fps"]
    )
    return "| model | setting | frames/s (warm) | ms per frame |\n|---|---|---|---|\n" + rows


class TimeLeft:
    """ "About 40 s left" for long work done in ``total`` equal parts, from the time the
    parts done so far took (nothing until the first part is done)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def text(self, done: int, total: int) -> str:
        if done <= 0 or done >= total:
            return ""
        from segdemo.runs import format_duration

        left = (time.perf_counter() - self.start) / done * (total - done)
        return f" · about {format_duration(left)} left"


def format_params(count: float) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count / 1e3:.1f} k"
