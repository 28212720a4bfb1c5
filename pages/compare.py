"""Compare: several checkpoints on the same images, with intervals, paired differences and
error maps.

Every number carries its 95% bootstrap interval over the images; each model is compared
with a reference on the same images (paired bootstrap) and the difference is said in one
sentence. A U-Net++ at each mode and level is a model of its own. The per-image table,
worst image first, opens an image with each model's error map. For U-Net++ checkpoints:
the pruning trade-off of the paper, mIoU against measured latency for every level.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from segdemo import charts
from segdemo.checkpoints import CheckpointError
from segdemo.viz import COMPARISON_LEGEND, ERROR_MAP_LEGEND, colorize, comparison_map, error_map
from segdemo_app import common, study_view
from segdemo_app import compare as ui
from segdemo_app.dataset_picker import SYNTHETIC_NOTE, candidate_folders, dataset_picker

common.init_state()
state = st.session_state

st.title("Compare models")
st.caption(
    "Evaluate checkpoints on the same images: mIoU with 95% intervals, paired differences, "
    "per-class IoU, confusion, error maps image by image, and for U-Net++ the "
    "accuracy/latency trade-off of its pruning levels."
)

view = st.segmented_control(
    "View", ["Checkpoints", "Study"], default="Checkpoints", key="compare_view",
    help="Checkpoints: evaluate models here. Study: a multi-seed U-Net vs U-Net++ study.",
)  # fmt: skip
if view == "Study":
    study_view.render()
    st.stop()

# Keyed by each checkpoint's display name (its file stem, unique): every table, chart and
# sentence below names a model by it.
rows = {row["name"]: row for row in common.available_checkpoints()}
if not rows:
    st.info("No checkpoints yet: train one in a minute on the Train page.")
    st.stop()

# The Segment page's choice: the bundled models of the richest label set, best first.
by_path = {row["path"]: name for name, row in rows.items()}
labels = st.multiselect(
    "Checkpoints",
    list(rows),
    default=[by_path[path] for path in common.default_checkpoints(list(rows.values()))],
    format_func=lambda name: rows[name]["label"],
    key="compare_checkpoints",
    help="Runs started on the Train page appear here when they write a checkpoint.",
)
# A real dataset when one is on this machine (the one the checkpoints were trained on):
# numbers on the synthetic scenes say little.
trained_on = sorted(rows.values(), key=lambda row: not row["bundled"])
choice = dataset_picker(
    "compare", candidates=candidate_folders([row.get("data_root") for row in trained_on])
)
limit = st.number_input(
    "Image limit (0 = the whole split)",
    min_value=0,
    value=32,
    step=8,
    key="compare_limit",
    help="Evaluate on the first N images of the split; metrics count every labelled pixel. "
    "Fewer images give wider intervals.",
)
limit = int(limit) or None

keys: dict[str, tuple] = {}
if labels and choice is not None:
    try:
        keys = {label: ui.evaluation_key(rows[label], choice.data, choice.fmt, choice.split, limit)
                for label in labels}  # fmt: skip
    except ValueError as e:
        st.error(common.literal_markdown(str(e)))

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
                st.error(common.literal_markdown(f"{label}: {e}"))
        bar.empty()
        if all(keys[label] in results for label in missing):
            st.rerun()  # redraw the button as done; the results come from session state

done = {label: results[key] for label, key in keys.items() if key in results}
if not done:
    st.stop()

st.subheader(f"Results on {choice.description}")
if choice.is_synthetic:
    st.caption(SYNTHETIC_NOTE)
options, defaults = ui.model_options(done, rows)
chosen = st.multiselect(
    "Models",
    list(options),
    default=defaults,
    key="compare_models",
    help="A U-Net++ at each mode (fast: the deepest head alone; accurate: the mean of the "
    "heads, weighted where the checkpoint carries fitted weights) and pruning level is a "
    "model of its own. One evaluation scores them all.",
)
if not chosen:
    st.info("Choose at least one model.")
    st.stop()
reference = st.selectbox(
    "Reference model",
    chosen,
    key="compare_reference",
    help="Every other model is compared with this one on the same images.",
)
try:
    result = ui.comparison(chosen, options, keys, done, reference)
except ValueError as e:
    st.error(common.literal_markdown(str(e)))
    st.stop()
models = {m["name"]: m for m in result["models"]}
colors = {name: charts.model_color(k) for k, name in enumerate(models)}


def interval(ci, digits: int = 3) -> str:
    return "–" if not ci else f"{ci[0]:.{digits}f} – {ci[1]:.{digits}f}"


st.dataframe(
    pd.DataFrame(
        [
            {
                "model": name,
                "architecture": done[options[name][0]].info.get("model"),
                "mIoU": m["miou"],
                "mIoU 95% CI": interval(m["miou_ci95"]),
                "pixel accuracy": m["pixel_accuracy"],
                "pixel accuracy 95% CI": interval(m["pixel_accuracy_ci95"]),
                "classes counted": len(m["counted_classes"]),
                "images": result["images"],
                "eval time (s)": done[options[name][0]].eval_time_s,
            }
            for name, m in models.items()
        ]
    ),
    hide_index=True,
    column_config={
        "mIoU": st.column_config.NumberColumn(format="%.3f"),
        "pixel accuracy": st.column_config.NumberColumn(format="%.3f"),
        "eval time (s)": st.column_config.NumberColumn(format="%.1f"),
    },
)
st.caption(
    f"mIoU by the Cityscapes definition: the mean over classes present in the ground truth "
    f"or predicted. 95% intervals: {result['bootstrap']['resamples']} bootstrap resamples "
    f"of the {result['images']} images."
)
st.plotly_chart(charts.miou_intervals(result["models"]), key="compare_miou_chart")

if result["comparisons"]:
    st.subheader(f"Against {reference}, on the same images")
    st.markdown("\n".join(f"- {ui.short_verdict(c)}" for c in result["comparisons"]))
    with st.expander("Details: intervals, and how often the order flips"):
        st.markdown(
            "\n".join(
                f"- {c['sentence']} (the order flips in {100 * c['miou_diff_sign_flip']:.0f}% "
                "of resamples)"
                for c in result["comparisons"]
            )
        )
    st.plotly_chart(
        charts.paired_differences(result["comparisons"], colors=colors), key="compare_diff_chart"
    )

st.plotly_chart(
    charts.per_class_iou_bars(
        {name: m["per_class_iou"] for name, m in models.items()},
        intervals={name: m["per_class_iou_ci95"] for name, m in models.items()},
        title="IoU per class (95% intervals)",
    ),
    key="compare_iou_chart",
)

shown = st.selectbox("Confusion matrix of", chosen, key="compare_confusion_model")
label, setting = options[shown]
st.plotly_chart(
    charts.confusion_heatmap(
        done[label].per_image(setting).sum(0), result["class_names"], title=shown
    ),
    key="compare_confusion_chart",
)

pruned = [
    label for label in done if rows[label]["supports_pruning"] and len(done[label].settings) > 1
]
if pruned:
    st.subheader("U-Net++ pruning trade-off")
    st.caption(
        "mIoU on this set (bars: 95% intervals) against the median of warm runs of one "
        "image at the checkpoint's input size on this machine (at least three per level, "
        "timed in turns; more while they disagree; measured again after five minutes). "
        "Marker area: parameters used at that level. Fast = head k alone; accurate = mean "
        "of heads 1..k."
    )
    points = []
    with st.spinner("Timing every pruning level…"):
        for label in pruned:
            try:
                costs = ui.level_costs(rows[label]["path"])
            except CheckpointError as e:
                st.error(common.literal_markdown(f"{label}: {e}"))
                continue
            metrics = ui.level_metrics(keys[label], done[label])
            points += ui.tradeoff_points(label, metrics, costs)
    if points:
        st.plotly_chart(charts.pruning_tradeoff(points), key="compare_pruning_chart")
        with st.expander("Numbers"):
            st.dataframe(
                pd.DataFrame(points)[
                    [
                        "model",
                        "mode",
                        "level",
                        "miou",
                        "miou_ci95",
                        "latency_ms",
                        "latency_spread_ms",
                        "latency_runs",
                        "params",
                    ]
                ],
                hide_index=True,
            )

st.subheader("Image by image")
others = [name for name in chosen if name != reference]
left, right = st.columns(2)
order = left.radio(
    "Order",
    ["worst", "disagreement"],
    format_func={"worst": f"worst first ({reference})", "disagreement": "largest disagreement"}.get,
    horizontal=True,
    key="compare_sort",
    disabled=not others,
)
other = right.selectbox(
    "Against the reference", others, key="compare_other", disabled=not others
) if others else None  # fmt: skip
table = ui.image_table(result, reference, other, order if others else "worst")
frame = pd.DataFrame(table)
selection = st.dataframe(
    frame,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="compare_image_table",
    column_config={
        **{name: st.column_config.NumberColumn(f"mIoU · {name}", format="%.3f") for name in models},
        **(
            {"difference": st.column_config.NumberColumn(f"{other} − {reference}", format="%+.3f")}
            if other
            else {}
        ),
    },
)
st.caption("Select a row to open that image; the first row is open until then.")
picked = selection.selection.rows if selection is not None else []
opened = table[picked[0] if picked else 0] if table else None
if opened is None:
    st.stop()

index = int(opened["index"])
first = next(iter(done))
try:
    dataset = ui.open_eval_dataset(choice.data, choice.fmt, choice.split, rows[first]["label_set"])
    image, truth = dataset.read_raw(index)
except ValueError as e:
    st.error(common.literal_markdown(str(e)))
    st.stop()
label_set = dataset.label_set
masks = {}
for name in chosen:
    label, setting = options[name]
    try:
        masks[name] = ui.predicted_mask(
            rows[label]["path"], choice.data, choice.fmt, choice.split, index, setting
        )
    except (CheckpointError, ValueError) as e:
        st.error(common.literal_markdown(f"{name}: {e}"))

top = st.columns(3 if other in masks and reference in masks else 2)
top[0].image(image, caption=f"image {index}: {opened['file']}", width="stretch")
top[1].image(colorize(truth, label_set), caption="ground truth", width="stretch")
if len(top) == 3:
    top[2].image(
        comparison_map(masks[reference], masks[other], truth, label_set),
        caption=f"A = {reference}, B = {other}",
        width="stretch",
    )
    legend = {
        name.replace(" A ", f" {reference} ").replace(" B ", f" {other} "): color
        for name, color in COMPARISON_LEGEND.items()
    }
    top[2].markdown(ui.legend_html(legend), unsafe_allow_html=True)

st.markdown(
    ui.legend_html(ERROR_MAP_LEGEND) + " Wrong pixels take the colour of the class predicted.",
    unsafe_allow_html=True,
)
columns = st.columns(len(masks)) if masks else []
for column, (name, mask) in zip(columns, masks.items(), strict=True):
    score = opened.get(name)
    on_image = "no labelled pixels" if score is None else f"mIoU {score:.3f} on this image"
    column.image(colorize(mask, label_set), caption=f"{name}: prediction", width="stretch")
    column.image(
        error_map(mask, truth, label_set), caption=f"{name}: errors, {on_image}", width="stretch"
    )
    wrong = ui.wrong_classes(mask, truth, label_set)
    if wrong:
        column.markdown("Wrong, called: " + ui.legend_html(wrong), unsafe_allow_html=True)
