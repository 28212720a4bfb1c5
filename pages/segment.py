"""Segment: street photos, webcam shots, dataset images and videos in; the masks of several
checkpoints out, in a large before/after view and side by side.

Each model's panel is an ``st.fragment``: switching a U-Net++ between fast/accurate or
between pruning levels re-runs that panel alone (one inference), and the whole page only
when something outside the panel shows that model (the large view, the comparison map).
"""

from __future__ import annotations

import contextlib

import streamlit as st

from segdemo import limits, viz
from segdemo.batch import batch_zip
from segdemo.checkpoints import CheckpointError
from segdemo.engine import engine_of, resolve_engine
from segdemo.geometry import POLICIES, POLICY_HELP
from segdemo.images import ImageError
from segdemo.inference import Segmenter
from segdemo.limits import BudgetExceeded
from segdemo.models import pruning_levels
from segdemo.video import LAYOUTS, MAX_FPS, MAX_SECONDS, OUTPUT_MIME, VideoError
from segdemo_app import common
from segdemo_app import segment as ui
from segdemo_app.before_after import Side, before_after, view_data
from segdemo_app.dataset_picker import dataset_picker, folder_stamp

common.init_state()
ui.init_segment_state()
state = st.session_state

VIEWS = {"overlay": "Overlay", "mask": "Colour mask"}
MODES = {"fast": "Fast", "accurate": "Accurate"}
SOURCES = {"photos": "Photos", "camera": "Camera", "dataset": "Dataset image", "video": "Video"}
ENGINES = {"torch": "PyTorch", "openvino": "OpenVINO (CPU)", "auto": "Fastest here (auto)"}
PREVIEW_EVERY = 10  # while a clip runs, show its first segmented frame, then every 10th


def mark_refresh() -> None:
    state["segment_refresh"] = True


def tta():
    """The page's test-time augmentation (the toggle), for every model on it."""
    return ui.page_tta(state["segment_tta"])


def engine() -> str:
    """The engine the sidebar picked for every model on the page."""
    return state["segment_engine"]


def engine_label(checkpoint) -> str | None:
    """The engine to name beside a latency: only where it is not the default torch."""
    name = engine_of(checkpoint.model)
    return None if name == "torch" else name


def geometry() -> str:
    """The page's geometry policy (the sidebar), for every model on it."""
    return state["segment_geometry"]


def setting_of(path: str, checkpoint) -> tuple[str | None, int | None]:
    """The U-Net++ mode and level a checkpoint's panel is set to (None, None: no levels)."""
    levels = pruning_levels(checkpoint.model)
    if not levels:
        return None, None
    common.init_model_state(path, levels, common.default_mode(checkpoint.metadata, levels))
    return (
        state[common.model_state_key("segment_mode", path)],
        state[common.model_state_key("segment_level", path)],
    )


def setting_text(mode: str | None, level: int | None) -> str:
    return f" · {mode} L{level}" if level is not None else ""


def cost_table(row: dict, checkpoint, mode, level, latency, ran_at: str = "") -> str:
    cost = common.model_cost(row["path"], mode, level)
    metrics = common.headline_metrics(checkpoint.metadata)
    if level is not None:
        metrics = ((metrics.get("per_level") or {}).get(mode) or {}).get(str(level)) or {}
    miou = metrics.get("miou")
    on = f" ({row['miou_on']})" if miou is not None and row.get("miou_on") else ""
    # One row per number, so the table fits a narrow column when four models sit side by side.
    return (
        f"| params | {ui.format_params(cost['params'])} |\n|---|---|\n"
        f"| GFLOPs | {cost['gflops']:.2f} |\n"
        f"| latency | {ui.latency_figure(latency, engine_label(checkpoint))} |\n"
        f"| ran at | {ran_at or 'n/a'} |\n"
        f"| val mIoU | {'n/a' if miou is None else f'{miou:.3f}'}{on} |"
    )


