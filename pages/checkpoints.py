"""Checkpoints: what is there, what each one knows, and upload / download / rename / delete.

Bundled checkpoints ship with the repository and are read-only here; checkpoints of runs
and uploads (under ``runs/``) can be renamed and deleted (deleting asks for confirmation).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from segdemo.checkpoints import CheckpointError, read_metadata
from segdemo_app import checkpoint_store, common

common.init_state()
state = st.session_state

# Metadata keys too large or too internal for the details view.
HIDDEN_METADATA = ("optimizer", "train_state", "label_set")


def notify(kind: str, message: str) -> None:
    state["checkpoints_notices"] = [*state["checkpoints_notices"], (kind, message)]


def on_upload() -> None:
    upload = state.get(f"checkpoints_upload_{state['checkpoints_upload_nonce']}")
    if upload is None:
        return
    try:
        path = checkpoint_store.import_checkpoint(
            upload.getvalue(), upload.name, common.UPLOADED_DIR
        )
    except CheckpointError as e:
        notify("error", str(e))
    else:
        renamed = (
            ""
            if path.stem == checkpoint_store.safe_stem(upload.name)
            else (" (a checkpoint with that name exists, so it got a new name)")
        )
        converted = "" if upload.name.endswith(".safetensors") else " (converted to .safetensors)"
        notify(
            "success",
            f"{upload.name} is valid and was added as uploaded/{path.name}{converted}{renamed}.",
        )
        state["checkpoints_selected"] = str(path)
    state["checkpoints_upload_nonce"] += 1  # a fresh, empty uploader


def on_select() -> None:
    state["checkpoints_new_name"] = ""
    state["checkpoints_confirm_delete"] = False


def on_rename(path: str) -> None:
    try:
        target = checkpoint_store.rename_checkpoint(path, state["checkpoints_new_name"])
    except CheckpointError as e:
        notify("error", str(e))
        return
    notify("success", f"{Path(path).name} is now {target.name}.")
    state["checkpoints_selected"] = str(target)
    state["checkpoints_new_name"] = ""


def on_delete(path: str) -> None:
    try:
        checkpoint_store.delete_checkpoint(path)
    except CheckpointError as e:
        notify("error", str(e))
    else:
        notify("success", f"Deleted {Path(path).name}.")
    state["checkpoints_selected"] = None
    state["checkpoints_confirm_delete"] = False


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def compact(value):
    """Metadata without confusion matrices (hundreds of numbers nobody reads in a tree)."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if k != "confusion_matrix"}
    return value


def iou_chart(per_class_iou: dict, title: str) -> go.Figure:
    names = [name for name, iou in per_class_iou.items() if iou is not None]
    values = [per_class_iou[name] for name in names]
    figure = go.Figure(
        go.Bar(x=names, y=values, text=[f"{v:.2f}" for v in values], textposition="outside")
    )
    figure.update_layout(
        title=title, yaxis={"title": "IoU", "range": [0, 1.08]}, height=340,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )  # fmt: skip
    return figure


def level_table(checkpoint, metrics: dict) -> pd.DataFrame:
    """mIoU and parameters of a U-Net++ per pruning level, fast and accurate mode."""
    per_level = metrics.get("per_level") or {}
    model = checkpoint.model if checkpoint is not None else None
    table = []
    for level in range(1, 5):
        row = {"level": f"L{level}"}
        for mode in ("fast", "accurate"):
            found = (per_level.get(mode) or {}).get(str(level)) or {}
            row[f"mIoU {mode}"] = found.get("miou")
            if model is not None:
                row[f"params {mode} (M)"] = model.count_parameters(mode=mode, level=level) / 1e6
        table.append(row)
    return pd.DataFrame(table)


st.title("Checkpoints")
for kind, message in state["checkpoints_notices"]:
    (st.error if kind == "error" else st.success)(message)
state["checkpoints_notices"] = []

rows = common.available_checkpoints()
if not rows:
    st.info("No checkpoints yet: train one in a minute, or upload one below.")
    common.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
