"""Checkpoints: what is there, what each one knows, and upload / download / rename / delete.

Bundled checkpoints ship with the repository and are read-only here; checkpoints of runs
and uploads (under ``runs/``) can be renamed and deleted (deleting asks for confirmation).
A file that fails a check is listed as broken with its reason and can be deleted too.
Everything a file says about itself (names, metadata, errors quoting them) is shown as
text, never as Markdown.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from segdemo.checkpoints import CheckpointError, read_metadata
from segdemo.models import get_model_config, pruning_levels
from segdemo_app import checkpoint_store, common
from segdemo_app.common import literal_markdown

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


def level_table(checkpoint, metrics: dict, levels: int) -> pd.DataFrame:
    """mIoU and parameters of a U-Net++ per pruning level, fast and accurate mode."""
    per_level = metrics.get("per_level") or {}
    model = checkpoint.model if checkpoint is not None else None
    table = []
    for level in range(1, levels + 1):
        row = {"level": f"L{level}"}
        for mode in ("fast", "accurate"):
            found = (per_level.get(mode) or {}).get(str(level)) or {}
            row[f"mIoU {mode}"] = found.get("miou")
            if model is not None:
                row[f"params {mode} (M)"] = model.count_parameters(mode=mode, level=level) / 1e6
        table.append(row)
    return pd.DataFrame(table)


def details(meta: dict, path: Path) -> str:
    """The checkpoint in a few lines of plain text (every value comes from the file)."""
    listed, listed_mode = common.stored_metrics(meta)
    kwargs = ", ".join(f"{k}={v}" for k, v in (meta.get("model_kwargs") or {}).items())
    trained = [common.dataset_description(meta) or "n/a"]
    trained += [f"{key} {meta[key]}" for key in ("epoch", "step") if meta.get(key) is not None]
    mode = f" ({listed_mode} mode, full depth)" if listed_mode else ""
    lines = [
        f"model: {meta['model']}" + (f" ({kwargs})" if kwargs else ""),
        f"label set: {meta['label_set']['name']} ({meta['num_classes']} classes)",
        f"trained on: {', '.join(trained)}",
        f"input size: {' × '.join(str(s) for s in meta['input_size'])} (H × W)",
        f"val mIoU {number(listed.get('miou'))}{mode}, "
        f"pixel accuracy {number(listed.get('pixel_accuracy'))}",
        f"created: {meta.get('created') or 'n/a'}",
        f"file: {path} ({path.stat().st_size / 1e6:.1f} MB)",
    ]
    return "\n".join(lines)


def show_checkpoint(row: dict, path: Path) -> None:
    try:
        meta = read_metadata(path)  # fresh: the listing may be cached
    except CheckpointError as e:
        st.error(literal_markdown(str(e)))
        return
    best = (meta.get("metrics") or {}).get("best") or {}
    info_col, chart_col = st.columns([2, 3])
    with info_col:
        st.markdown(f"**{literal_markdown(row['label'])}**")
        st.text(details(meta, path))
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
            checkpoint = common.load_model(path)[0]
        except CheckpointError as e:
            st.error(literal_markdown(str(e)))
            checkpoint = None
        levels = (
            pruning_levels(checkpoint.model)
            if checkpoint is not None
            else get_model_config(meta["model"]).num_levels
        )
        st.dataframe(
            level_table(checkpoint, best, levels),
            hide_index=True,
            column_config={
                name: st.column_config.NumberColumn(format="%.3f")
                for name in ("mIoU fast", "mIoU accurate", "params fast (M)", "params accurate (M)")
            },
            key="checkpoints_levels",
        )

    with st.expander("Metadata"):
        st.json(compact({k: v for k, v in meta.items() if k not in HIDDEN_METADATA}), expanded=1)


def manage(row: dict, path: Path) -> None:
    st.subheader("Manage")
    download_col, rename_col, delete_col = st.columns(3)
    with download_col:
        st.download_button(
            f"Download {literal_markdown(path.name)}",
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
        return
    with rename_col:
        st.text_input("New name", key="checkpoints_new_name", placeholder=path.stem)
        st.button(
            "Rename",
            on_click=on_rename,
            args=(str(path),),
            disabled=not state["checkpoints_new_name"].strip(),
            key="checkpoints_rename",
        )
    with delete_col:
        st.checkbox(
            f"Yes, delete {literal_markdown(path.name)} for good", key="checkpoints_confirm_delete"
        )
        st.button(
            "Delete",
            on_click=on_delete,
            args=(str(path),),
            type="primary",
            disabled=not state["checkpoints_confirm_delete"],
            key="checkpoints_delete",
        )


st.title("Checkpoints")
for kind, message in state["checkpoints_notices"]:
    (st.error if kind == "error" else st.success)(literal_markdown(message))
state["checkpoints_notices"] = []

rows = common.available_checkpoints()
broken = common.broken_checkpoints()
if not rows and not broken:
    st.info("No checkpoints yet: train one in a minute, or upload one below.")
    common.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
if rows:
    st.dataframe(
        pd.DataFrame(
            {
                "name": row["name"],
                "model": row["model"],
                "label set": row["label_set"],
                "dataset": row["dataset"],
                "input size": "×".join(str(s) for s in row["input_size"]),
                "mIoU": row["miou"],
                "measured on": row["miou_on"],
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
if broken:
    st.warning(
        f"{len(broken)} file{'s' if len(broken) > 1 else ''} in the checkpoint folders "
        f"{'fail' if len(broken) > 1 else 'fails'} a check: the other pages do not offer "
        f"{'them' if len(broken) > 1 else 'it'}. Select one below to see why, or to delete it.",
        icon=":material/warning:",
    )
    st.dataframe(
        pd.DataFrame({"file": b["label"], "problem": b["error"]} for b in broken),
        hide_index=True,
        key="checkpoints_broken_table",
    )

entries = {row["path"]: row for row in rows} | {b["path"]: b for b in broken}
if entries:
    if state["checkpoints_selected"] not in entries:
        state["checkpoints_selected"] = next(iter(entries))
    selected = st.selectbox(
        "Details of",
        list(entries),
        format_func=lambda p: entries[p]["label"],
        key="checkpoints_selected",
        on_change=on_select,
    )
    row = entries[selected]
    path = Path(selected)
    if not path.is_file():
        st.warning(f"{literal_markdown(path.name)} no longer exists.")
    elif "error" in row:
        st.error(literal_markdown(row["error"]), icon=":material/broken_image:")
    else:
        show_checkpoint(row, path)
    manage(row, path)

st.subheader("Upload a checkpoint")
st.file_uploader(
    "A segdemo checkpoint: .safetensors, or .pt/.pth with plain tensors (converted to "
    f".safetensors), up to {checkpoint_store.MAX_UPLOAD_MB} MB",
    type=["safetensors", "pt", "pth"],
    key=f"checkpoints_upload_{state['checkpoints_upload_nonce']}",
    on_change=on_upload,
    max_upload_size=checkpoint_store.MAX_UPLOAD_MB,
)
st.caption(
    "Each upload is checked completely before it is kept: files that are truncated, lack "
    "segdemo metadata or break its rules (names, sizes, numeric ranges), describe a model "
    "larger than segdemo loads, carry weights that do not fit, or hold pickled Python "
    "objects that would run code are refused, and nothing is written."
)