def pruning_controls(path: str, levels: int) -> tuple[str, int]:
    """The mode and pruning-level widgets of a U-Net++ panel; the mode and level chosen."""
    mode = st.radio(
        "Mode",
        list(MODES),
        format_func=MODES.get,
        horizontal=True,
        key=common.model_state_key("segment_mode", path),
        persist_state="session",
        on_change=mark_refresh,
        help="Fast: the deepest head of the level alone. Accurate: the mean of the "
        "softmax of heads 1..k, weighted where the checkpoint carries weights fitted on its "
        "training images.",
    )
    level = st.slider(
        "Pruning level",
        1,
        levels,
        format="L%d",
        key=common.model_state_key("segment_level", path),
        persist_state="session",
        on_change=mark_refresh,
        help="U-Net++ pruned at level k computes only the nodes X^{i,j} with i + j <= k.",
    )
    return mode, level


def error_map_view(photo: ui.Photo, mask, label_set) -> None:
    """Where a mask is wrong, with the photo's mIoU and pixel accuracy, when the photo has
    a ground truth in ``label_set``'s classes."""
    truth = ui.truth_for(photo, label_set)
    if truth is None:
        return
    st.image(
        ui.error_picture(photo, mask, truth, label_set),
        caption=ui.scores_caption(ui.scores(mask, truth, label_set)),
        width="stretch",
    )
    st.markdown(ui.error_legend_html(mask, truth, label_set), unsafe_allow_html=True)


def mask_downloads(row: dict, photo: ui.Photo, checkpoint, mask, mode, level) -> None:
    """Download buttons for a panel's mask and overlay (PNG), encoded only when clicked."""
    label_set = checkpoint.label_set
    name = row["name"].replace("/", "_")
    stem = f"{photo.stem}_{name}" + (f"_{mode}-L{level}" if level else "")
    alpha = state["segment_alpha"]
    st.download_button(
        "Mask PNG",
        data=lambda: ui.mask_png(mask, label_set),
        file_name=f"{stem}_mask.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=f"segment_download_mask::{row['path']}",
    )
    st.download_button(
        "Overlay PNG",
        data=lambda: ui.overlay_png(photo, mask, label_set, alpha),
        file_name=f"{stem}_overlay.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=f"segment_download_overlay::{row['path']}",
    )


@st.fragment
def model_panel(row: dict, photo: ui.Photo, refresh_page: bool) -> None:
    """One checkpoint on one photo: mask, controls, pruning diagram, cost, legend, error
    map, downloads."""
    st.markdown(f"**{common.literal_markdown(row['label'])}**")
    try:
        checkpoint, device, precision = common.load_model(row["path"], engine=engine())
    except CheckpointError as e:
        st.error(common.literal_markdown(str(e)))
        return
    image_slot = st.container()  # the mask goes above the controls, so masks line up
    mode, level = setting_of(row["path"], checkpoint)
    levels = pruning_levels(checkpoint.model)
    if levels:
        mode, level = pruning_controls(row["path"], levels)
    try:
        # Each panel says it is at work, and shows its mask as soon as it is ready.
        with image_slot, st.spinner(f"Segmenting with {row['name']}…"):
            result = ui.run_model(
                checkpoint, device, precision, photo, mode, level, state["segment_masks"], tta(),
                geometry(),
            )  # fmt: skip
    except BudgetExceeded as e:
        image_slot.warning(common.literal_markdown(str(e)), icon=":material/hourglass:")
        return
    except (RuntimeError, ValueError) as e:
        image_slot.error(
            common.literal_markdown(f"{row['label']} could not segment {photo.name}: {e}")
        )
        return
    label_set = checkpoint.label_set
    hidden, highlighted = state["segment_hidden"], state["segment_highlight"]
    picture = ui.render_view(
        photo, result.mask, label_set, state["segment_view"], state["segment_alpha"], hidden,
        highlighted,
    )  # fmt: skip
    # The median of this setting's warm runs (a setting's first run, its warm-up, is
    # never shown: it can take seconds where a warm run takes tens of milliseconds).
    with_tta = " + TTA" if tta().enabled else ""
    title = f"{row['name']}{setting_text(mode, level)}{with_tta}"
    latency = ui.latency_log().latency(
        ui.setting_key(checkpoint, device, precision, mode, level, tta(), geometry())
    )
    known_ms = None if latency is None else latency.median_ms
    shown_ms = ui.latency_text(known_ms, engine_label(checkpoint))
    image_slot.image(picture, caption=f"{title} · {shown_ms}", width="stretch")
    st.markdown(ui.legend_html(result.legend, hidden), unsafe_allow_html=True)
    if levels:
        nodes = viz.unetpp_nodes(levels, mode, level)
        svg = viz.unetpp_grid_svg(nodes, title=f"U-Net++ {mode} L{level}")
        st.markdown(svg, unsafe_allow_html=True)
    # The cost comes after the mask: a first FLOP count must not delay the new mask.
    st.markdown(cost_table(row, checkpoint, mode, level, latency, result.ran_at))
    error_map_view(photo, result.mask, label_set)
    mask_downloads(row, photo, checkpoint, result.mask, mode, level)
    if state["segment_refresh"]:
        state["segment_refresh"] = False
        if refresh_page:  # the large view or the comparison map shows this model
            st.rerun(scope="app")