else:
    st.dataframe(
        pd.DataFrame(
            {
                "model": row["model"],
                "label set": row["label_set"],
                "dataset": row.get("dataset"),
                "input size": "×".join(str(s) for s in row["input_size"] or []),
                "mIoU": row["miou"],
                "created": (row["created"] or "")[:16].replace("T", " "),
                "bundled": row["bundled"],
                "path": row["path"],
            }
            for row in rows
        ),
        hide_index=True,
        column_config={"mIoU": st.column_config.NumberColumn(format="%.3f")},
        key="checkpoints_table",
    )

    by_path = {row["path"]: row for row in rows}
    if state["checkpoints_selected"] not in by_path:
        state["checkpoints_selected"] = rows[0]["path"]
    selected = st.selectbox(
        "Details of",
        list(by_path),
        format_func=lambda p: by_path[p]["label"],
        key="checkpoints_selected",
        on_change=on_select,
    )
    row = by_path[selected]
    path = Path(selected)
    try:
        meta = read_metadata(path)
    except CheckpointError as e:
        st.error(str(e))
        meta = {}
    best = (meta.get("metrics") or {}).get("best") or {}
    listed, listed_mode = common.stored_metrics(meta)

    info_col, chart_col = st.columns([2, 3])
    with info_col:
        config = meta.get("train_config") or {}
        size = " × ".join(str(s) for s in meta.get("input_size") or [])
        if path.is_file():
            st.markdown(
                f"**{row['label']}**\n\n"
                f"- model: `{meta.get('model')}` {meta.get('model_kwargs') or ''}\n"
                f"- label set: {row['label_set']} ({meta.get('num_classes')} classes)\n"
                f"- trained on: {config.get('data', 'n/a')}, epoch {meta.get('epoch', 'n/a')}, "
                f"step {meta.get('step', 'n/a')}\n"
                f"- input size: {size} (H × W)\n"
                f"- val mIoU {number(listed.get('miou'))}"
                + (f" ({listed_mode} mode, full depth)" if listed_mode else "")
                + f", pixel accuracy {number(listed.get('pixel_accuracy'))}\n"
                f"- created: {meta.get('created', 'n/a')}\n"
                f"- file: `{path}` ({path.stat().st_size / 1e6:.1f} MB)"
            )
        else:
            st.warning(f"{path.name} no longer exists.")
    with chart_col:
        if best.get("per_class_iou"):
            st.plotly_chart(
                iou_chart(best["per_class_iou"], "Validation IoU per class (best epoch)"),
                key="checkpoints_iou_chart",
            )
        else:
            st.caption("This checkpoint carries no per-class validation metrics.")

    if row["supports_pruning"]:
        st.subheader("Pruning levels")
        try:
            checkpoint = common.load_model(selected)[0]
        except CheckpointError as e:
            st.error(str(e))
            checkpoint = None
        st.dataframe(
            level_table(checkpoint, best),
            hide_index=True,
            column_config={
                name: st.column_config.NumberColumn(format="%.3f")
                for name in ("mIoU fast", "mIoU accurate", "params fast (M)", "params accurate (M)")
            },
            key="checkpoints_levels",
        )

    with st.expander("Metadata"):
        st.json(compact({k: v for k, v in meta.items() if k not in HIDDEN_METADATA}), expanded=1)

    st.subheader("Manage")
    download_col, rename_col, delete_col = st.columns(3)
    with download_col:
        st.download_button(
            f"Download {path.name}",
            data=lambda: path.read_bytes(),
            file_name=path.name,
            mime="application/octet-stream",
            on_click="ignore",
            icon=":material/download:",
            key="checkpoints_download",
            disabled=not path.is_file(),
        )
    if row["bundled"]:
        rename_col.caption(
            "Bundled checkpoints ship with the repository: they cannot be renamed or deleted here."
        )
    else:
        with rename_col:
            st.text_input("New name", key="checkpoints_new_name", placeholder=path.stem)
            st.button(
                "Rename",
                on_click=on_rename,
                args=(selected,),
                disabled=not state["checkpoints_new_name"].strip(),
                key="checkpoints_rename",
            )
        with delete_col:
            st.checkbox(f"Yes, delete {path.name} for good", key="checkpoints_confirm_delete")
            st.button(
                "Delete",
                on_click=on_delete,
                args=(selected,),
                type="primary",
                disabled=not state["checkpoints_confirm_delete"],
                key="checkpoints_delete",
            )

st.subheader("Upload a checkpoint")
st.file_uploader(
    "A segdemo checkpoint: .safetensors, or .pt/.pth with plain tensors (converted to .safetensors)",
    type=["safetensors", "pt", "pth"],
    key=f"checkpoints_upload_{state['checkpoints_upload_nonce']}",
    on_change=on_upload,
    max_upload_size=500,
)
st.caption(
    "Each upload is checked before it is kept: files that are truncated, lack segdemo "
    "metadata, or hold pickled Python objects that would run code are refused."
)
