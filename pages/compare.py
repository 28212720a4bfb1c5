"""Compare: several checkpoints on one evaluation set, metrics and masks side by side.

For U-Net++ checkpoints the pruning trade-off of the paper: mIoU against measured latency
for levels L1..L4, in fast (one head) and accurate (mean of heads) modes.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from segdemo import charts
from segdemo.checkpoints import CheckpointError
from segdemo.viz import colorize
from segdemo_app import common
from segdemo_app import compare as ui
from segdemo_app.dataset_picker import dataset_picker

common.init_state()
state = st.session_state

st.title("Compare models")
st.caption(
    "Evaluate checkpoints on the same images: mIoU, per-class IoU, confusion, masks, and "
    "for U-Net++ the accuracy/latency trade-off of its pruning levels."
)

rows = {row["label"]: row for row in common.available_checkpoints()}
if not rows:
    st.info("No checkpoints yet: train one in a minute on the Train page.")
    st.stop()

labels = st.multiselect(
    "Checkpoints",
    list(rows),
    default=list(rows)[:2],
    key="compare_checkpoints",
    help="Runs started on the Train page appear here when they write a checkpoint.",
)
choice = dataset_picker("compare")
limit = st.number_input(
    "Image limit (0 = the whole split)",
    min_value=0,
    value=32,
    step=8,
    key="compare_limit",
    help="Evaluate on the first N images of the split; metrics count every labelled pixel.",
)
limit = int(limit) or None

keys: dict[str, tuple] = {}
if labels and choice is not None:
    try:
        keys = {label: ui.evaluation_key(rows[label], choice.data, choice.fmt, choice.split, limit)
                for label in labels}  # fmt: skip
    except ValueError as e:
        st.error(str(e))

results: dict = state["compare_results"]
missing = [label for label, key in keys.items() if key not in results]
if keys:
    evaluate = st.button(
        f"Evaluate {len(missing)} checkpoint{'s' * (len(missing) != 1)}"
        if missing
        else "All selected checkpoints are evaluated",
        type="primary",
        disabled=not missing,
        key="compare_evaluate",
    )
    if evaluate:
        bar = st.progress(0.0, text="Evaluating…")
        for k, label in enumerate(missing):

            def progress(done: int, total: int, k: int = k, label: str = label) -> None:
                bar.progress(
                    (k + done / max(total, 1)) / len(missing),
                    text=f"{label}: {done}/{total} images",
                )

            try:
                results[keys[label]] = ui.evaluate_cached(keys[label], progress)
            except (CheckpointError, ValueError) as e:
                st.error(f"{label}: {e}")
        bar.empty()
        if all(keys[label] in results for label in missing):
            st.rerun()  # redraw the button as done; the results come from session state

done = {label: results[key] for label, key in keys.items() if key in results}
if not done:
    st.stop()

st.subheader(f"Results on {choice.description}")
table = pd.DataFrame(
    [
        {
            "checkpoint": label,
            "model": rows[label]["model"],
            "mIoU": r["miou"],
            "pixel accuracy": r["pixel_accuracy"],
            "images": r["images"],
            "eval time (s)": r["eval_time_s"],
        }
        for label, r in done.items()
    ]
)
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "mIoU": st.column_config.NumberColumn(format="%.3f"),
        "pixel accuracy": st.column_config.NumberColumn(format="%.3f"),
        "eval time (s)": st.column_config.NumberColumn(format="%.1f"),
    },
)

st.plotly_chart(
    charts.per_class_iou_bars({label: r["per_class_iou"] for label, r in done.items()}),
    key="compare_iou_chart",
)

shown = st.selectbox("Confusion matrix of", list(done), key="compare_confusion_model")
st.plotly_chart(
    charts.confusion_heatmap(
        done[shown]["confusion_matrix"], list(done[shown]["per_class_iou"]), title=shown
    ),
    key="compare_confusion_chart",
)

pruned = [label for label in done if rows[label]["supports_pruning"] and "per_level" in done[label]]
if pruned:
    st.subheader("U-Net++ pruning trade-off")
    st.caption(
        "mIoU on this set against the median latency of one image at the checkpoint's input "
        "size on this machine. Marker area: parameters used at that level. Fast = head k "
        "alone; accurate = mean of heads 1..k."
    )
    points = []
    with st.spinner("Timing levels L1..L4…"):
        for label in pruned:
            try:
                costs = ui.level_costs(rows[label]["path"])
            except CheckpointError as e:
                st.error(f"{label}: {e}")
                continue
            points += ui.tradeoff_points(label, done[label], costs)
    if points:
        st.plotly_chart(charts.pruning_tradeoff(points), key="compare_pruning_chart")
        with st.expander("Numbers"):
            st.dataframe(
                pd.DataFrame(points)[["model", "mode", "level", "miou", "latency_ms", "params"]],
                hide_index=True,
            )

st.subheader("Masks side by side")
first = next(iter(done))
try:
    dataset = ui.open_eval_dataset(choice.data, choice.fmt, choice.split, rows[first]["label_set"])
except ValueError as e:
    st.error(str(e))
    st.stop()
count = min(len(dataset), limit or len(dataset))
indices = st.multiselect(
    "Images", list(range(count)), default=[0] if count else [], max_selections=4,
    key="compare_images",
)  # fmt: skip
for index in indices:
    image, truth = dataset.read_raw(index)
    columns = st.columns(2 + len(done))
    columns[0].image(image, caption=f"image {index}")
    columns[1].image(colorize(truth, dataset.label_set), caption="ground truth")
    for column, label in zip(columns[2:], done, strict=True):
        try:
            ckpt, _, _ = common.load_model(rows[label]["path"])
            mask = ui.predicted_mask(
                rows[label]["path"], choice.data, choice.fmt, choice.split, index
            )
        except (CheckpointError, ValueError) as e:
            column.error(str(e))
            continue
        column.image(colorize(mask, ckpt.label_set), caption=label)