def settle_latency(path: str, photo: ui.Photo, checkpoint, device, precision, mode, level) -> bool:
    """Time a shown setting again on ``photo`` while its latency figure needs it (fewer
    than three fresh warm runs, or runs that disagree: ``WarmLatency.runs_needed``), once
    per setting and photo; whether it ran (the captions then need a rerun)."""
    setting = ui.setting_key(checkpoint, device, precision, mode, level, tta(), geometry())
    if (setting, photo.key) in state["segment_settled"]:
        return False
    state["segment_settled"].add((setting, photo.key))
    if not ui.latency_log().runs_needed(setting):
        return False
    ui.settle_latency(checkpoint, device, precision, photo, mode, level, tta(), geometry())
    return True


def settle_latencies(photo: ui.Photo, paths: list[str], loaded: dict) -> None:
    """After every mask is on screen: time each model until its latency holds, then redraw
    once with the settled figures (the masks come from the session's cache)."""
    pending = []
    for path in paths:
        checkpoint, device, precision = loaded[path]
        mode, level = setting_of(path, checkpoint)
        setting = ui.setting_key(checkpoint, device, precision, mode, level, tta(), geometry())
        if (setting, photo.key) not in state["segment_settled"]:
            pending.append((path, checkpoint, device, precision, mode, level))
    if not pending:
        return
    with st.spinner("Timing the models a few more times for a steady latency figure…"):
        ran = [settle_latency(path, photo, *rest) for path, *rest in pending]
    if any(ran):
        st.rerun()


def model_result(path: str, photo: ui.Photo, loaded: dict):
    """``(checkpoint, mode, level, result)`` of a chosen checkpoint on ``photo``."""
    checkpoint, device, precision = loaded[path]
    mode, level = setting_of(path, checkpoint)
    result = ui.run_model(
        checkpoint, device, precision, photo, mode, level, state["segment_masks"], tta(),
        geometry(),
    )  # fmt: skip
    return checkpoint, mode, level, result


