"""Segment: street photos in, the masks of several checkpoints side by side out.

Each model's panel is an ``st.fragment``: switching a U-Net++ between fast/accurate or
between pruning levels L1..L4 re-runs that panel alone (one inference), nothing else.
"""

from __future__ import annotations

import streamlit as st

from segdemo.checkpoints import CheckpointError
from segdemo.images import ImageError
from segdemo_app import common
from segdemo_app import segment as ui

common.init_state()
state = st.session_state

VIEWS = {"overlay": "Overlay", "mask": "Colour mask"}
MODES = {"fast": "Fast (one head)", "accurate": "Accurate (mean of heads)"}


@st.fragment
def model_panel(row: dict, photo: ui.Photo) -> None:
    """One checkpoint on one photo: controls, mask, timings, cost, legend, downloads."""
    st.markdown(f"**{ui.markdown_text(row['label'])}**")
    try:
        checkpoint, device, precision = common.load_model(row["path"])
    except CheckpointError as e:
        st.error(str(e))
        return
    model = checkpoint.model
    image_slot = st.container()  # the mask goes above the controls, so masks line up
    mode = level = None
    if getattr(model, "supports_pruning", False):
        common.init_model_state(
            row["path"],
            model.num_levels,
            common.default_mode(checkpoint.metadata, model.num_levels),
        )
        mode = st.radio(
            "Mode",
            list(MODES),
            format_func=MODES.get,
            horizontal=True,
            key=common.model_state_key("segment_mode", row["path"]),
            persist_state="session",
        )
        level = st.slider(
            "Pruning level",
            1,
            model.num_levels,
            format="L%d",
            key=common.model_state_key("segment_level", row["path"]),
            persist_state="session",
            help="U-Net++ pruned at level k computes only the nodes X^{i,j} with i + j <= k.",
        )
    try:
        result = ui.run_model(
            checkpoint, device, precision, photo, mode, level, state["segment_masks"]
        )
    except (RuntimeError, ValueError) as e:
        image_slot.error(f"{row['label']} could not segment {photo.name}: {e}")
        return
    label_set = checkpoint.label_set
    setting = f" · {mode} L{level}" if level is not None else ""
    image_slot.image(
        ui.render_view(
            photo, result.mask, label_set, state["segment_view"], state["segment_alpha"]
        ),
        caption=f"{row['model']}{setting} · {result.inference_ms:.0f} ms",
        width="stretch",
    )
    st.markdown(ui.legend_html(result.legend), unsafe_allow_html=True)

    # The cost comes after the mask: a first FLOP count must not delay the new mask.
    cost = common.model_cost(row["path"], mode, level)
    metrics = (checkpoint.metadata.get("metrics") or {}).get("best") or {}
    if level is not None:
        metrics = ((metrics.get("per_level") or {}).get(mode) or {}).get(str(level)) or {}
    miou = metrics.get("miou")
    # One row per number, so the table fits a narrow column when four models sit side by side.
    st.markdown(
        f"| params | {ui.format_params(cost['params'])} |\n|---|---|\n"
        f"| GFLOPs | {cost['gflops']:.2f} |\n"
        f"| latency | {result.inference_ms:.0f} ms |\n"
        f"| val mIoU | {'n/a' if miou is None else f'{miou:.3f}'} |"
    )
    stem = f"{photo.stem}_{checkpoint.path.stem}" + (f"_{mode}-L{level}" if level else "")
    alpha = state["segment_alpha"]
    left, right = st.columns(2)
    left.download_button(
        "Mask PNG",
        data=lambda: ui.mask_png(result.mask, label_set),
        file_name=f"{stem}_mask.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        key=f"segment_download_mask::{row['path']}",
    )
    right.download_button(
        "Overlay PNG",
        data=lambda: ui.overlay_png(photo, result.mask, label_set, alpha),
        file_name=f"{stem}_overlay.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        key=f"segment_download_overlay::{row['path']}",
    )


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
    kept = ui.default_checkpoints(rows)
state["segment_checkpoints"] = kept

upload_col, model_col = st.columns([3, 2])
with upload_col:
    uploads = st.file_uploader(
        "Street photos (JPG, PNG, WebP)",
        type=ui.PHOTO_TYPES,
        accept_multiple_files=True,
        key="segment_uploads",
    )
with model_col:
    st.multiselect(
        "Checkpoints to compare",
        list(by_path),
        format_func=lambda p: by_path[p]["label"],
        key="segment_checkpoints",
        persist_state="session",
        help="Pick two or more to see their masks side by side.",
    )
    view_col, alpha_col = st.columns(2)
    view_col.radio(
        "Show",
        list(VIEWS),
        format_func=VIEWS.get,
        horizontal=True,
        key="segment_view",
        persist_state="session",
    )
    alpha_col.slider(
        "Opacity",
        0.0,
        1.0,
        step=0.05,
        key="segment_alpha",
        persist_state="session",
        disabled=state["segment_view"] == "mask",
    )

photos: list[ui.Photo] = []
for upload in uploads or []:
    try:
        photos.append(ui.read_upload(upload.file_id, upload.name, upload.getvalue()))
    except ImageError as e:
        st.error(str(e), icon=":material/broken_image:")
if not uploads:
    photos = ui.example_photos()
    st.caption(
        "No photo uploaded: showing built-in synthetic street scenes. Upload your own above."
    )
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

chosen = [by_path[p] for p in state["segment_checkpoints"]]
if not chosen:
    st.info("Pick at least one checkpoint above.")
    st.stop()
columns = st.columns(1 + len(chosen))
with columns[0]:
    st.markdown(f"**{ui.markdown_text(photo.name)}**")
    st.image(photo.display, caption=f"photo · {photo.size_text}", width="stretch")
for column, row in zip(columns[1:], chosen, strict=True):
    with column:
        model_panel(row, photo)
if len(chosen) == 1:
    st.caption("Add a second checkpoint above to compare two models side by side.")