def large_view(photo: ui.Photo, chosen: list[dict], loaded: dict) -> list[str]:
    """The photo at page width with a before/after split; returns the checkpoint paths it
    shows."""
    paths = [row["path"] for row in chosen if row["path"] in loaded]
    if not paths:
        return []
    by_path = {row["path"]: row for row in chosen}
    if state["segment_right"] not in paths:
        state["segment_right"] = paths[0]
    if state["segment_left"] not in (ui.PHOTO, *paths):
        state["segment_left"] = ui.PHOTO
    names = {ui.PHOTO: "the photo", **{p: by_path[p]["label"] for p in paths}}
    left_col, right_col = st.columns(2)
    left = left_col.selectbox(
        "Left of the split", [ui.PHOTO, *paths], format_func=names.get, key="segment_left"
    )
    right = right_col.selectbox("Right of the split", paths, format_func=names.get,
                                key="segment_right")  # fmt: skip
    hidden, highlighted = state["segment_hidden"], state["segment_highlight"]
    view, alpha = state["segment_view"], state["segment_alpha"]

    def model_side(path: str, label_set=None) -> Side | None:
        try:
            checkpoint, mode, level, result = model_result(path, photo, loaded)
        except BudgetExceeded as e:
            st.warning(common.literal_markdown(str(e)), icon=":material/hourglass:")
            return None
        except (RuntimeError, ValueError) as e:
            st.error(common.literal_markdown(f"{names[path]} could not segment {photo.name}: {e}"))
            return None
        picture = ui.picture(photo, result.mask, checkpoint.label_set, view, alpha, hidden,
                             highlighted, large=True)  # fmt: skip
        # The pointer reads class names in the right-hand model's classes.
        same = label_set is None or checkpoint.label_set.names == label_set.names
        mask = ui.resize_nearest(result.mask, photo.large.shape[:2]) if same else None
        return Side(f"{by_path[path]['name']}{setting_text(mode, level)}", picture, mask)

    label_set = loaded[right][0].label_set
    right_side = model_side(right)
    if right_side is None:
        return []
    if left == ui.PHOTO:
        # The photo highlights a class where the right-hand model sees it.
        left_side = Side("photo", ui.photo_picture(photo, label_set, highlighted, right_side.mask))
    else:
        left_side = model_side(left, label_set)
        if left_side is None:
            return []
    masks = [left_side.mask, right_side.mask]
    classes = ui.shared_legend([m for m in masks if m is not None], label_set, hidden)
    data = view_data(left_side, right_side, classes, label_set.ignore_index,
                     view_key=f"{photo.key}|{left}|{right}")  # fmt: skip
    before_after(data, key="segment_before_after")
    st.caption(
        "Drag the split (or focus it and use the arrow keys). Point at the picture to read "
        "the class under the pointer; hover a legend entry to highlight that class, click "
        "it to keep it highlighted. Shares are of the left | right mask."
    )
    return [p for p in (left, right) if p != ui.PHOTO]


def comparison(photo: ui.Photo, pair: list[str], loaded: dict, labels: dict) -> None:
    """Where only one of two models is right, against the photo's ground truth."""
    try:
        results = [model_result(path, photo, loaded) for path in pair]
    except (RuntimeError, ValueError):
        return  # the model's panel names the error
    label_set = results[0][0].label_set
    truth = ui.truth_for(photo, label_set)
    if truth is None or results[1][0].label_set.names != label_set.names:
        return
    (_, mode_a, level_a, a), (_, mode_b, level_b, b) = results
    st.subheader("Where the two models differ")
    name_a = f"{labels[pair[0]]}{setting_text(mode_a, level_a)}"
    name_b = f"{labels[pair[1]]}{setting_text(mode_b, level_b)}"
    left, right = st.columns([3, 2])
    left.image(
        ui.comparison_picture(photo, a.mask, b.mask, truth, label_set),
        caption=f"A = {name_a}, B = {name_b}, against the ground truth",
        width="stretch",
    )
    with right:
        st.markdown(ui.color_legend_html(viz.COMPARISON_LEGEND), unsafe_allow_html=True)
        st.image(
            ui.encode_picture(
                viz.colorize(ui.resize_nearest(truth, photo.display.shape[:2]), label_set), "mask"
            ),  # fmt: skip
            caption="ground truth",
            width="stretch",
        )


def video_source() -> tuple | None:
    """The clip's inputs (upload, example clip, layout); ``(upload, name, data_id)`` of the
    clip to segment (``upload`` None for the example clip), or None, with a hint, for none.
    """
    st.caption(
        f"MP4 or WebM, up to {MAX_SECONDS:.0f} s, {limits.VIDEO_MAX_MB} MB and 4K frames. Frames are "
        f"segmented at up to {MAX_FPS:.0f} per second (faster clips are sampled down) by every "
        "chosen checkpoint at its panel's setting; the result is a WebM video."
    )
    upload_col, example_col = st.columns([3, 2])
    upload = upload_col.file_uploader(
        "Street video (MP4, WebM)",
        type=ui.VIDEO_TYPES,
        key="segment_video_upload",
        max_upload_size=limits.VIDEO_MAX_MB,
    )
    with example_col:
        st.checkbox(
            "Use the example clip (a drive down a synthetic street, "
            f"{ui.EXAMPLE_CLIP_SECONDS:.0f} s)",
            key="segment_video_example",
            disabled=upload is not None,
        )
        st.radio(
            "Video layout",
            list(LAYOUTS),
            format_func=LAYOUTS.get,
            horizontal=True,
            key="segment_video_layout",
        )
    if upload is not None:
        return upload, upload.name, upload.file_id
    if state["segment_video_example"]:
        return None, "synthetic-drive.webm", "example"
    st.info("Upload a clip, or tick the example clip.")
    return None


def video_segmenters(paths: list[str], loaded: dict, names: dict) -> list[Segmenter]:
    """A segmenter per checkpoint at its panel's setting, leaving out (and naming) those
    with other classes than the first."""
    label_set = loaded[paths[0]][0].label_set
    segmenters, skipped = [], []
    for path in paths:
        checkpoint, device, precision = loaded[path]
        if checkpoint.label_set.names != label_set.names:
            skipped.append(path)
            continue
        mode, level = setting_of(path, checkpoint)
        segmenters.append(
            ui.segmenter(names[path], checkpoint, device, precision, mode, level, tta(), geometry())
        )
    if skipped:
        st.caption(
            "Left out (other classes than the first checkpoint): "
            + ", ".join(common.literal_markdown(names[p]) for p in skipped)
        )
    return segmenters


def segment_clip(data: bytes, name: str, segmenters: list[Segmenter], run_key: tuple) -> bool:
    """Segment a clip under a progress bar and keep the video in the session state under
    ``run_key``; False, with the reason shown, when the clip is refused."""
    layout, alpha = state["segment_video_layout"], state["segment_alpha"]
    bar = st.progress(0.0, text=f"Segmenting {name}…")
    first_frames = st.empty()  # the clip's segmented frames while the rest run
    clock = ui.TimeLeft()

    def progress(done: int, total: int) -> None:
        bar.progress(
            done / total,
            text=f"Segmenting {name}: frame {done} of {total}{clock.text(done, total)}",
        )

    def preview(done: int, frame) -> None:
        if done == 1 or done % PREVIEW_EVERY == 0:
            first_frames.image(frame, caption=f"frame {done}, segmented; the rest are running",
                               width="stretch")  # fmt: skip

    try:
        video, result = ui.run_video(data, name, segmenters, layout, alpha, progress, preview)
    except (VideoError, BudgetExceeded) as e:
        bar.empty()
        first_frames.empty()
        st.error(common.literal_markdown(str(e)), icon=":material/videocam_off:")
        return False
    bar.empty()
    first_frames.empty()
    state["segment_video"] = {"key": run_key, "data": video, "result": result, "name": name}
    return True


def segmented_video(done: dict) -> None:
    """The segmented clip: player, what it took, each model's speed, download."""
    result = done["result"]
    st.video(done["data"], format=OUTPUT_MIME)
    st.caption(
        f"{done['name']}: {result.frames} frames at {result.fps:.1f} fps "
        f"({result.seconds:.1f} s of video, {result.width}×{result.height}) in "
        f"{result.wall_seconds:.1f} s, reading, segmenting and encoding included."
    )
    st.markdown(ui.video_speed_table(result.models))
    stem = done["name"].rsplit(".", 1)[0]
    st.download_button(
        "Download the segmented video (WebM)",
        data=done["data"],
        file_name=f"{stem}_segmented.webm",
        mime=OUTPUT_MIME,
        on_click="ignore",
        icon=":material/download:",
        key="segment_video_download",
    )


def video_section(chosen: list[dict], loaded: dict) -> None:
    """A clip (uploaded or the example) segmented by every chosen checkpoint at its panel's
    setting into one WebM video, kept until the clip, a model or the layout changes."""
    source = video_source()
    if source is None:
        return
    upload, name, data_id = source
    paths = [row["path"] for row in chosen if row["path"] in loaded]
    if not paths:
        st.info("Pick at least one checkpoint above.")
        return
    segmenters = video_segmenters(paths, loaded, {row["path"]: row["name"] for row in chosen})
    layout, alpha = state["segment_video_layout"], state["segment_alpha"]
    run_key = (data_id, tuple(s.title for s in segmenters), tuple(paths), layout, alpha)
    if st.button("Segment the video", type="primary", key="segment_video_run"):
        data = upload.getvalue() if upload is not None else ui.example_clip()
        if not segment_clip(data, name, segmenters, run_key):
            return
    done = state["segment_video"]
    if done and done["key"] == run_key:
        segmented_video(done)


def batch_section(photos: list[ui.Photo], chosen: list[dict], loaded: dict) -> None:
    """Every photo x every model in one ZIP of train-id PNGs, colour masks and overlays."""
    paths = [row["path"] for row in chosen if row["path"] in loaded]
    if not paths:
        return
    names = {row["path"]: row["name"] for row in chosen}
    segmenters = []
    for path in paths:
        checkpoint, device, precision = loaded[path]
        mode, level = setting_of(path, checkpoint)
        segmenters.append(
            ui.segmenter(names[path], checkpoint, device, precision, mode, level, tta(), geometry())
        )
    alpha = state["segment_alpha"]
    batch_key = (tuple(p.key for p in photos), tuple(paths), tuple(s.title for s in segmenters),
                 alpha)  # fmt: skip
    st.subheader("All photos at once")
    st.caption(
        f"{len(photos)} photo(s) × {len(segmenters)} checkpoint(s), each at its panel's "
        "setting: one ZIP with a folder per model holding every photo's train-id mask, "
        "colour mask, overlay and legend (PNG)."
    )
    if st.button("Segment all into a ZIP", key="segment_batch_run"):
        slot = contextlib.ExitStack()
        try:
            cost = ui.check_batch(photos, segmenters)
            slot.enter_context(ui.job_slot("the ZIP"))  # ServerBusy, a BudgetExceeded
            ui.session_budget().charge(cost, "the ZIP")
        except (ValueError, BudgetExceeded) as e:
            slot.close()
            st.error(common.literal_markdown(str(e)), icon=":material/folder_zip:")
            return
        with slot:
            bar = st.progress(0.0, text="Segmenting…")
            clock = ui.TimeLeft()
            archive, problems = batch_zip(
                [(photo.name, photo.image) for photo in photos],
                segmenters,
                alpha,
                progress=lambda done, total: bar.progress(
                    done / total, text=f"Segmenting: {done} of {total}{clock.text(done, total)}"
                ),
            )
        bar.empty()
        state["segment_batch"] = {"key": batch_key, "zip": archive, "problems": problems}
    batch = state["segment_batch"]
    if batch and batch["key"] == batch_key:
        for problem in batch["problems"]:
            st.error(common.literal_markdown(problem))
        st.download_button(
            f"Download the ZIP ({len(batch['zip']) / 2**20:.1f} MB)",
            data=batch["zip"],
            file_name="segdemo_masks.zip",
            mime="application/zip",
            on_click="ignore",
            icon=":material/folder_zip:",
            key="segment_batch_download",
        )


# --------------------------------------------------------------------------------- page

st.title("Segment street photos")
rows = common.available_checkpoints()
if not rows:
    st.info(
        "No checkpoints yet. Train a small U-Net on the built-in synthetic street scenes in "
        "about a minute, then come back here to segment your photos."
    )
    common.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
    st.stop()

by_path = {row["path"]: row for row in rows}
# Keep the selection to checkpoints that still exist (renamed or deleted ones drop out);
# the defaults stand in before the first choice, or once every chosen one is gone.
selected = state["segment_checkpoints"]
kept = [p for p in selected if p in by_path] if selected is not None else []
if selected is None or (selected and not kept):
    kept = common.default_checkpoints(rows)
state["segment_checkpoints"] = kept

st.multiselect(
    "Checkpoints to compare",
    list(by_path),
    format_func=lambda p: by_path[p]["label"],
    key="segment_checkpoints",
    persist_state="session",
    help="Pick two or more to see their masks side by side (up to four fit a wide window).",
)
st.sidebar.selectbox(
    "Engine", list(ENGINES), format_func=ENGINES.get, key="segment_engine",
    persist_state="session",
    help="What runs the models. OpenVINO is 1.5-6x faster on a CPU (docs/benchmarks.md); "
    "each model and setting is converted once (seconds) and kept on disk for next time.",
)  # fmt: skip
engine_note = resolve_engine(engine(), "auto")[1]
if engine_note:
    st.sidebar.caption(engine_note)
chosen = [by_path[p] for p in state["segment_checkpoints"]]
loaded: dict[str, tuple] = {}
for k, row in enumerate(chosen, 1):
    with (
        contextlib.suppress(CheckpointError),  # the model's panel shows the error
        st.spinner(f"Loading {row['name']} ({k} of {len(chosen)})…"),
    ):
        loaded[row["path"]] = common.load_model(row["path"], engine=engine())

source_col, view_col, alpha_col = st.columns([3, 2, 2])
source_col.radio(
    "Input", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="segment_source"
)
view_col.radio(
    "Show", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="segment_view",
    persist_state="session",
)  # fmt: skip
alpha_col.slider(
    "Opacity", 0.0, 1.0, step=0.05, key="segment_alpha", persist_state="session",
    disabled=state["segment_view"] == "mask",
)  # fmt: skip

class_names: list[str] = []
for checkpoint, _, _ in loaded.values():
    class_names += [n for n in checkpoint.label_set.names if n not in class_names]
state["segment_hidden"] = [n for n in state["segment_hidden"] if n in class_names]
if state["segment_highlight"] not in class_names:
    state["segment_highlight"] = None
hide_col, highlight_col, tta_col = st.columns([3, 2, 2])
hide_col.multiselect(
    "Hide classes",
    class_names,
    key="segment_hidden",
    placeholder="All classes shown",
    help="Hidden classes show the photo in the overlay and black in the colour mask.",
)
highlight_col.selectbox(
    "Highlight a class",
    [None, *class_names],
    format_func=lambda n: "none" if n is None else n,
    key="segment_highlight",
    placeholder="none",
    help="Everything else fades, in every picture on this page.",
)
tta_col.toggle(
    "Test-time augmentation",
    key="segment_tta",
    persist_state="session",
    help="Average each model's class probabilities over the photo mirrored and scaled "
    "by 0.75 and 1.25 (six passes, so about six times the time): smoother masks, "
    "sometimes a little more accurate; measured in docs/results.md.",
)

st.sidebar.selectbox(
    "Photo geometry",
    POLICIES,
    key="segment_geometry",
    help="How a photo is sized for the models, which learned 2:1 street frames squeezed "
    "to their input size: "
    + "; ".join(f"**{name}**: {text}" for name, text in POLICY_HELP.items())
    + ". Each model's table shows the size it ran at; docs/evaluation.md measures "
    "the policies on photos of other shapes.",
)

if state["segment_source"] == "video":
    video_section(chosen, loaded)
    st.stop()

photos: list[ui.Photo] = []
uploads = []
source = state["segment_source"]
if source == "photos":
    uploads = st.file_uploader(
        f"Street photos (JPG, PNG, WebP; up to {limits.PHOTO_MAX_MB} MB each)",
        type=ui.PHOTO_TYPES,
        accept_multiple_files=True,
        key="segment_uploads",
        max_upload_size=limits.PHOTO_MAX_MB,
    )
    photos, problems = ui.read_uploads(uploads or [])
    for problem in problems:
        st.error(common.literal_markdown(problem), icon=":material/broken_image:")
    if not uploads:
        photos = ui.example_photos()
        st.caption(
            "No photo uploaded: showing built-in synthetic street scenes, with their exact "
            "ground truth. Upload your own above."
        )
elif source == "camera":
    shot = st.camera_input("Take a photo with the webcam", key="segment_camera")
    if shot is None:
        st.info("Allow the camera and take a photo: it is segmented like an upload.")
        st.stop()
    try:
        photos.append(ui.read_upload(shot.file_id, "camera.jpg", shot.getvalue()))
    except ImageError as e:
        st.error(common.literal_markdown(str(e)), icon=":material/broken_image:")
else:  # a dataset image, with its ground truth
    choice = dataset_picker("segment_dataset")
    if choice is None:
        st.stop()
    label_set_name = next(iter(loaded.values()))[0].label_set.name if loaded else "cityscapes19"
    try:
        dataset = ui.open_photo_dataset(
            choice.data, choice.fmt, choice.split, label_set_name, folder_stamp(choice.data)
        )
    except (ValueError, FileNotFoundError) as e:
        st.error(common.literal_markdown(str(e)))
        st.stop()
    if len(dataset) == 0:
        st.info(f"{choice.description} holds no images.")
        st.stop()
    state["segment_dataset_index"] = min(state["segment_dataset_index"], len(dataset) - 1)
    index = st.number_input(
        f"Image (0..{len(dataset) - 1})", 0, len(dataset) - 1, key="segment_dataset_index"
    )
    try:
        photos.append(ui.dataset_photo(dataset, int(index)))
    except ValueError as e:
        st.error(common.literal_markdown(str(e)))
if not photos:
    st.stop()

by_key = {photo.key: photo for photo in photos}
if state["segment_photo"] not in by_key:
    state["segment_photo"] = photos[0].key
if len(photos) > 1:
    st.radio(
        "Photo",
        list(by_key),
        format_func=lambda k: by_key[k].name,
        horizontal=True,
        key="segment_photo",
    )
photo = by_key[state["segment_photo"]]

if source == "photos" and uploads:
    truth_upload = st.file_uploader(
        f"Ground truth of {photo.name} (optional): train ids, Cityscapes label ids "
        "(gtFine_labelIds) or label colours, as PNG",
        type=ui.MASK_TYPES,
        key=f"segment_truth::{photo.key}",
        help="With a ground truth, each model shows its error map and the photo's mIoU.",
    )
    if truth_upload is not None and loaded:
        label_set = next(iter(loaded.values()))[0].label_set
        try:
            truth = ui.read_truth(
                truth_upload.file_id, truth_upload.name, truth_upload.getvalue(), label_set,
                label_set.name, photo.image.shape[:2],
            )  # fmt: skip
            photo = photo.with_truth(truth.mask, label_set.name, truth.description)
        except ImageError as e:
            st.error(common.literal_markdown(str(e)), icon=":material/broken_image:")

if not chosen:
    st.info("Pick at least one checkpoint above.")
    st.stop()

shown = large_view(photo, chosen, loaded)
labels = {row["path"]: row["name"] for row in chosen}
with_truth = [p for p in loaded if ui.truth_for(photo, loaded[p][0].label_set) is not None]
pair = shown if len(shown) == 2 and shown[0] != shown[1] else with_truth[:2]
pair = [p for p in pair if p in with_truth]

columns = st.columns(1 + len(chosen))
with columns[0]:
    st.markdown(f"**{common.literal_markdown(photo.name)}**")
    st.image(photo.display, caption=f"photo · {photo.size_text}", width="stretch")
    if photo.truth is not None:
        truth_set = next(
            (
                c.label_set
                for c, _, _ in loaded.values()
                if c.label_set.name == photo.truth_label_set
            ),
            None,
        )
        if truth_set is not None:
            st.image(
                ui.encode_picture(
                    viz.colorize(
                        ui.resize_nearest(photo.truth, photo.display.shape[:2]), truth_set
                    ),
                    "mask",
                ),  # fmt: skip
                caption=f"ground truth · {photo.truth_source}",
                width="stretch",
            )
for column, row in zip(columns[1:], chosen, strict=True):
    with column:
        model_panel(row, photo, row["path"] in shown or (len(pair) == 2 and row["path"] in pair))
if len(chosen) == 1:
    st.caption("Add a second checkpoint above to compare two models side by side.")
if len(pair) == 2:
    comparison(photo, pair, loaded, labels)
if source == "photos" and uploads:
    batch_section(photos, chosen, loaded)
settle_latencies(photo, [row["path"] for row in chosen if row["path"] in loaded], loaded)
